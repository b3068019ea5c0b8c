//! `lockfile exec` and `lockfile inspect`, end to end, as real processes.

#[path = "../../../tests/support/zc_python.rs"]
mod zc_python;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use lockfile_core::{Error, LockFile, read_content};

fn lockfile() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockfile"))
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Waits until the process `pid` has written its record into `path`.
fn wait_for_holder(path: &Path, pid: u32) {
    let start = Instant::now();
    while read_content(path).ok().flatten() != Some(pid.to_string()) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{pid} never locked {path:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spawn_holder(path: &Path, command: &str) -> Child {
    let child = lockfile()
        .arg("exec")
        .arg(path)
        .args(["--", "sh", "-c", command])
        .spawn()
        .unwrap();
    wait_for_holder(path, child.id());
    child
}

#[test]
fn runs_the_command_while_holding_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let out = output(
        lockfile()
            .arg("exec")
            .arg(&path)
            .args(["--", "sh", "-c", "cat \"$0\"; exit 3"])
            .arg(&path),
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let record = String::from_utf8(out.stdout).unwrap();
    let pid: u32 = record
        .strip_prefix(' ')
        .and_then(|r| r.strip_suffix('\n'))
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(pid, std::process::id());
    assert!(path.exists(), "the lock file is left behind");
    LockFile::lock(&path).expect("released when the command ended");
}

#[test]
fn a_held_lock_exits_75_without_running_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let marker = dir.path().join("ran");
    let _held = LockFile::lock(&path).unwrap();
    let out = output(
        lockfile()
            .arg("exec")
            .arg(&path)
            .args(["--", "touch"])
            .arg(&marker),
    );
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        stderr(&out),
        format!(
            "Couldn't lock '{}': held by {}\n",
            path.display(),
            std::process::id()
        )
    );
    assert!(!marker.exists());
    assert_eq!(
        read_content(&path).unwrap(),
        Some(std::process::id().to_string()),
        "the loser changed nothing"
    );
}

#[test]
fn a_wait_takes_the_lock_once_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let held = LockFile::lock(&path).unwrap();
    let mut waiter = lockfile()
        .args([
            "exec",
            "--wait",
            "30s",
            "--content-template",
            "waiter {pid}",
        ])
        .arg(&path)
        .args(["--", "true"])
        .spawn()
        .unwrap();
    // The waiter opens the lock file once, then retries the lock on it: once
    // it has the file open and is still running, it is waiting for us.
    let target = fs::canonicalize(&path).unwrap();
    let fds = format!("/proc/{}/fd", waiter.id());
    let start = Instant::now();
    while !fs::read_dir(&fds).is_ok_and(|fds| {
        fds.filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
            .any(|open| open == target)
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the waiter never opened {path:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        waiter.try_wait().unwrap(),
        None,
        "the waiter did not wait for the holder"
    );
    assert_eq!(
        read_content(&path).unwrap(),
        Some(std::process::id().to_string())
    );
    held.release();
    let status = waiter.wait().unwrap();
    assert!(status.success());
    assert!(read_content(&path).unwrap().unwrap().starts_with("waiter "));
}

#[test]
fn a_wait_that_runs_out_exits_75() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let _held = LockFile::lock(&path).unwrap();
    let out = output(
        lockfile()
            .args(["exec", "--wait", "200ms"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert_eq!(out.status.code(), Some(75));
    assert!(
        stderr(&out).contains("within 200ms: held by"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_usage_exits_64_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let cases: [&[&str]; 5] = [
        &["exec", "--content-template", "{nope}", "P", "--", "true"],
        &["exec", "--content-template", "{pid", "P", "--", "true"],
        &["exec", "--wait", "soon", "P", "--", "true"],
        &["exec", "P"],
        &[
            "exec",
            "--no-content",
            "--content-template",
            "{pid}",
            "P",
            "--",
            "true",
        ],
    ];
    for args in cases {
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "P" { path.to_str().unwrap() } else { a })
            .collect();
        let out = output(lockfile().args(&args));
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).is_empty());
        assert!(!path.exists(), "{args:?} created the lock file");
    }
    let out = output(
        lockfile()
            .args(["exec", "--content-template", "{nope}"])
            .arg(&path)
            .args(["--", "true"]),
    );
    assert!(
        stderr(&out).contains("unknown field {nope}"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn io_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing/job.lock");
    let out = output(lockfile().arg("exec").arg(&path).args(["--", "true"]));
    assert_eq!(out.status.code(), Some(74));
    assert!(
        stderr(&out).contains(&path.display().to_string()),
        "{}",
        stderr(&out)
    );
    let out = output(lockfile().arg("exec").arg(dir.path()).args(["--", "true"]));
    assert_eq!(out.status.code(), Some(74));
}

#[test]
fn command_statuses_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let out = output(
        lockfile()
            .arg("exec")
            .arg(&path)
            .args(["--", "no-such-command-anywhere"]),
    );
    assert_eq!(out.status.code(), Some(127));
    let out = output(
        lockfile()
            .arg("exec")
            .arg(&path)
            .args(["--", "sh", "-c", "kill -9 $$"]),
    );
    assert_eq!(out.status.code(), Some(128 + 9));
    LockFile::lock(&path).unwrap();
}

#[test]
fn a_killed_holder_leaves_the_lock_with_its_command_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let child_pid_file = dir.path().join("child.pid");
    let mut holder = spawn_holder(
        &path,
        &format!("echo $$ > {}; exec sleep 60", child_pid_file.display()),
    );
    assert!(matches!(LockFile::lock(&path), Err(Error::Locked { .. })));
    while !fs::read_to_string(&child_pid_file).is_ok_and(|s| s.ends_with('\n')) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let child_pid: i32 = fs::read_to_string(&child_pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    holder.kill().unwrap(); // SIGKILL: nothing can be forwarded
    holder.wait().unwrap();
    let alive = Path::new(&format!("/proc/{child_pid}")).exists();
    let while_alive = LockFile::lock(&path);
    unsafe { libc::kill(child_pid, libc::SIGKILL) };
    assert!(alive, "the command outlives the killed holder");
    assert!(
        matches!(while_alive, Err(Error::Locked { .. })),
        "two holders at once: the command runs on while the lock is free"
    );
    // The command is not our child: wait for it to be gone, then the lock is.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match LockFile::lock(&path) {
            Ok(_) => break,
            Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(error) => panic!("still held after the command died: {error}"),
        }
    }
}

#[test]
fn inspect_tells_content_and_state_without_locking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let held = LockFile::lock(&path).unwrap();
    let out = output(lockfile().arg("inspect").arg(&path));
    let pid = std::process::id();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("content: {pid}\nlocked: yes (pid {pid})\n")
    );
    held.release();
    let out = output(lockfile().arg("inspect").arg(&path));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("content: {pid}\nlocked: no\n")
    );
    let out = output(lockfile().arg("inspect").arg(dir.path().join("absent")));
    assert_eq!(out.status.code(), Some(74));
}

#[test]
fn excludes_and_is_excluded_by_zc_lockfile() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    let zc = zc_python::ZcHolder::lock(&path, "{pid};{hostname}");
    let out = output(lockfile().arg("exec").arg(&path).args(["--", "true"]));
    assert_eq!(out.status.code(), Some(75));
    assert!(
        stderr(&out).contains(&format!("held by {};", zc.pid)),
        "{}",
        stderr(&out)
    );
    zc.release();

    let mut holder = spawn_holder(&path, "sleep 60");
    let refused = zc_python::zc_try_lock(&path);
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert_eq!(
        refused.unwrap_err(),
        format!("Couldn't lock '{}'", path.display())
    );
}

/// `lockfile SUBCOMMAND ARGS` with its standard output a pipe whose reader
/// has gone (`| head -0`): its status and standard error.
fn with_closed_stdout(args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = lockfile()
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    (out.status.code(), stderr(&out))
}

#[test]
fn a_closed_standard_output_is_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.lock");
    fs::write(&path, " 4242\n").unwrap();
    let (status, err) = with_closed_stdout(&["inspect".as_ref(), path.as_os_str()]);
    assert_eq!((status, err.as_str()), (Some(0), ""), "inspect");
    let cache = dir.path().join("cache");
    let (status, err) = with_closed_stdout(&[
        "compile".as_ref(),
        "--cache-dir".as_ref(),
        cache.as_os_str(),
        lockfile_tests::LOCKCTL_COMPONENT.as_ref(),
    ]);
    assert_eq!((status, err.as_str()), (Some(0), ""), "compile");
}
