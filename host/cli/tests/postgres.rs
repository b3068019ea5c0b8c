//! `lockfile exec`, `inspect` and `run` with `--lock-db`, against the real
//! PostgreSQL server of `LOCKFILE_TEST_DB` (`eval "$(scripts/postgres start)"`).
//! The server restart is in `postgres_restart.rs`, a binary of its own.

#[allow(dead_code)]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{DEADLINE, Reaper, is_running, output, read_pid_file, stderr, stdout, wait_until};
use lockfile_tests::SINGLETON_JOB_COMPONENT;

const START: &str = "run `eval \"$(scripts/postgres start)\"` first: it starts a throwaway PostgreSQL \
                     under target/postgres and prints the variables the tests need";

fn db_url() -> String {
    std::env::var("LOCKFILE_TEST_DB")
        .unwrap_or_else(|_| panic!("LOCKFILE_TEST_DB is not set: {START}"))
}

/// A namespace no other test (or earlier run) uses.
fn namespace(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cli-{test}-{}-{nanos}", std::process::id())
}

/// `lockfile SUBCOMMAND --lock-db <test db> --lock-namespace NS`, with no
/// `LOCKFILE_DB` of the caller's.
fn lockfile_db(subcommand: &str, ns: &str) -> Command {
    let mut command = common::lockfile();
    command
        .env_remove("LOCKFILE_DB")
        .arg(subcommand)
        .arg("--lock-db")
        .arg(db_url())
        .args(["--lock-namespace", ns]);
    command
}

fn exec(ns: &str, options: &[&str], name: &str, command: &[&str]) -> Command {
    let mut exec = lockfile_db("exec", ns);
    exec.args(options).arg(name).arg("--").args(command);
    exec
}

fn inspect(ns: &str, name: &str) -> String {
    let out = output(lockfile_db("inspect", ns).arg(name));
    assert!(out.status.success(), "inspect: {}", stderr(&out));
    stdout(&out)
}

fn wait_until_locked(ns: &str, name: &str) {
    wait_until(&format!("{name} locked on the database"), || {
        inspect(ns, name).contains("locked: yes")
    });
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

#[test]
fn exec_holders_in_two_processes_exclude_each_other_with_the_record() {
    let ns = namespace("exclude");
    let mut reaper = Reaper::default();
    let holder = reaper.spawn(&mut exec(
        &ns,
        &["--content-template", "first {pid} on {hostname}"],
        "jobs/job.lock",
        &["sleep", "30"],
    ));
    wait_until_locked(&ns, "jobs/job.lock");

    let dir = tempdir();
    let marker = dir.path().join("ran");
    let second = output(exec(
        &ns,
        &[],
        "jobs/./job.lock",
        &["touch", marker.to_str().unwrap()],
    ));
    assert_eq!(second.status.code(), Some(75), "{}", stderr(&second));
    assert_eq!(
        stderr(&second),
        format!(
            "Couldn't lock 'jobs/./job.lock': held by first {holder} on {}\n",
            hostname::get().unwrap().to_string_lossy()
        )
    );
    assert!(!marker.exists(), "the second command ran");

    // A wait that runs out is the same status, and never takes it late.
    let start = Instant::now();
    let waited = output(exec(&ns, &["--wait", "300ms"], "jobs/job.lock", &["true"]));
    assert_eq!(waited.status.code(), Some(75), "{}", stderr(&waited));
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(
        stderr(&waited).starts_with("Couldn't lock 'jobs/job.lock' within 300ms: held by first"),
        "{}",
        stderr(&waited)
    );

    // SIGTERM is passed on to the command; the lock is free once it exits.
    common::signal(holder, libc::SIGTERM);
    let first = reaper.finish(holder, DEADLINE);
    assert_eq!(first.status.code(), Some(128 + libc::SIGTERM), "{first:?}");
    let third = output(exec(&ns, &[], "jobs/job.lock", &["true"]));
    assert!(third.status.success(), "{}", stderr(&third));
}

#[test]
fn the_command_status_passes_through_and_a_wait_takes_the_lock_on_release() {
    let ns = namespace("status");
    let out = output(exec(&ns, &[], "s.lock", &["sh", "-c", "exit 3"]));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let mut reaper = Reaper::default();
    let holder = reaper.spawn(&mut exec(&ns, &[], "s.lock", &["sleep", "0.5"]));
    wait_until_locked(&ns, "s.lock");
    let start = Instant::now();
    let waiter = output(exec(&ns, &["--wait", "10s"], "s.lock", &["echo", "after"]));
    assert!(waiter.status.success(), "{}", stderr(&waiter));
    assert_eq!(stdout(&waiter), "after\n");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(reaper.finish(holder, DEADLINE).status.success());
}

/// COMMAND finds the lock's fencing token in LOCKFILE_FENCING_TOKEN: the
/// token `inspect` shows, larger at each new holder. A lock file has none,
/// and sets none.
#[test]
fn command_gets_the_fencing_token_in_its_environment() {
    let ns = namespace("token-env");
    common::growing_tokens_of_commands(&db_url(), &ns, "job.lock", 3);

    let dir = tempdir();
    let out = output(
        common::lockfile()
            .env_remove("LOCKFILE_DB")
            .env_remove("LOCKFILE_FENCING_TOKEN")
            .arg("exec")
            .arg(dir.path().join("job.lock"))
            .arg("--")
            .args(common::PRINT_TOKEN),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "unset\n");
}

/// With a database lock, what COMMAND started never outlives the lock:
/// what it leaves running ends before the lock is released, daemons
/// included (this process is their reaper).
#[test]
fn exec_ends_what_the_command_left_running_before_releasing() {
    let ns = namespace("leftovers");
    let dir = tempdir();
    let command = common::leaving_children(dir.path(), "exit 3");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let out = output(exec(&ns, &[], "job.lock", &command));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    for name in ["bg.pid", "daemon.pid"] {
        let pid = read_pid_file(&dir.path().join(name));
        assert!(!is_running(pid), "{name}: {pid} outlived the lock");
    }
    assert!(inspect(&ns, "job.lock").contains("locked: no"));
}

/// A lost lock stops COMMAND and everything it started: the server ends the
/// holder's session (its backend process gets SIGTERM, as
/// pg_terminate_backend sends), exec exits 76, and no descendant is alive.
#[test]
fn a_lost_lock_ends_the_command_and_all_it_started() {
    let ns = namespace("lost-tree");
    let dir = tempdir();
    let command = common::leaving_children(dir.path(), "wait");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut reaper = Reaper::default();
    let holder = reaper.spawn(&mut exec(&ns, &[], "job.lock", &command));
    wait_until("the command's children", || {
        dir.path().join("ready").exists()
    });
    common::signal(holder_backend(&ns, "job.lock"), libc::SIGTERM);
    let out = reaper.finish(holder, DEADLINE);
    assert_eq!(out.status.code(), Some(76), "{out:?}");
    for name in ["bg.pid", "daemon.pid"] {
        let pid = read_pid_file(&dir.path().join(name));
        assert!(!is_running(pid), "{name}: {pid} outlived the lost lock");
    }
}

/// The server backend of the session holding `name`, from `inspect`.
fn holder_backend(ns: &str, name: &str) -> libc::pid_t {
    let inspected = inspect(ns, name);
    inspected
        .split("(backend pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no backend pid: {inspected}"))
}

/// A plugin whose own database lock is lost is stopped, exit 76, whether it
/// sleeps (in a host call) or computes without calling the host: it never
/// runs on beside the lock's next holder.
#[test]
fn a_plugin_whose_lock_is_lost_is_stopped_with_76() {
    for (what, steps) in [
        ("sleeping", &["sleep", "60000"][..]),
        ("computing", &["spin"]),
    ] {
        let ns = namespace("plugin-lost");
        let mut reaper = Reaper::default();
        let plugin = reaper.spawn(
            lockfile_db("run", &ns)
                .arg("--cache-dir")
                .arg(common::cache_dir())
                .arg(lockfile_tests::LOCKCTL_COMPONENT)
                .args(["lock", "p.lock", "{pid}", "0", "held"])
                .args(steps),
        );
        wait_until_locked(&ns, "p.lock");
        let start = Instant::now();
        common::signal(holder_backend(&ns, "p.lock"), libc::SIGTERM);
        let out = reaper.finish(plugin, DEADLINE);
        eprintln!(
            "{what}: stopped {:?} after the session ended",
            start.elapsed()
        );
        assert_eq!(out.status.code(), Some(76), "{what}: {out:?}");
        assert_eq!(
            out.stdout,
            format!("locked {plugin}\nheld true\n"),
            "{what}"
        );
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: {out:?}");
        assert!(
            lines[0].starts_with("lockfile: lost the lock on 'p.lock' while the plugin ran: ")
                && lines[0].ends_with("; the plugin was stopped"),
            "{what}: {out:?}"
        );
    }
}

/// An exec holder killed with SIGKILL: its advisory lock is freed at once,
/// but its lease runs on (its COMMAND may ignore the SIGTERM it gets), so
/// the next exec, even a one-try one, starts only once the lease has ended.
#[test]
fn after_an_exec_holders_sigkill_the_next_waits_out_its_lease() {
    let ns = namespace("sigkill");
    let dir = tempdir();
    let pid_file = dir.path().join("pid");
    let mut reaper = Reaper::default();
    let script = format!("echo $$ > '{}'; exec sleep 30", pid_file.display());
    let holder = reaper.spawn(&mut exec(
        &ns,
        &["--lease", "3s"],
        "k.lock",
        &["sh", "-c", &script],
    ));
    let command = read_pid_file(&pid_file);
    reaper.adopt(command);
    wait_until_locked(&ns, "k.lock");

    common::signal(holder, libc::SIGKILL);
    let _ = reaper.finish(holder, DEADLINE);
    wait_until("k.lock's session ended", || {
        inspect(&ns, "k.lock").contains("locked: no")
    });
    let found = inspect(&ns, "k.lock");
    let left = found
        .lines()
        .find_map(|line| line.strip_prefix("lease: "))
        .and_then(|rest| rest.strip_suffix(" left"))
        .and_then(|left| humantime::parse_duration(left).ok())
        .unwrap_or_else(|| panic!("no lease left after a SIGKILL: {found}"));
    let start = Instant::now();
    let out = output(exec(&ns, &["--lease", "3s"], "k.lock", &["true"]));
    let took = start.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("ran {took:?} after SIGKILL, the lease having {left:?} left");
    assert!(
        took + Duration::from_millis(50) >= left,
        "{took:?} < {left:?}"
    );
    // The command does not go on without the lock (Linux: PR_SET_PDEATHSIG).
    if cfg!(target_os = "linux") {
        wait_until("the command to end with its lockfile", || {
            !is_running(command)
        });
    }
    // Released cleanly: no lease left to wait out.
    assert!(!inspect(&ns, "k.lock").contains("lease:"));
}

/// A grace and a lease that do not fit together are refused before anything
/// is connected: one line naming both, exit 64.
#[test]
fn a_grace_that_does_not_fit_in_the_lease_is_refused() {
    let ns = namespace("lease-settings");
    let out = output(exec(&ns, &["--grace", "10s"], "s.lock", &["true"]));
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let text = stderr(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with("lockfile: --lease 15s with --grace 10s: a lease of 15s cannot hold "),
        "{text}"
    );
    assert!(inspect(&ns, "s.lock").contains("locked: no"));
}

#[test]
fn eight_processes_times_25_increments_give_200() {
    common::eight_times_25_increments(&db_url(), &namespace("counter"));
}

#[test]
fn bad_urls_exit_64_and_unreachable_databases_74_in_one_line_without_running() {
    let url = db_url();
    let (base, dbname) = url.rsplit_once('/').unwrap();
    let (credentials, host) = base.split_once("://").unwrap().1.split_once('@').unwrap();
    let user = credentials.split_once(':').unwrap().0;
    // A port nobody listens on: bound, then freed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    common::refused(
        "mysql://u:s3cret@localhost/db",
        64,
        "invalid lock database URL",
    );
    common::refused(
        "host=localhost password=s3cret",
        64,
        "invalid lock database URL",
    );
    common::refused(
        "postgres://u:s3cret@localhost:notaport/db",
        64,
        "invalid lock database URL",
    );
    common::refused(
        &format!("postgres://u:s3cret@127.0.0.1:{closed}/db"),
        74,
        "Connection refused",
    );
    common::refused(
        &format!("postgres://{user}:s3cret@{host}/{dbname}"),
        74,
        "password authentication failed",
    );
    common::refused(
        &format!("{base}/no_such_database_here"),
        74,
        "does not exist",
    );
}

/// TLS with the server's certificate checked (`sslmode=verify-full`, the
/// name `localhost` the test CA's certificate is for): the command runs;
/// against a root that signed nothing, one line, 74, and it does not.
#[test]
fn exec_verifies_the_servers_certificate_and_refuses_a_wrong_root() {
    let root = std::env::var("LOCKFILE_TEST_PG_ROOT_CERT")
        .unwrap_or_else(|_| panic!("LOCKFILE_TEST_PG_ROOT_CERT is not set: {START}"));
    let by_name = db_url().replacen("@127.0.0.1:", "@localhost:", 1);
    let verified = format!("{by_name}?sslmode=verify-full&sslrootcert={root}");
    let dir = tempdir();
    let marker = dir.path().join("ran");
    let out = output(
        common::lockfile()
            .env_remove("LOCKFILE_DB")
            .args(["exec", "--lock-db", &verified, "tls.lock", "--", "touch"])
            .arg(&marker),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists(), "the command did not run");

    let other = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../postgres-tests/tests/data/other-ca.crt"
    );
    common::refused(
        &format!("{by_name}?sslmode=verify-full&sslrootcert={other}"),
        74,
        &format!(
            "TLS refused the server's certificate (unable to get local issuer certificate): \
             under sslmode=verify-full the server's certificate must be signed by a root in \
             sslrootcert={other} and name the host"
        ),
    );
}

#[test]
fn inspect_tells_the_holder_without_taking_the_lock() {
    let ns = namespace("inspect");
    assert_eq!(inspect(&ns, "never.lock"), "content: (none)\nlocked: no\n");

    let mut reaper = Reaper::default();
    let holder = reaper.spawn(&mut exec(
        &ns,
        &["--content-template", "{pid};box"],
        "i.lock",
        &["sleep", "30"],
    ));
    wait_until_locked(&ns, "i.lock");
    let held = inspect(&ns, "i.lock");
    let lines: Vec<&str> = held.lines().collect();
    assert_eq!(lines[0], format!("content: {holder};box"));
    assert!(lines[1].starts_with("locked: yes (backend pid "), "{held}");
    assert!(lines[2].starts_with("token: "), "{held}");
    assert!(
        lines[3].starts_with("lease: ") && lines[3].ends_with(" left"),
        "{held}"
    );
    // Inspecting took nothing: the holder keeps it, a taker is refused.
    let taker = output(exec(&ns, &[], "i.lock", &["true"]));
    assert_eq!(taker.status.code(), Some(75));

    common::signal(holder, libc::SIGTERM);
    reaper.finish(holder, DEADLINE);
    let free = inspect(&ns, "i.lock");
    assert!(
        free.starts_with(&format!("content: {holder};box\nlocked: no\ntoken: ")),
        "{free}"
    );
    // Released cleanly: its lease ended with it.
    assert!(!free.contains("lease:"), "{free}");
}

/// A compile cache of this binary's own, filled once.
fn cache_dir() -> &'static Path {
    static CACHE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("postgres-compile-cache");
        let out = common::output_within(
            common::lockfile()
                .arg("compile")
                .arg("--cache-dir")
                .arg(&dir)
                .arg(SINGLETON_JOB_COMPONENT),
            Duration::from_secs(300),
        );
        assert!(out.status.success(), "compile: {}", stderr(&out));
        dir
    })
}

fn run(ns: &str, options: &[&str], steps: &str) -> Command {
    let mut run = lockfile_db("run", ns);
    run.arg("--cache-dir")
        .arg(cache_dir())
        .args(options)
        .args([SINGLETON_JOB_COMPONENT, steps]);
    run
}

/// Without --lock-namespace, `lockfile run --lock-db` takes the namespace
/// from the last component of a --lock-dir it was given, else `default`;
/// --lock-namespace wins over both.
#[test]
fn run_names_the_namespace_after_its_lock_directory_or_default() {
    let dir_ns = namespace("by-dir");
    let name = format!("{dir_ns}.lock");
    let parent = tempdir();
    let lock_dir = parent.path().join(&dir_ns);
    let take = |options: &[&std::ffi::OsStr], record: &str| {
        let out = output(
            common::lockfile()
                .env_remove("LOCKFILE_DB")
                .args(["run", "--lock-db", &db_url(), "--cache-dir"])
                .arg(common::cache_dir())
                .args(options)
                .arg(lockfile_tests::LOCKCTL_COMPONENT)
                .args(["lock", &name, record, "0", "release"]),
        );
        assert!(out.status.success(), "{}", stderr(&out));
    };
    let record = |ns: &str| inspect(ns, &name).lines().next().unwrap().to_owned();

    take(&["--lock-dir".as_ref(), lock_dir.as_os_str()], "by-dir");
    assert_eq!(record(&dir_ns), "content: by-dir");
    assert_eq!(record("default"), "content: (none)");
    assert!(!lock_dir.exists(), "--lock-db made a lock directory");

    take(&[], "no-dir");
    assert_eq!(record("default"), "content: no-dir");

    let explicit = namespace("explicit");
    take(
        &[
            "--lock-dir".as_ref(),
            lock_dir.as_os_str(),
            "--lock-namespace".as_ref(),
            explicit.as_ref(),
        ],
        "explicit",
    );
    assert_eq!(record(&explicit), "content: explicit");
    assert_eq!(record(&dir_ns), "content: by-dir");
}

#[test]
fn a_plugin_lock_on_the_database_has_a_growing_fencing_token() {
    let ns = namespace("token");
    let out = output(
        lockfile_db("run", &ns)
            .arg("--cache-dir")
            .arg(common::cache_dir())
            .arg(lockfile_tests::LOCKCTL_COMPONENT)
            .args(["lock", "t.lock", "{pid}", "0", "token", "held", "release"])
            .args(["lock", "t.lock", "{pid}", "0", "token"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let token = |line: &str| -> u64 {
        line.strip_prefix("token ")
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("not a token: {line:?} in {lines:?}"))
    };
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert_eq!((lines[2], lines[3]), ("held true", "released"));
    let (first, second) = (token(lines[1]), token(lines[5]));
    assert!(second > first, "{lines:?}");
    assert!(
        inspect(&ns, "t.lock").contains(&format!("token: {second}")),
        "inspect shows the token the plugin was given"
    );
}

#[test]
fn max_lock_files_bounds_the_names_a_plugin_creates_in_the_database() {
    let ns = namespace("budget");
    let plugin = |max: &str, steps: &[&str]| {
        output(
            lockfile_db("run", &ns)
                .args(["--max-lock-files", max, "--cache-dir"])
                .arg(common::cache_dir())
                .arg(lockfile_tests::LOCKCTL_COMPONENT)
                .args(steps),
        )
    };
    let out = plugin("3", &["create-many", "10"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "created 3\nerror not permitted: this plugin may create at most 3 lock files and has created them all: reuse existing lock names\n"
    );
    // The database kept only those three names: the fourth was never made.
    assert!(
        inspect(&ns, "new-2").contains("token:"),
        "{}",
        inspect(&ns, "new-2")
    );
    assert!(
        !inspect(&ns, "new-3").contains("token:"),
        "{}",
        inspect(&ns, "new-3")
    );
    // Names that exist can always be locked, even with nothing left to create.
    let out = plugin(
        "0",
        &["lock", "new-0", "again", "0", "lock", "new-9", "x", "0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "locked again\nerror not permitted: this plugin may create at most 0 lock files and has created them all: reuse existing lock names\n"
    );
}

#[test]
fn the_singleton_job_plugin_runs_unchanged_on_the_database_and_excludes_its_twin() {
    let ns = namespace("plugin");
    let alone = output(run(&ns, &[], "1"));
    assert!(alone.status.success(), "{}", stderr(&alone));
    assert!(stdout(&alone).ends_with("step 1/1 done\ndone, lock released\n"));
    // Its lock was on the database, under the namespace.
    let seen = inspect(&ns, "job.lock");
    assert!(
        seen.starts_with("content: singleton-job on ") && seen.contains("locked: no"),
        "{seen}"
    );

    let mut reaper = Reaper::default();
    let first = reaper.spawn(&mut run(&ns, &[], "50"));
    wait_until_locked(&ns, "job.lock");
    let second = output(run(&ns, &[], "1"));
    assert_eq!(second.status.code(), Some(75));
    assert_eq!(
        stderr(&second),
        format!(
            "Couldn't lock 'job.lock': held by singleton-job on {}, pid {first}\n",
            hostname::get().unwrap().to_string_lossy()
        )
    );
    assert_eq!(stdout(&second), "");
}

#[test]
fn singleton_on_the_database_excludes_a_second_run() {
    let ns = namespace("singleton");
    let mut reaper = Reaper::default();
    let first = reaper.spawn(&mut run(&ns, &["--singleton", "run.lock"], "50"));
    wait_until_locked(&ns, "run.lock");
    let second = output(run(&ns, &["--singleton", "run.lock"], "1"));
    assert_eq!(second.status.code(), Some(75), "{}", stderr(&second));
    assert_eq!(
        stderr(&second),
        format!("Couldn't lock 'run.lock': held by {first}\n")
    );
    assert_eq!(stdout(&second), "", "the second plugin started");
    common::signal(first, libc::SIGKILL);
    reaper.finish(first, DEADLINE);
    let again = output(run(&ns, &["--singleton", "run.lock"], "0"));
    assert!(again.status.success(), "{}", stderr(&again));
}

/// One plugin holds 500 database locks over at most 8 server connections:
/// its locks share the lock sessions (one here, as it takes them one after
/// another), beside the one the host reads with. Counted as the sockets the
/// `lockfile run` process has open, its only ones being its sessions.
#[cfg(target_os = "linux")]
#[test]
fn a_plugin_holds_500_locks_over_at_most_8_connections() {
    let ns = namespace("plugin-many");
    let dir = tempdir();
    let mut reaper = Reaper::default();
    let plugin = reaper.spawn(
        lockfile_db("run", &ns)
            .args(["--max-locks", "1000", "--max-lock-files", "1000", "--dir"])
            .arg(format!("{}::/data", dir.path().display()))
            .arg("--cache-dir")
            .arg(common::cache_dir())
            .arg(lockfile_tests::LOCKCTL_COMPONENT)
            .args(["hold-many", "500", "touch", "ready", "await", "done"]),
    );
    wait_until("the plugin holding its 500 locks", || {
        dir.path().join("ready").exists()
    });
    let sockets = std::fs::read_dir(format!("/proc/{plugin}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count();
    eprintln!("500 locks held over {sockets} connections");
    assert!(sockets <= 8, "{sockets} connections");
    let held = inspect(&ns, "many-499");
    assert!(held.contains("locked: yes"), "{held}");
    std::fs::write(dir.path().join("done"), "").unwrap();
    let out = reaper.finish(plugin, DEADLINE);
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with("held 500\n"), "{out:?}");
    // Released as the plugin ended: no lease left to wait out.
    let free = inspect(&ns, "many-499");
    assert!(
        free.contains("locked: no") && !free.contains("lease:"),
        "{free}"
    );
}
