//! The `lockfile` command on Windows, end to end: `exec` (the command runs
//! while the lock is held, its status is passed on, 75 when held, and the
//! command and what it starts never outlive the lock), `inspect` (the record
//! read from byte 1 while held), and real wasm32-wasip2 plugins under
//! `lockfile run` (a plugin holds, a second is refused with the holder's
//! record, a trap frees the lock).
//!
//! Windows only: scripts/windows-test cross-compiles it for
//! x86_64-pc-windows-gnu and runs it under Wine. The Unix behaviour has its
//! own tests (exec.rs, run.rs, faults.rs), which rely on Unix tools and
//! signals.
//!
//! The commands that `lockfile exec` runs are this test binary itself,
//! started again with a role in `LOCKFILE_TEST_ROLE` (see [`role`]): Wine
//! has no Unix tools, and this way the command can check the lock itself.
#![cfg(windows)]

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use lockfile_core::{Error, LockFile, LockOptions, read_content};
use lockfile_tests::LOCKCTL_COMPONENT;

/// Longer than anything here takes when it works: only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(60);

const ROLE: &str = "LOCKFILE_TEST_ROLE";
const LOCK: &str = "LOCKFILE_TEST_LOCK";
const MARKER: &str = "LOCKFILE_TEST_MARKER";

fn lockfile() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockfile"))
}

/// This test binary, started again to play `role` (see [`role`]).
fn helper(role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["role", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role);
    command
}

/// Not a test of its own: what this binary does when a test starts it again
/// with `LOCKFILE_TEST_ROLE` set. Without it, it does nothing.
///
/// - `check-held`: tries the lock at `$LOCKFILE_TEST_LOCK`, prints
///   `held by HOLDER` (or `taken`) and exits 3: a command that checks it runs
///   under the lock.
/// - `sleeper`: takes the lock at `$LOCKFILE_TEST_LOCK`, creates
///   `$LOCKFILE_TEST_MARKER` and sleeps for a minute: while it lives, that
///   lock is held, so a test learns that it has ended by taking the lock.
/// - `parent-of-sleepers`: starts a `sleeper` on `$LOCKFILE_TEST_LOCK.child`
///   (marker `$LOCKFILE_TEST_MARKER.child`), then is a `sleeper` itself.
/// - `leave-a-sleeper`: starts a `sleeper` as above, waits for its marker,
///   and exits 0, leaving it running.
#[test]
fn role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let lock = PathBuf::from(std::env::var_os(LOCK).unwrap());
    let marker = || PathBuf::from(std::env::var_os(MARKER).unwrap());
    let child_sleeper = || {
        let child_marker = suffixed(&marker(), ".child");
        let child = helper("sleeper")
            .env(LOCK, suffixed(&lock, ".child"))
            .env(MARKER, &child_marker)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        (child, child_marker)
    };
    match role.as_str() {
        "check-held" => {
            match LockFile::lock(&lock) {
                Ok(_) => println!("taken"),
                Err(Error::Locked { holder, .. }) => {
                    println!("held by {}", holder.unwrap_or_default())
                }
                Err(other) => println!("error {other}"),
            }
            std::io::stdout().flush().unwrap();
            std::process::exit(3);
        }
        "sleeper" => sleep_holding(&lock, &marker()),
        "parent-of-sleepers" => {
            let _child = child_sleeper();
            sleep_holding(&lock, &marker());
        }
        "leave-a-sleeper" => {
            let (_child, child_marker) = child_sleeper();
            wait_for(&child_marker);
            std::process::exit(0);
        }
        other => panic!("unknown role {other}"),
    }
}

fn sleep_holding(lock: &Path, marker: &Path) -> ! {
    let _held = LockFile::lock(lock).unwrap();
    fs::write(marker, "").unwrap();
    std::thread::sleep(Duration::from_secs(60));
    std::process::exit(0);
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < DEADLINE,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child killed when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `command` to its end, within [`DEADLINE`].
fn output(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output()));
    finished
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("process {id} hung"))
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Takes the lock at `path` within `wait`: how a test learns that every
/// process holding it has ended.
fn take_within(path: &Path, wait: Duration) -> LockFile {
    LockOptions::new()
        .wait(wait)
        .lock(path)
        .unwrap_or_else(|e| panic!("{e}"))
}

// `lockfile exec`

#[test]
fn exec_runs_the_command_while_holding_and_exits_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let child = lockfile()
        .arg("exec")
        .arg(&path)
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["role", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, "check-held")
        .env(LOCK, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lockfile_pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    // The command found the lock held, and read lockfile's record from byte 1.
    assert!(
        text(&out.stdout).contains(&format!("held by {lockfile_pid}\n")),
        "{}",
        text(&out.stdout)
    );
    assert!(path.exists(), "never deleted");
    assert_eq!(read_content(&path).unwrap(), Some(lockfile_pid.to_string()));
    LockFile::lock(&path).expect("released when the command ended");
}

#[test]
fn exec_exits_75_when_held_and_never_runs_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let marker = dir.path().join("ran");
    let _held = LockOptions::new()
        .content_template("test {pid}")
        .lock(&path)
        .unwrap();
    let out = output(
        lockfile()
            .arg("exec")
            .arg(&path)
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(["role", "--exact", "--nocapture"])
            .env(ROLE, "sleeper")
            .env(LOCK, dir.path().join("other.lock"))
            .env(MARKER, &marker),
    );
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        text(&out.stderr),
        format!(
            "Couldn't lock '{}': held by test {}\n",
            path.display(),
            std::process::id()
        )
    );
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn exec_a_missing_command_exits_127_and_releases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let out = output(
        lockfile()
            .arg("exec")
            .arg(&path)
            .arg("--")
            .arg(dir.path().join("no-such-program.exe")),
    );
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("lockfile: couldn't run "));
    LockFile::lock(&path).unwrap();
}

/// Killing `lockfile` (TerminateProcess, which cannot be caught) ends the
/// command and what the command started: the job object's last handle
/// closes with the process.
#[test]
fn killing_lockfile_exec_ends_the_command_and_what_it_started() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let alive = dir.path().join("alive.lock");
    let marker = dir.path().join("started");
    let mut exec = Running(
        lockfile()
            .arg("exec")
            .arg(&path)
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(["role", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, "parent-of-sleepers")
            .env(LOCK, &alive)
            .env(MARKER, &marker)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(&marker);
    wait_for(&suffixed(&marker, ".child"));
    assert!(matches!(LockFile::lock(&path), Err(Error::Locked { .. })));
    assert!(matches!(LockFile::lock(&alive), Err(Error::Locked { .. })));

    exec.0.kill().unwrap();
    let status: ExitStatus = exec.0.wait().unwrap();
    assert!(!status.success());
    // The sleepers hold their locks until they end: taking them shows they
    // did, long before their minute of sleep was over.
    let start = Instant::now();
    take_within(&alive, Duration::from_secs(20));
    take_within(&suffixed(&alive, ".child"), Duration::from_secs(20));
    take_within(&path, Duration::from_secs(20));
    assert!(start.elapsed() < Duration::from_secs(30));
}

/// When the command exits, what it left running is ended before the lock is
/// released: once `lockfile` has exited, nothing of the command's runs.
#[test]
fn exec_ends_what_the_command_left_running_before_releasing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let alive = dir.path().join("alive.lock");
    let out = output(
        lockfile()
            .arg("exec")
            .arg(&path)
            .arg("--")
            .arg(std::env::current_exe().unwrap())
            .args(["role", "--exact", "--nocapture", "--test-threads=1"])
            .env(ROLE, "leave-a-sleeper")
            .env(LOCK, &alive)
            .env(MARKER, dir.path().join("started")),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("started.child").exists());
    // No wait: the sleeper is gone already.
    LockFile::lock(suffixed(&alive, ".child")).expect("the sleeper outlived lockfile");
    LockFile::lock(&path).unwrap();
}

// `lockfile inspect`

#[test]
fn inspect_reads_the_record_while_held_and_takes_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let held = LockOptions::new()
        .content_template("test {pid}")
        .lock(&path)
        .unwrap();
    let out = output(lockfile().arg("inspect").arg(&path));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some(format!("content: test {}", std::process::id()).as_str())
    );
    // `yes` on Windows, where byte 0 is unreadable while held; `unknown`
    // under Wine, which lets anyone read it.
    let locked = lines.next().unwrap();
    assert!(
        locked == "locked: yes" || locked == "locked: unknown",
        "{locked}"
    );
    drop(held);

    let out = output(lockfile().arg("inspect").arg(&path));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("content: test "), "{stdout}");
    assert!(!stdout.contains("locked: yes"), "{stdout}");
    LockFile::lock(&path).expect("inspect took no lock");
}

// Plugins under `lockfile run`

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let sandbox = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(sandbox.path("data")).unwrap();
        sandbox
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `lockfile run` of lockctl with this sandbox's lock directory, cache,
    /// and `data` as `/data`.
    fn lockctl(&self, options: &[&str], steps: &[&str]) -> Command {
        let mut command = lockfile();
        command
            .arg("run")
            .arg("--lock-dir")
            .arg(self.path("locks"))
            .arg("--cache-dir")
            .arg(self.path("cache"))
            .arg("--dir")
            .arg(format!("{}::/data", self.path("data").display()))
            .args(options)
            .arg(LOCKCTL_COMPONENT)
            .args(steps.iter().map(OsStr::new));
        command
    }
}

#[test]
fn a_plugin_holds_and_a_second_plugin_is_refused_with_its_record() {
    let s = Sandbox::new();
    let first = Running(
        s.lockctl(
            &["--name", "first"],
            &[
                "lock",
                "job.lock",
                "{plugin} {pid}",
                "0",
                "touch",
                "held",
                "await",
                "go",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    wait_for(&s.path("data/held"));
    let record = format!("first {}", first.0.id());

    let out = output(&mut s.lockctl(
        &[],
        &["lock", "job.lock", "second", "0", "read", "job.lock"],
    ));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("error Couldn't lock 'job.lock': held by {record}\ncontent {record}\n")
    );
    // Native code reads the plugin's record too, from byte 1.
    let lock_path = s.path("locks/job.lock");
    let Err(Error::Locked { holder, .. }) = LockFile::lock(&lock_path) else {
        panic!("the plugin's lock is not held")
    };
    assert_eq!(holder, Some(record.clone()));

    fs::write(s.path("data/go"), "").unwrap();
    let mut first = first;
    let status = first.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stdout = String::new();
    std::io::Read::read_to_string(first.0.stdout.as_mut().unwrap(), &mut stdout).unwrap();
    assert_eq!(stdout, format!("locked {record}\n"));
    LockFile::lock(&lock_path).expect("released when the plugin ended");
    assert!(lock_path.exists(), "never deleted");
}

#[test]
fn a_plugin_that_traps_frees_its_lock() {
    let s = Sandbox::new();
    let out = output(&mut s.lockctl(&[], &["lock", "job.lock", "{pid}", "0", "trap"]));
    assert_eq!(out.status.code(), Some(134), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("locked "),
        "{}",
        text(&out.stdout)
    );
    let lock_path = s.path("locks/job.lock");
    LockFile::lock(&lock_path).expect("the trap freed the lock");
    let out = output(&mut s.lockctl(&[], &["lock", "job.lock", "again", "0"]));
    assert_eq!(text(&out.stdout), "locked again\n");
}

#[test]
fn a_held_singleton_exits_75_and_the_plugin_never_starts() {
    let s = Sandbox::new();
    fs::create_dir(s.path("locks")).unwrap();
    let _held = LockOptions::new()
        .content_template("other {pid}")
        .lock(s.path("locks/run.lock"))
        .unwrap();
    let out = output(&mut s.lockctl(&["--singleton", "run.lock"], &["touch", "started"]));
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "Couldn't lock 'run.lock': held by other {}\n",
            std::process::id()
        )
    );
    assert!(!s.path("data/started").exists());
}
