//! A holder cut off from the lock database by a real partition: its
//! `lockfile exec --lock-db` runs on the "far machine" of `scripts/postgres`
//! (a network namespace joined to the server by a veth pair), and the test
//! takes the server's end of the link down, so that the holder's packets
//! vanish silently. A contender on the server's machine waits for the lock.
//! In every trial, the old command's last sign of life must come before the
//! new command starts, and the takeover must come within the lease plus 2 s.
//!
//! The same for a holder whose session the server ends
//! (`pg_terminate_backend`, which is a SIGTERM to its server process), and
//! for a plugin holding the lock under `lockfile run`.
//!
//! Needs root and the far machine (`LOCKFILE_TEST_FAR_*`, which
//! `scripts/postgres start` prints when it could make it); without them the
//! trials say why and check nothing, except under CI=true, where they fail.
//! Its own binary: the link it takes down is the far machine's only one.

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The lease of these trials: short, so that each takes seconds.
const LEASE: Duration = Duration::from_secs(6);

/// What the holder's COMMAND does with SIGTERM. Each appends the wall clock
/// (ns) to `life` every 20 ms while it runs: its signs of life.
#[derive(Debug, Clone, Copy)]
enum OnSigterm {
    /// Ends at once.
    Ends,
    /// Goes on for 1.8 s of the 2 s grace, still showing life.
    TakesNearlyTheGrace,
    /// Ignores it, and must be killed.
    Ignores,
}

impl OnSigterm {
    fn script(self) -> &'static str {
        match self {
            OnSigterm::Ends => "while :; do date +%s%N >>life; sleep 0.02; done",
            OnSigterm::TakesNearlyTheGrace => concat!(
                "trap 'i=0; while [ $i -lt 18 ]; do date +%s%N >>life; sleep 0.1; i=$((i+1)); done; exit 0' TERM; ",
                "while :; do date +%s%N >>life; sleep 0.02; done"
            ),
            OnSigterm::Ignores => "trap '' TERM; while :; do date +%s%N >>life; sleep 0.02; done",
        }
    }
}

struct Far {
    ns: String,
    link: String,
    far_db: String,
    near_db: String,
}

/// The far machine, or why there is none (a panic under CI=true).
fn far() -> Option<Far> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let found = (|| {
        Some(Far {
            ns: var("LOCKFILE_TEST_FAR_NS")?,
            link: var("LOCKFILE_TEST_FAR_LINK")?,
            far_db: var("LOCKFILE_TEST_FAR_DB")?,
            near_db: var("LOCKFILE_TEST_DB")?,
        })
    })();
    if found.is_none() {
        let why = "no far machine: run `eval \"$(scripts/postgres start)\"` as root on Linux, which makes it and prints LOCKFILE_TEST_FAR_*";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipped: {why}");
    }
    found
}

fn link(far: &Far, state: &str) {
    let status = Command::new("ip")
        .args(["link", "set", &far.link, state])
        .status()
        .unwrap();
    assert!(status.success(), "ip link set {} {state}", far.link);
}

/// Waits until the server answers from the far machine: a link just brought
/// back up takes a moment (the neighbour entry failed while it was down).
fn reachable(far: &Far) {
    let address = far
        .far_db
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap();
    let (host, port) = address.rsplit_once(':').unwrap();
    let probe = format!("exec 3<>/dev/tcp/{host}/{port}");
    let start = Instant::now();
    loop {
        let status = Command::new("ip")
            .args(["netns", "exec", &far.ns, "bash", "-c", &probe])
            .stderr(Stdio::null())
            .status()
            .unwrap();
        if status.success() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the server is not reachable from {} at {address}",
            far.ns
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The link comes back up when a trial ends, however it ends.
struct Reconnect<'a>(&'a Far);

impl Drop for Reconnect<'_> {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "set", &self.0.link, "up"])
            .status();
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn last_life(dir: &Path) -> Option<u128> {
    let text = std::fs::read_to_string(dir.join("life")).ok()?;
    text.lines().filter_map(|line| line.parse().ok()).max()
}

fn lockfile_exec(db: &str, ns: &str, dir: &Path, extra: &[&str], script: &str) -> Command {
    let mut command = common::lockfile();
    command
        .env_remove("LOCKFILE_DB")
        .current_dir(dir)
        .args(["exec", "--lock-db", db, "--lock-namespace", ns])
        .args(["--lease", &format!("{}s", LEASE.as_secs())])
        .args(extra)
        .args(["job.lock", "--", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// What holds the lock.
#[derive(Debug, Clone, Copy)]
enum Holder {
    /// `lockfile exec` with a COMMAND that shows life.
    Exec(OnSigterm),
    /// `lockfile run` with a plugin that holds the lock through the
    /// interface and shows life (lockctl's `life`).
    Plugin,
}

/// Starts the holder in `dir`, in the far machine's namespace when
/// `far_side`.
fn holder(far: &Far, ns: &str, dir: &Path, what: Holder, far_side: bool) -> Child {
    let db = if far_side { &far.far_db } else { &far.near_db };
    let command = match what {
        Holder::Exec(on_sigterm) => lockfile_exec(db, ns, dir, &[], on_sigterm.script()),
        Holder::Plugin => {
            let mut command = common::lockfile();
            command
                .env_remove("LOCKFILE_DB")
                .current_dir(dir)
                .args(["run", "--lock-db", db, "--lock-namespace", ns])
                .args(["--lease", &format!("{}s", LEASE.as_secs())])
                .arg("--dir")
                .arg(format!("{}::/data", dir.display()))
                .arg("--cache-dir")
                .arg(common::cache_dir())
                .arg(lockfile_tests::LOCKCTL_COMPONENT)
                .args(["lock", "job.lock", "{pid}", "0", "life", "life"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            command
        }
    };
    if !far_side {
        let mut command = command;
        return command.spawn().unwrap();
    }
    Command::new("ip")
        .args(["netns", "exec", &far.ns])
        .arg(command.get_program())
        .args(command.get_args())
        .current_dir(dir)
        .env_remove("LOCKFILE_DB")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// How the holder is cut off.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The server's end of the far machine's link goes down.
    Partition,
    /// The server ends the holder's session (what `pg_terminate_backend`
    /// does: SIGTERM to its server process).
    Terminate,
}

struct Outcome {
    takeover: Duration,
    margin_ms: i128,
}

fn trial(far: &Far, what: Holder, cut: Cut) -> Outcome {
    let _reconnect = matches!(cut, Cut::Partition).then(|| {
        link(far, "up");
        reachable(far);
        Reconnect(far)
    });
    let ns = format!("partition-{}-{:?}-{:?}", std::process::id(), what, cut);
    let old_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let new_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut old = holder(
        far,
        &ns,
        old_dir.path(),
        what,
        matches!(cut, Cut::Partition),
    );
    let start = Instant::now();
    while last_life(old_dir.path()).is_none() {
        if let Some(status) = old.try_wait().unwrap() {
            panic!(
                "{what:?}: the holder exited {status}: {}",
                stderr_of(&mut old)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what:?}: no sign of life from the holder's command"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut new = lockfile_exec(
        &far.near_db,
        &ns,
        new_dir.path(),
        &["--wait", "60s"],
        "date +%s%N >started",
    )
    .spawn()
    .unwrap();
    // The contender queues on the server before the cut.
    std::thread::sleep(Duration::from_millis(500));
    let cut_at = now_ns();
    match cut {
        Cut::Partition => link(far, "down"),
        Cut::Terminate => terminate_holder_session(far, &ns),
    }
    let new_status = wait_for(&mut new, Duration::from_secs(60), "the contender");
    let started: u128 = std::fs::read_to_string(new_dir.path().join("started"))
        .expect("the contender's command never ran")
        .trim()
        .parse()
        .unwrap();
    let old_status = wait_for(&mut old, Duration::from_secs(60), "the old holder");
    let last = last_life(old_dir.path()).unwrap();
    // Nothing the old command started goes on after it.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        last_life(old_dir.path()),
        Some(last),
        "the old command's tree went on after its holder exited"
    );
    let outcome = Outcome {
        takeover: Duration::from_nanos((started - cut_at) as u64),
        margin_ms: (started as i128 - last as i128) / 1_000_000,
    };
    eprintln!(
        "{what:?}, {cut:?}: takeover {:?} after the cut; the old command's last sign of life {} ms before the new one started; old holder {old_status}, {}",
        outcome.takeover,
        outcome.margin_ms,
        stderr_of(&mut old)
    );
    assert!(new_status.success(), "the contender: {new_status}");
    assert_eq!(old_status.code(), Some(76), "the old holder: {old_status}");
    assert!(
        last < started,
        "overlap: the old command lived {} ms after the new one started",
        (last - started) / 1_000_000
    );
    assert!(
        outcome.takeover <= LEASE + Duration::from_secs(2),
        "takeover took {:?}",
        outcome.takeover
    );
    outcome
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text.trim().replace('\n', " | ")
}

fn wait_for(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{what} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends the holder's session on the server, as `pg_terminate_backend` does.
fn terminate_holder_session(far: &Far, ns: &str) {
    let output = common::lockfile()
        .env_remove("LOCKFILE_DB")
        .args(["inspect", "--lock-db", &far.near_db, "--lock-namespace", ns])
        .arg("job.lock")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let pid: libc::pid_t = text
        .lines()
        .find_map(|line| line.strip_prefix("locked: yes (backend pid "))
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no holder's backend pid in: {text}"));
    common::signal(pid, libc::SIGTERM);
}

#[test]
fn a_partitioned_holder_has_stopped_before_the_next_starts() {
    let Some(far) = far() else { return };
    for what in [
        Holder::Exec(OnSigterm::Ends),
        Holder::Exec(OnSigterm::TakesNearlyTheGrace),
        Holder::Exec(OnSigterm::Ignores),
        Holder::Plugin,
    ] {
        trial(&far, what, Cut::Partition);
    }
}

#[test]
fn a_holder_whose_session_the_server_ends_has_stopped_before_the_next_starts() {
    let Some(far) = far() else { return };
    for what in [
        Holder::Exec(OnSigterm::TakesNearlyTheGrace),
        Holder::Exec(OnSigterm::Ignores),
        Holder::Plugin,
    ] {
        trial(&far, what, Cut::Terminate);
    }
}
