//! `lockfile exec --lock-db` and `lockfile inspect --lock-db` across systems:
//! the Windows build, run under Wine, and the Linux build take the same
//! PostgreSQL locks and exclude each other, each refused with 75 and the
//! other's record.
//!
//! Run by scripts/windows-test (`--ignored`), which builds `lockfile.exe`,
//! prepares the Wine prefix and sets `LOCKFILE_WINDOWS_EXE`; the test server
//! is scripts/postgres's. These tests drive Wine from Linux rather than
//! Linux from Wine: Wine starts a Unix program but cannot wait for it.
#![cfg(target_os = "linux")]

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longer than anything here takes when it works: only a hang reaches it.
const DEADLINE: Duration = Duration::from_secs(60);

/// The test server's URL, without TLS: Wine 8's SChannel (secur32) reports
/// the bytes still missing from a TLS record split across reads as the
/// whole record's size, and schannel-rs then waits for bytes that never
/// come, so an answer over about 1 KB hangs over TLS under Wine (not on
/// Windows). TLS has its own tests on Linux.
fn db_url() -> String {
    let url = std::env::var("LOCKFILE_TEST_DB")
        .expect("LOCKFILE_TEST_DB: `eval \"$(scripts/postgres start)\"` sets it");
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}sslmode=disable")
}

fn linux() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lockfile"))
}

/// `wine lockfile.exe`: the Windows build.
fn windows() -> Command {
    let exe = std::env::var_os("LOCKFILE_WINDOWS_EXE")
        .expect("LOCKFILE_WINDOWS_EXE: scripts/windows-test sets it to the Windows build");
    let mut command = Command::new("wine");
    command.arg(exe);
    command
}

/// A lock name of this test process's own, so runs never meet.
fn lock_name(what: &str) -> String {
    format!("wine-{what}-{}.lock", std::process::id())
}

/// A holder that runs until its standard input ends: when the test drops
/// it, or lets it go. Killed if the test fails first.
struct Holder(Child);

impl Holder {
    fn start(command: &mut Command) -> Self {
        Self(
            command
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Ends the holder's command, and checks that the holder then exits 0.
    fn release(mut self) {
        let mut stdin = self.0.stdin.take().unwrap();
        let _ = stdin.write_all(b"\n");
        drop(stdin);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < DEADLINE, "the holder never ended");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "the holder: {status}");
    }
}

impl Drop for Holder {
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

/// Waits until `inspect --lock-db` (of `build`) says `name` is held, and
/// returns what it printed.
fn wait_until_held(build: fn() -> Command, db: &str, name: &str) -> String {
    let start = Instant::now();
    loop {
        let out = output(build().args(["inspect", "--lock-db", db, name]));
        let said = text(&out.stdout);
        if said.contains("locked: yes") {
            return said;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never held: {said}{}",
            text(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn record(inspected: &str) -> String {
    inspected
        .lines()
        .find_map(|line| line.strip_prefix("content: "))
        .unwrap_or_else(|| panic!("no record: {inspected}"))
        .to_owned()
}

#[test]
#[ignore = "needs the Windows build under Wine: scripts/windows-test runs it"]
fn a_linux_holder_refuses_exec_lock_db_on_windows_with_75_and_its_record() {
    let db = db_url();
    let name = lock_name("linux-holds");
    let holder = Holder::start(
        linux()
            .args([
                "exec",
                "--lock-db",
                &db,
                "--content-template",
                "linux {pid}",
            ])
            .arg(&name)
            .args(["--", "sh", "-c", "read line"]),
    );
    // The Windows build reads the Linux holder's record, and that it is held.
    let inspected = wait_until_held(windows, &db, &name);
    let record = record(&inspected);
    assert_eq!(record, format!("linux {}", holder.0.id()), "{inspected}");

    let out = output(
        windows()
            .args(["exec", "--lock-db", &db])
            .arg(&name)
            .args(["--", "cmd", "/c", "echo", "ran"]),
    );
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!("Couldn't lock '{name}': held by {record}\n")
    );
    assert_eq!(text(&out.stdout), "", "the command never ran");

    holder.release();
    let out = output(
        windows()
            .args(["exec", "--lock-db", &db])
            .arg(&name)
            .args(["--", "cmd", "/c", "echo", "ran"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim_end(), "ran");
}

#[test]
#[ignore = "needs the Windows build under Wine: scripts/windows-test runs it"]
fn a_windows_holder_refuses_exec_lock_db_on_linux_with_75_and_its_record() {
    let db = db_url();
    let name = lock_name("windows-holds");
    let holder = Holder::start(
        windows()
            .args([
                "exec",
                "--lock-db",
                &db,
                "--content-template",
                "windows {pid}",
            ])
            .arg(&name)
            .args(["--", "cmd", "/c", "set /p line="]),
    );
    let inspected = wait_until_held(linux, &db, &name);
    let record = record(&inspected);
    assert!(record.starts_with("windows "), "{inspected}");

    let out = output(
        linux()
            .args(["exec", "--lock-db", &db])
            .arg(&name)
            .args(["--", "echo", "ran"]),
    );
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!("Couldn't lock '{name}': held by {record}\n")
    );
    assert_eq!(text(&out.stdout), "", "the command never ran");

    holder.release();
    let out = output(
        linux()
            .args(["exec", "--lock-db", &db])
            .arg(&name)
            .args(["--", "echo", "ran"]),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ran\n");
}
