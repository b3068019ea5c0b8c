//! Helpers for the `lockfile` command's end-to-end tests that spawn real
//! processes which may hang or must be killed: every child runs under a
//! deadline, and every process a test starts is killed when the test ends,
//! whether it passed or not.

use std::borrow::BorrowMut;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use lockfile_core::{Error, LockOptions};

/// How long any child may run before the test calls it hung, kills it and
/// fails. Generous: passing children take milliseconds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The `lockfile` binary under test: this build's, or `LOCKFILE_TEST_BIN`
/// (a copy for a long run that must not see a rebuild).
pub fn lockfile() -> Command {
    match std::env::var_os("LOCKFILE_TEST_BIN") {
        Some(bin) => Command::new(bin),
        None => Command::new(env!("CARGO_BIN_EXE_lockfile")),
    }
}

/// A compile cache shared by every test in this process, filled once, so no
/// `lockfile run` pays for compiling lockctl. Outside every file system a
/// test fills or mounts read-only.
pub fn cache_dir() -> &'static Path {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-compile-cache");
        let out = output_within(
            lockfile()
                .arg("compile")
                .arg("--cache-dir")
                .arg(&dir)
                .arg(lockfile_tests::LOCKCTL_COMPONENT),
            Duration::from_secs(300),
        );
        assert!(out.status.success(), "compile: {}", stderr(&out));
        dir
    })
}

/// `lockfile run --lock-dir LOCK_DIR --cache-dir <shared> OPTIONS lockctl STEPS`.
pub fn lockctl_run(lock_dir: &Path, options: &[&str], steps: &[&str]) -> Command {
    let mut command = lockfile();
    command
        .arg("run")
        .arg("--lock-dir")
        .arg(lock_dir)
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(options)
        .arg(lockfile_tests::LOCKCTL_COMPONENT)
        .args(steps);
    command
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `command` to its end with stdin closed and its output captured. If it
/// is still running after `deadline` it is killed and the test fails, saying
/// what it had printed.
pub fn output_within(mut command: impl BorrowMut<Command>, deadline: Duration) -> Output {
    let command = command.borrow_mut();
    let description = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {description}: {e}"));
    let pid = child.id() as libc::pid_t;
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(deadline) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // Not reaped yet (the thread still waits on it), so the pid is
            // still this child's.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let printed = finished
                .recv_timeout(Duration::from_secs(5))
                .ok()
                .and_then(Result::ok)
                .map(|out| format!("stdout {:?}, stderr {:?}", stdout(&out), stderr(&out)))
                .unwrap_or_else(|| "its output could not be collected".into());
            panic!("HANG: {description} still ran after {deadline:?} and was killed; {printed}")
        }
    }
}

/// [`output_within`] with the default [`DEADLINE`].
pub fn output(command: impl BorrowMut<Command>) -> Output {
    output_within(command, DEADLINE)
}

/// Polls `ready` every millisecond until it is true; fails after [`DEADLINE`].
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < DEADLINE, "waited {DEADLINE:?} for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits for a file a shell wrote with `echo $$ > FILE` and returns the pid in it.
pub fn read_pid_file(path: &Path) -> libc::pid_t {
    let mut text = String::new();
    wait_until(&format!("a pid in {}", path.display()), || {
        text = std::fs::read_to_string(path).unwrap_or_default();
        text.ends_with('\n')
    });
    text.trim().parse().unwrap()
}

/// Whether `pid` still runs: it exists and is not a zombie. (A zombie has
/// closed every descriptor, so it holds no lock.)
pub fn is_running(pid: libc::pid_t) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself
        // contain parentheses.
        Ok(stat) => match stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim().chars().next())
        {
            Some('Z' | 'X') | None => false,
            Some(_) => true,
        },
        Err(_) => false,
    }
}

/// What a contender in this test process gets when it tries `path` once.
#[derive(Debug, PartialEq, Eq)]
pub enum Try {
    /// It took the lock (and released it at once).
    Free,
    /// Someone else holds it.
    Held,
}

/// One non-blocking try by a real contender: `lockfile_core`'s lock, without
/// writing a record, so it works on a full file system too. Any other error
/// fails the test.
pub fn contend(path: &Path) -> Try {
    match LockOptions::new().no_content().lock(path) {
        Ok(lock) => {
            lock.release();
            Try::Free
        }
        Err(Error::Locked { .. }) => Try::Held,
        Err(other) => panic!("contender on {}: {other}", path.display()),
    }
}

/// The contender's view of a file that may not be openable read-write (a
/// read-only mount): opens it read-only and tries flock, which needs no write
/// access.
pub fn contend_read_only(path: &Path) -> Try {
    let file = std::fs::File::open(path).unwrap();
    match file.try_lock() {
        // Unlocked explicitly, not just closed: a child forked meanwhile by
        // another test shares the descriptor until it execs.
        Ok(()) => {
            file.unlock().unwrap();
            Try::Free
        }
        Err(std::fs::TryLockError::WouldBlock) => Try::Held,
        Err(std::fs::TryLockError::Error(e)) => panic!("contender on {}: {e}", path.display()),
    }
}

/// How a child spawned by a [`Reaper`] ended.
#[derive(Debug)]
pub struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Kills (SIGKILL) and reaps the processes it owns when dropped, so a failing
/// test leaves nothing running.
#[derive(Default)]
pub struct Reaper {
    children: Vec<Spawned>,
    pids: Vec<libc::pid_t>,
}

struct Spawned {
    child: Child,
    stdout: std::fs::File,
    stderr: std::fs::File,
}

fn read_back(mut file: std::fs::File) -> String {
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut bytes).unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl Reaper {
    /// Spawns `command` with stdin closed and its output captured in files
    /// (not pipes: a grandchild that outlives the child would keep a pipe
    /// open), read back by [`Reaper::finish`].
    pub fn spawn(&mut self, command: &mut Command) -> libc::pid_t {
        let (stdout, stderr) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().unwrap())
            .stderr(stderr.try_clone().unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        let pid = child.id() as libc::pid_t;
        self.children.push(Spawned {
            child,
            stdout,
            stderr,
        });
        pid
    }

    /// Also kills `pid` (not a child of ours, e.g. a grandchild) at the end.
    pub fn adopt(&mut self, pid: libc::pid_t) {
        self.pids.push(pid);
    }

    /// Waits for the child `pid` to end, at most `deadline`. Fails (after
    /// killing it) if it is still running then.
    pub fn finish(&mut self, pid: libc::pid_t, deadline: Duration) -> Finished {
        let index = self
            .children
            .iter()
            .position(|s| s.child.id() as libc::pid_t == pid)
            .expect("a child of this reaper");
        let Spawned {
            mut child,
            stdout,
            stderr,
        } = self.children.remove(index);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "HANG: child {pid} still ran after {deadline:?} and was killed; stdout {:?}, stderr {:?}",
                    read_back(stdout),
                    read_back(stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        Finished {
            status,
            stdout: read_back(stdout),
            stderr: read_back(stderr),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.pids {
            if is_running(*pid) {
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
        for spawned in &mut self.children {
            let _ = spawned.child.kill();
            let _ = spawned.child.wait();
        }
    }
}

/// Sends `signal` to `pid`, failing the test if it cannot be delivered.
pub fn signal(pid: libc::pid_t, signal: libc::c_int) {
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "kill({pid}, {signal}): {}",
        io::Error::last_os_error()
    );
}

/// Eight processes that each take the lock on `url` (under `ns`) 25 times
/// with `lockfile exec --wait` and increment a counter in a file under it:
/// 200 at the end, or an increment was lost to two holders at once.
pub fn eight_times_25_increments(url: &str, ns: &str) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let counter = dir.path().join("counter");
    std::fs::write(&counter, "0\n").unwrap();
    let lockfile = env!("CARGO_BIN_EXE_lockfile");
    let increment = format!(
        "for i in $(seq 25); do \
           '{lockfile}' exec --lock-db \"$DB\" --lock-namespace '{ns}' --wait 60s counter.lock -- \
             sh -c 'n=$(cat \"$0\"); echo $((n + 1)) > \"$0\"' '{}' || exit 1; \
         done",
        counter.display()
    );
    let mut reaper = Reaper::default();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            reaper.spawn(
                Command::new("sh")
                    .args(["-c", &increment])
                    .env("DB", url)
                    .env_remove("LOCKFILE_DB"),
            )
        })
        .collect();
    for worker in workers {
        let done = reaper.finish(worker, Duration::from_secs(120));
        assert!(done.status.success(), "{done:?}");
    }
    assert_eq!(std::fs::read_to_string(&counter).unwrap(), "200\n");
}

/// Runs `lockfile exec --lock-db URL` for a command that would leave a
/// marker, and checks: the status, one line on stderr that does not show the
/// password, and the command never ran.
pub fn refused(url: &str, status: i32, says: &str) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let marker = dir.path().join("ran");
    let out = output(
        lockfile()
            .env_remove("LOCKFILE_DB")
            .args(["exec", "--lock-db", url, "x.lock", "--", "touch"])
            .arg(&marker),
    );
    let message = stderr(&out);
    assert_eq!(out.status.code(), Some(status), "{url}: {message}");
    assert_eq!(message.matches('\n').count(), 1, "{url}: {message:?}");
    assert!(message.starts_with("lockfile: "), "{message}");
    assert!(message.contains(says), "{url}: {message}");
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!marker.exists(), "{url}: the command ran");
}

/// The command that prints the fencing token `lockfile exec` gives it, or
/// `unset`.
pub const PRINT_TOKEN: [&str; 3] = ["sh", "-c", "echo \"${LOCKFILE_FENCING_TOKEN-unset}\""];

/// Runs `lockfile exec --lock-db URL` on `name` under `ns` `times` times,
/// for [`PRINT_TOKEN`], and checks: each COMMAND found a token in its
/// environment, `inspect` shows it, and each is larger than the last.
/// Returns them.
pub fn growing_tokens_of_commands(url: &str, ns: &str, name: &str, times: usize) -> Vec<u64> {
    let db = |subcommand: &str| {
        let mut command = lockfile();
        command
            .env_remove("LOCKFILE_DB")
            .env_remove("LOCKFILE_FENCING_TOKEN")
            .args([subcommand, "--lock-db", url, "--lock-namespace", ns, name]);
        command
    };
    let inspect = || {
        let out = output(&mut db("inspect"));
        assert!(out.status.success(), "inspect: {}", stderr(&out));
        stdout(&out)
    };
    let mut tokens = Vec::new();
    for _ in 0..times {
        let out = output(db("exec").arg("--").args(PRINT_TOKEN));
        assert!(out.status.success(), "{}", stderr(&out));
        let token: u64 = stdout(&out)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("no token in COMMAND's environment: {:?}", stdout(&out)));
        let record = inspect();
        assert!(record.contains(&format!("\ntoken: {token}\n")), "{record}");
        tokens.push(token);
    }
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "{tokens:?}"
    );
    tokens
}

/// A COMMAND that leaves processes behind: one in the background of its
/// `sh`, one a daemon of its own session (setsid), their pids in `bg.pid`
/// and `daemon.pid`; `ready` once both run; then `then` (sh).
pub fn leaving_children(dir: &Path, then: &str) -> [String; 3] {
    let file = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let script = format!(
        "sleep 300 & echo $! > {bg}; \
         setsid sh -c 'echo $$ > {daemon}; exec sleep 300' & \
         while [ ! -s {daemon} ]; do sleep 0.01; done; touch {ready}; {then}",
        bg = file("bg.pid"),
        daemon = file("daemon.pid"),
        ready = file("ready"),
    );
    ["sh".into(), "-c".into(), script]
}
