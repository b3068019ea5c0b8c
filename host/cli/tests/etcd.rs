//! `lockfile exec`, `inspect` and `run` with `--lock-db etcd://`, against the
//! real etcd member of `LOCKFILE_TEST_ETCD` (`eval "$(scripts/etcd start)"`).
//! The cases every backend shares are in `backends.rs`; partitions and a
//! leader's death are in `partition.rs`.

#[allow(dead_code)]
mod common;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{DEADLINE, Reaper, is_running, output, read_pid_file, stderr, stdout, wait_until};

fn etcd_url() -> String {
    std::env::var("LOCKFILE_TEST_ETCD").unwrap_or_else(|_| {
        panic!(
            "LOCKFILE_TEST_ETCD is not set: run `eval \"$(scripts/etcd start)\"` first: it \
             starts throwaway etcd members under target/etcd and prints the variables the tests need"
        )
    })
}

/// A namespace (key prefix) no other test (or earlier run) uses.
fn namespace(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cli-{test}-{}-{nanos}", std::process::id())
}

fn lockfile_etcd(subcommand: &str, ns: &str) -> Command {
    let mut command = common::lockfile();
    command
        .env_remove("LOCKFILE_DB")
        .arg(subcommand)
        .arg("--lock-db")
        .arg(etcd_url())
        .args(["--lock-namespace", ns]);
    command
}

fn exec(ns: &str, options: &[&str], name: &str, command: &[&str]) -> Command {
    let mut exec = lockfile_etcd("exec", ns);
    exec.args(options).arg(name).arg("--").args(command);
    exec
}

fn inspect(ns: &str, name: &str) -> String {
    let out = output(lockfile_etcd("inspect", ns).arg(name));
    assert!(out.status.success(), "inspect: {}", stderr(&out));
    stdout(&out)
}

fn wait_until_locked(ns: &str, name: &str) {
    wait_until(&format!("{name} locked on etcd"), || {
        inspect(ns, name).contains("locked: yes")
    });
}

/// `etcdctl` on the test member, for what a user (or an operator) does by
/// hand.
fn etcdctl(args: &[&str]) -> String {
    let endpoint = etcd_url().trim_start_matches("etcd://").to_owned();
    let out = output(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint])
            .args(args),
    );
    assert!(out.status.success(), "etcdctl {args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn eight_processes_times_25_increments_give_200() {
    common::eight_times_25_increments(&etcd_url(), &namespace("counter"));
}

/// The namespace is a key prefix, and the name's key holds the record, which
/// etcd's own tools read without the lock.
#[test]
fn the_record_is_the_value_of_namespace_slash_name() {
    let ns = format!("/{}", namespace("prefix"));
    let mut reaper = Reaper::default();
    let holder = reaper.spawn(&mut exec(
        &ns,
        &["--content-template", "{pid};box"],
        "jobs/./a.lock",
        &["sleep", "30"],
    ));
    wait_until_locked(&ns, "jobs/a.lock");
    let key = format!("{ns}/jobs/a.lock");
    assert_eq!(
        etcdctl(&["get", "--print-value-only", &key]),
        format!("{holder};box\n")
    );
    common::signal(holder, libc::SIGTERM);
    reaper.finish(holder, DEADLINE);
    // Kept after the release, as a lock file's record is.
    assert_eq!(
        etcdctl(&["get", "--print-value-only", &key]),
        format!("{holder};box\n")
    );
    assert!(inspect(&ns, "jobs/a.lock").contains("locked: no"));
}

/// A holder killed with SIGKILL keeps the lock until its lease ends on the
/// server (its COMMAND may still run: it gets no SIGTERM from a dead
/// holder): a one-try exec is refused meanwhile, and a waiting one gets the
/// lock once the lease has ended, not before.
#[test]
fn sigkill_of_the_holder_frees_the_lock_once_its_lease_ends() {
    let ns = namespace("sigkill");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pid_file = dir.path().join("pid");
    let mut reaper = Reaper::default();
    let script = format!("echo $$ > '{}'; exec sleep 30", pid_file.display());
    let holder = reaper.spawn(&mut exec(
        &ns,
        &["--lease", "3s", "--content-template", "{pid}"],
        "k.lock",
        &["sh", "-c", &script],
    ));
    let command = read_pid_file(&pid_file);
    reaper.adopt(command);
    wait_until_locked(&ns, "k.lock");

    common::signal(holder, libc::SIGKILL);
    let killed = Instant::now();
    let _ = reaper.finish(holder, DEADLINE);
    let found = inspect(&ns, "k.lock");
    assert!(found.contains("locked: yes (etcd lease "), "{found}");
    assert!(found.contains("\nlease: "), "{found}");
    let refused = output(exec(&ns, &[], "k.lock", &["true"]));
    assert_eq!(refused.status.code(), Some(75), "{}", stderr(&refused));
    assert_eq!(
        stderr(&refused),
        format!("Couldn't lock 'k.lock': held by {holder}\n")
    );

    let out = output(exec(
        &ns,
        &["--lease", "3s", "--wait", "20s"],
        "k.lock",
        &["true"],
    ));
    let took = killed.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    eprintln!("the next holder ran {took:?} after the SIGKILL, with a lease of 3s");
    // The server ends a lease at its TTL from the last renewal, which came
    // at most a heartbeat (200 ms) before the kill.
    assert!(took >= Duration::from_millis(2700), "{took:?}");
    assert!(took <= Duration::from_secs(3 + 2), "{took:?}");
    if cfg!(target_os = "linux") {
        wait_until("the command to end with its lockfile", || {
            !is_running(command)
        });
    }
    assert!(!inspect(&ns, "k.lock").contains("lease:"));
}

/// A lock whose key someone deletes is lost within a heartbeat: exec stops
/// COMMAND and everything it started, and exits 76.
#[test]
fn a_lost_lock_ends_the_command_and_all_it_started() {
    let ns = namespace("lost-tree");
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let command = common::leaving_children(dir.path(), "wait");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let mut reaper = Reaper::default();
    let holder = reaper.spawn(&mut exec(&ns, &[], "job.lock", &command));
    wait_until("the command's children", || {
        dir.path().join("ready").exists()
    });
    let start = Instant::now();
    etcdctl(&["del", "--prefix", &format!("{ns}/job.lock")]);
    let out = reaper.finish(holder, DEADLINE);
    eprintln!("stopped {:?} after its key was deleted", start.elapsed());
    assert_eq!(out.status.code(), Some(76), "{out:?}");
    assert!(
        out.stderr.contains("its key was deleted on the server"),
        "{out:?}"
    );
    for name in ["bg.pid", "daemon.pid"] {
        let pid = read_pid_file(&dir.path().join(name));
        assert!(!is_running(pid), "{name}: {pid} outlived the lost lock");
    }
}

/// A plugin whose lock is lost is stopped with 76, whether it sleeps or
/// computes.
#[test]
fn a_plugin_whose_lock_is_lost_is_stopped_with_76() {
    for (what, steps) in [
        ("sleeping", &["sleep", "60000"][..]),
        ("computing", &["spin"]),
    ] {
        let ns = namespace("plugin-lost");
        let mut reaper = Reaper::default();
        let plugin = reaper.spawn(
            lockfile_etcd("run", &ns)
                .arg("--cache-dir")
                .arg(common::cache_dir())
                .arg(lockfile_tests::LOCKCTL_COMPONENT)
                .args(["lock", "p.lock", "{pid}", "0", "held"])
                .args(steps),
        );
        wait_until_locked(&ns, "p.lock");
        etcdctl(&["del", "--prefix", &format!("{ns}/p.lock")]);
        let out = reaper.finish(plugin, DEADLINE);
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

/// A wait that runs out leaves nothing in the queue, though its process
/// ends at once: the next one-try acquisition after the holder's release
/// succeeds at once. (Its key was deleted in the background, which the
/// process's end could cut short: a key left ahead of every later taker
/// until its lease ended.)
#[test]
fn a_wait_that_times_out_leaves_no_key_behind() {
    let ns = namespace("timeout");
    let mut reaper = Reaper::default();
    let holder = reaper.spawn(&mut exec(&ns, &[], "t.lock", &["sleep", "30"]));
    wait_until_locked(&ns, "t.lock");
    for _ in 0..5 {
        let waited = output(exec(&ns, &["--wait", "300ms"], "t.lock", &["true"]));
        assert_eq!(waited.status.code(), Some(75), "{}", stderr(&waited));
    }
    let queue = etcdctl(&["get", "--prefix", "--keys-only", &format!("{ns}/t.lock")]);
    let keys: Vec<&str> = queue.lines().filter(|line| !line.is_empty()).collect();
    // The record and the holder's queue key.
    assert_eq!(keys.len(), 2, "{queue:?}");
    common::signal(holder, libc::SIGTERM);
    reaper.finish(holder, DEADLINE);
    let after = output(exec(&ns, &[], "t.lock", &["true"]));
    assert!(after.status.success(), "{}", stderr(&after));
}

#[test]
fn bad_urls_exit_64_and_unreachable_clusters_74_in_one_line_without_running() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    common::refused("etcd://u:s3cret@h:0", 64, "invalid etcd URL");
    common::refused("etcd://u:s3cret@h/db", 64, "has no path");
    common::refused("etcd://u:s3cret@h?cacert=/ca.pem", 64, "cacert= needs TLS");
    common::refused(
        "etcds://u:s3cret@h?cacert=/no/such/ca.pem",
        64,
        "cacert /no/such/ca.pem",
    );
    common::refused(
        &format!("etcd://u:s3cret@127.0.0.1:{closed}"),
        74,
        "Connection refused",
    );
    common::refused("redis://u:s3cret@h", 64, "expected a postgres://");
}

#[test]
fn a_grace_that_does_not_fit_in_the_lease_is_refused() {
    let ns = namespace("lease-settings");
    let out = output(exec(&ns, &["--grace", "10s"], "s.lock", &["true"]));
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(
        stderr(&out)
            .starts_with("lockfile: --lease 15s with --grace 10s: a lease of 15s cannot hold "),
        "{}",
        stderr(&out)
    );
}

/// TLS (`etcds://`), the member's certificate checked against the test CA
/// (`cacert=`): the command runs; against a root that signed nothing, one
/// line, 74, and it does not.
#[test]
fn exec_over_tls_verifies_the_members_certificate_and_refuses_a_wrong_root() {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run `eval \"$(scripts/postgres start)\"; eval \"$(scripts/etcd start)\"` first (the TLS member uses scripts/postgres's test CA)"
            )
        })
    };
    let (url, root) = (
        var("LOCKFILE_TEST_ETCD_TLS"),
        var("LOCKFILE_TEST_ETCD_ROOT_CERT"),
    );
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let marker = dir.path().join("ran");
    let out = output(
        common::lockfile()
            .env_remove("LOCKFILE_DB")
            .args(["exec", "--lock-db", &format!("{url}?cacert={root}")])
            .args([
                "--lock-namespace",
                &namespace("tls"),
                "tls.lock",
                "--",
                "touch",
            ])
            .arg(&marker),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(marker.exists(), "the command did not run");

    let other = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../postgres-tests/tests/data/other-ca.crt"
    );
    common::refused(
        &format!("{url}?cacert={other}"),
        74,
        "TLS refused the server's certificate (invalid peer certificate: UnknownIssuer): it must be signed by a root in cacert=PATH",
    );
}

/// A user and password log in (`scripts/etcd`'s member with authentication
/// on, whose login tokens expire 2 s after each login, used or not): a lock
/// held across two expiries is renewed and checked throughout and released
/// cleanly, the client logging in again (without that, the release failed
/// with "invalid auth token", 76); a wrong password is one line, 74, and the
/// command does not run.
#[test]
fn a_user_logs_in_and_holds_a_lock_across_token_expiries() {
    let url = std::env::var("LOCKFILE_TEST_ETCD_AUTH").unwrap_or_else(|_| {
        panic!("LOCKFILE_TEST_ETCD_AUTH is not set: run `eval \"$(scripts/etcd start)\"` first")
    });
    let ns = namespace("auth");
    let out = output(
        common::lockfile()
            .env_remove("LOCKFILE_DB")
            .args(["exec", "--lock-db", &url, "--lock-namespace", &ns])
            .args([
                "--lease",
                "3s",
                "a.lock",
                "--",
                "sh",
                "-c",
                "sleep 5; echo held",
            ]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "held\n");

    let (credentials, host) = url.trim_start_matches("etcd://").split_once('@').unwrap();
    let user = credentials.split_once(':').unwrap().0;
    common::refused(
        &format!("etcd://{user}:s3cret@{host}"),
        74,
        "authentication failed",
    );
}

/// The fencing token is the revision at which an acquisition wrote its
/// record: COMMAND finds it in LOCKFILE_FENCING_TOKEN, a plugin through
/// `fencing-token`, `inspect` shows the last, and each holder's is larger.
#[test]
fn commands_and_plugins_get_a_growing_fencing_token() {
    let ns = namespace("token");
    let mut tokens = common::growing_tokens_of_commands(&etcd_url(), &ns, "t.lock", 2);
    let out = output(
        lockfile_etcd("run", &ns)
            .arg("--cache-dir")
            .arg(common::cache_dir())
            .arg(lockfile_tests::LOCKCTL_COMPONENT)
            .args(["lock", "t.lock", "{pid}", "0", "token"]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let plugin: u64 = stdout(&out)
        .lines()
        .find_map(|line| line.strip_prefix("token "))
        .and_then(|token| token.parse().ok())
        .unwrap_or_else(|| panic!("no token from the plugin: {}", stdout(&out)));
    tokens.push(plugin);
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "{tokens:?}"
    );
    assert!(inspect(&ns, "t.lock").contains(&format!("\ntoken: {plugin}\n")));
}
