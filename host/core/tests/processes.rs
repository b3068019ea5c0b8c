//! Two processes on one lock file, on every platform (under Wine for Windows,
//! by scripts/windows-test): each excludes the other, each reads the other's
//! record while it holds (from byte 1 on Windows, where byte 0 is locked),
//! a process started by a holder does not keep its lock, and a killed holder
//! frees it. The file is never deleted.
//!
//! The other process is this test binary, started again with a role in
//! `LOCKFILE_TEST_ROLE` (see [`role`]), so the tests need no other program.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use lockfile_core::{Error, LockFile, LockOptions, read_content};

const ROLE: &str = "LOCKFILE_TEST_ROLE";
const LOCK: &str = "LOCKFILE_TEST_LOCK";

/// Not a test of its own: what this binary does when a test starts it again
/// with `LOCKFILE_TEST_ROLE` set. Without it, it does nothing.
///
/// - `try`: one try of the lock at `$LOCKFILE_TEST_LOCK`; exits 0 having
///   taken it, or prints `held by HOLDER` and exits 75.
/// - `hold`: takes that lock with the template `other {pid}`, prints `locked`,
///   and holds it until its stdin closes.
/// - `idle`: waits until its stdin closes.
#[test]
fn role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let path = std::env::var_os(LOCK).unwrap();
    let until_stdin_closes = || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
    };
    let status = match role.as_str() {
        "try" => match LockFile::lock(&path) {
            Ok(_) => 0,
            Err(Error::Locked { holder, .. }) => {
                println!("held by {}", holder.unwrap_or_default());
                75
            }
            Err(other) => {
                println!("error {other}");
                1
            }
        },
        "hold" => {
            let lock = LockOptions::new()
                .content_template("other {pid}")
                .lock(&path)
                .unwrap();
            println!("locked");
            std::io::stdout().flush().unwrap();
            until_stdin_closes();
            lock.release();
            0
        }
        "idle" => {
            until_stdin_closes();
            0
        }
        other => panic!("unknown role {other}"),
    };
    std::io::stdout().flush().unwrap();
    std::process::exit(status);
}

/// This test binary, started again to play `role` on the lock at `path`.
fn other_process(role: &str, path: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["role", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(LOCK, path);
    command
}

/// What the other process printed on `line`: libtest has already printed
/// `test role ... ` on the line of its first output, with one test thread.
fn said(line: &str) -> &str {
    line.strip_prefix("test role ... ").unwrap_or(line)
}

/// One `try` in another process: `Ok(())` if it took the lock, else what it
/// printed.
fn try_elsewhere(path: &Path) -> Result<(), String> {
    let out = other_process("try", path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = stdout
        .lines()
        .map(said)
        .find(|line| line.starts_with("held by") || line.starts_with("error"))
        .unwrap_or_default()
        .to_owned();
    match out.status.code() {
        Some(0) => Ok(()),
        Some(75) => Err(said),
        other => panic!("the other process failed ({other:?}): {stdout}"),
    }
}

/// Another process that runs until dropped (its stdin closed) and is then
/// waited for, or until killed.
struct Other {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Other {
    fn start(role: &str, path: &Path) -> Self {
        let mut child = other_process(role, path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    /// Starts a `hold` and waits until it holds.
    fn holding(path: &Path) -> Self {
        let mut other = Self::start("hold", path);
        let stdout = BufReader::new(other.child.stdout.take().unwrap());
        for line in stdout.lines() {
            if said(&line.unwrap()) == "locked" {
                return other;
            }
        }
        panic!("the other process ended without locking")
    }
}

impl Drop for Other {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn a_lock_held_here_is_refused_to_another_process_which_reads_our_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let lock = LockFile::lock(&path).unwrap();
    assert_eq!(
        try_elsewhere(&path),
        Err(format!("held by {}", std::process::id()))
    );
    lock.release();
    try_elsewhere(&path).expect("free once released");
    assert!(path.exists(), "never deleted");
}

#[test]
fn a_lock_held_by_another_process_is_refused_here_with_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let other = Other::holding(&path);
    let record = format!("other {}", other.child.id());
    let error = LockFile::lock(&path).unwrap_err();
    assert!(
        matches!(&error, Error::Locked { holder: Some(h), .. } if *h == record),
        "{error:?}"
    );
    assert_eq!(read_content(&path).unwrap(), Some(record.clone()));
    let error = LockOptions::new()
        .wait(Duration::from_millis(100))
        .lock(&path)
        .unwrap_err();
    assert_eq!(error.holder(), Some(record.as_str()));
    drop(other);
    let lock = LockFile::lock(&path).expect("free once the other released it");
    assert_eq!(
        lock.content(),
        Some(std::process::id().to_string().as_str())
    );
}

/// zc.lockfile's "relock while a multiprocessing child is alive": the child
/// inherits no lock (close-on-exec on Unix; an uninheritable handle, and
/// locks that belong to their process, on Windows).
#[test]
fn a_process_started_while_holding_does_not_keep_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let lock = LockFile::lock(&path).unwrap();
    let child = Other::start("idle", &path);
    lock.release();
    LockFile::lock(&path).expect("the child kept the lock");
    try_elsewhere(&path).expect("the child kept the lock");
    drop(child);
}

#[test]
fn a_killed_holder_frees_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let mut other = Other::holding(&path);
    assert!(LockFile::lock(&path).is_err());
    other.child.kill().unwrap();
    other.child.wait().unwrap();
    // The system releases a dead process's locks, on Windows "at some
    // point" after it exits: wait a little.
    let lock = LockOptions::new()
        .wait(Duration::from_secs(10))
        .lock(&path)
        .expect("a dead process still holds the lock");
    drop(lock);
    assert!(path.exists(), "never deleted");
}
