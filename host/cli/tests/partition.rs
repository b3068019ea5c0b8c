//! A holder cut off from the lock database by a real partition: its
//! `lockfile exec --lock-db` runs on the "far machine" of `scripts/postgres`
//! (a network namespace joined to the server by a veth pair), and the test
//! takes the server's end of the link down, so that the holder's packets
//! vanish silently. A contender on the server's machine waits for the lock.
//! In every trial, the old command's last sign of life must come before the
//! new command starts, and the takeover must come within the lease plus 2 s.
//!
//! The same for a holder whose session the server ends
//! (`pg_terminate_backend`, which is a SIGTERM to its server process) and a
//! server restart, and for a plugin holding the lock under `lockfile run`.
//! On etcd (`scripts/etcd start`): the partition, and the death of the
//! leader of a cluster of three that the holder alone reached.
//!
//! Needs root and the far machine (`LOCKFILE_TEST_FAR_*`, which
//! `scripts/postgres start` and `scripts/etcd start` print when they could
//! make it); without them the trials say why and check nothing, except under
//! CI=true, where they fail.
//! Its own binary, its tests one at a time: the link it takes down is the
//! far machine's only one, and a restart cuts every session.

#[allow(dead_code)]
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The lease of these trials: short, so that each takes seconds; its grace
/// is a third of it (2 s), as `lockfile` makes it for a short lease.
const SHORT_LEASE: Duration = Duration::from_secs(6);

/// The settings of a run: CI's short lease once per kind of holder, or,
/// with `LOCKFILE_PARTITION_DEFAULTS=1`, the default lease (15 s, grace
/// 5 s), and `LOCKFILE_PARTITION_TRIALS` rounds of every kind.
struct Settings {
    /// `None`: the default.
    lease: Option<Duration>,
    rounds: usize,
}

impl Settings {
    fn from_env() -> Self {
        let defaults = std::env::var("LOCKFILE_PARTITION_DEFAULTS").as_deref() == Ok("1");
        let rounds = std::env::var("LOCKFILE_PARTITION_TRIALS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        Settings {
            lease: (!defaults).then_some(SHORT_LEASE),
            rounds,
        }
    }

    fn lease(&self) -> Duration {
        self.lease.unwrap_or(Duration::from_secs(15))
    }

    fn grace(&self) -> Duration {
        (self.lease() / 3).min(Duration::from_secs(5))
    }

    /// The `--lease` option, if not the default.
    fn options(&self) -> Vec<String> {
        self.lease
            .map(|lease| vec!["--lease".to_owned(), format!("{}s", lease.as_secs())])
            .unwrap_or_default()
    }
}

/// What the holder's COMMAND does with SIGTERM. Each appends the wall clock
/// (ns) to `life` every 20 ms while it runs: its signs of life.
#[derive(Debug, Clone, Copy)]
enum OnSigterm {
    /// Ends at once.
    Ends,
    /// Goes on for nine tenths of the grace, still showing life.
    TakesNearlyTheGrace,
    /// Ignores it, and must be killed.
    Ignores,
}

impl OnSigterm {
    fn script(self, grace: Duration) -> String {
        const LIFE: &str = "while :; do date +%s%N >>life; sleep 0.02; done";
        match self {
            OnSigterm::Ends => LIFE.to_owned(),
            OnSigterm::TakesNearlyTheGrace => format!(
                "trap 'i=0; while [ $i -lt {} ]; do date +%s%N >>life; sleep 0.1; i=$((i+1)); done; exit 0' TERM; {LIFE}",
                grace.as_millis() * 9 / 10 / 100
            ),
            OnSigterm::Ignores => format!("trap '' TERM; {LIFE}"),
        }
    }
}

struct Far {
    ns: String,
    link: String,
    postgres: Server,
    etcd: Server,
}

/// A lock server as the holder reaches it (from the far machine, except
/// where the trial says) and as the contender does.
#[derive(Clone)]
struct Server {
    far: String,
    near: String,
}

/// The far machine, or why there is none (a panic under CI=true).
fn far() -> Option<Far> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let found = (|| {
        Some(Far {
            ns: var("LOCKFILE_TEST_FAR_NS")?,
            link: var("LOCKFILE_TEST_FAR_LINK")?,
            postgres: Server {
                far: var("LOCKFILE_TEST_FAR_DB")?,
                near: var("LOCKFILE_TEST_DB")?,
            },
            etcd: Server {
                far: var("LOCKFILE_TEST_FAR_ETCD")?,
                near: var("LOCKFILE_TEST_ETCD")?,
            },
        })
    })();
    if found.is_none() {
        let why = "no far machine: run `eval \"$(scripts/postgres start)\"; eval \"$(scripts/etcd start)\"` as root on Linux, which make it and print LOCKFILE_TEST_FAR_*";
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
fn reachable(far: &Far, server: &Server) {
    // scheme://[user@]host:port[/db]
    let after_scheme = server.far.split_once("://").unwrap().1;
    let after_user = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, rest)| rest);
    let address = after_user.split(['/', '?', ',']).next().unwrap();
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

fn lockfile_exec(
    settings: &Settings,
    db: &str,
    ns: &str,
    dir: &Path,
    extra: &[&str],
    script: &str,
) -> Command {
    let mut command = common::lockfile();
    command
        .env_remove("LOCKFILE_DB")
        .current_dir(dir)
        .args(["exec", "--lock-db", db, "--lock-namespace", ns])
        .args(settings.options())
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
fn holder(
    settings: &Settings,
    far: &Far,
    server: &Server,
    ns: &str,
    dir: &Path,
    what: Holder,
    far_side: bool,
) -> Child {
    let db = &server.far;
    let command = match what {
        Holder::Exec(on_sigterm) => lockfile_exec(
            settings,
            db,
            ns,
            dir,
            &[],
            &on_sigterm.script(settings.grace()),
        ),
        Holder::Plugin => {
            let mut command = common::lockfile();
            command
                .env_remove("LOCKFILE_DB")
                .current_dir(dir)
                .args(["run", "--lock-db", db, "--lock-namespace", ns])
                .args(settings.options())
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
    /// The server restarts (`scripts/postgres restart`, fast mode: every
    /// session is cut); the contender comes after it.
    Restart,
    /// The leader of etcd's cluster of three, the one member the holder
    /// reaches (on this machine), is killed (`scripts/etcd kill-leader`);
    /// the contender reaches the other two.
    LeaderKill,
}

impl Cut {
    /// Whether the holder runs on the far machine.
    fn far_side(self) -> bool {
        matches!(self, Cut::Partition)
    }
}

struct Outcome {
    takeover: Duration,
    margin_ms: i128,
}

fn trial(settings: &Settings, far: &Far, server: &Server, what: Holder, cut: Cut) -> Outcome {
    let _reconnect = matches!(cut, Cut::Partition).then(|| {
        link(far, "up");
        reachable(far, server);
        Reconnect(far)
    });
    let ns = format!("partition-{}-{:?}-{:?}", std::process::id(), what, cut);
    let old_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let new_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut old = holder(
        settings,
        far,
        server,
        &ns,
        old_dir.path(),
        what,
        cut.far_side(),
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
    let contender = || {
        lockfile_exec(
            settings,
            &server.near,
            &ns,
            new_dir.path(),
            &["--wait", "60s"],
            "date +%s%N >started",
        )
        .spawn()
        .unwrap()
    };
    // The contender queues on the server before the cut (after a restart,
    // which would cut it off too).
    let early = (!matches!(cut, Cut::Restart)).then(contender);
    std::thread::sleep(Duration::from_millis(500));
    let mut cut_at = now_ns();
    match cut {
        Cut::Partition => link(far, "down"),
        Cut::Terminate => terminate_holder_session(server, &ns),
        Cut::Restart => {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres");
            let restarted = Command::new(script).arg("restart").status().unwrap();
            assert!(restarted.success(), "scripts/postgres restart");
        }
        // From the kill itself, not from the start of the script, which
        // asks the members for the leader first.
        Cut::LeaderKill => cut_at = etcd_output("kill-leader").trim().parse().unwrap(),
    }
    let mut new = early.unwrap_or_else(contender);
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
        outcome.takeover <= settings.lease() + Duration::from_secs(2),
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
fn terminate_holder_session(server: &Server, ns: &str) {
    let output = common::lockfile()
        .env_remove("LOCKFILE_DB")
        .args(["inspect", "--lock-db", &server.near, "--lock-namespace", ns])
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

/// Every kind of holder, `rounds` times each; prints the worst margin (the
/// new command's start less the old one's last sign of life: negative would
/// be an overlap) and the takeover's p50 / p99 / worst.
fn trials(settings: &Settings, far: &Far, server: &Server, kinds: &[Holder], cut: Cut) {
    let mut outcomes = Vec::new();
    for _ in 0..settings.rounds {
        for &what in kinds {
            if matches!(cut, Cut::LeaderKill) {
                // The member killed last time back, and the leader's the
                // holder's only endpoint.
                etcd_script("start");
                let leader = etcd_output("leader");
                let leader = leader.split_whitespace().nth(1).unwrap().to_owned();
                let cluster = std::env::var("LOCKFILE_TEST_ETCD_CLUSTER").unwrap();
                let others: Vec<&str> = cluster
                    .trim_start_matches("etcd://")
                    .split(',')
                    .filter(|member| *member != leader)
                    .collect();
                let server = Server {
                    far: format!("etcd://{leader}"),
                    near: format!("etcd://{}", others.join(",")),
                };
                outcomes.push(trial(settings, far, &server, what, cut));
            } else {
                outcomes.push(trial(settings, far, server, what, cut));
            }
            if settings.rounds > 1 {
                eprintln!(
                    "{cut:?}: trial {} of {}",
                    outcomes.len(),
                    settings.rounds * kinds.len()
                );
            }
        }
    }
    let mut takeovers: Vec<Duration> = outcomes.iter().map(|o| o.takeover).collect();
    takeovers.sort();
    let at = |q: f64| takeovers[((takeovers.len() - 1) as f64 * q).round() as usize];
    let worst_margin = outcomes.iter().map(|o| o.margin_ms).min().unwrap();
    eprintln!(
        "{cut:?}, {} trials, lease {:?}: takeover p50 {:?}, p99 {:?}, worst {:?}; worst margin {worst_margin} ms (no overlap)",
        outcomes.len(),
        settings.lease(),
        at(0.5),
        at(0.99),
        takeovers.last().unwrap()
    );
}

/// The tests of this binary one at a time: a restart cuts every session.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_partitioned_holder_has_stopped_before_the_next_starts() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(far) = far() else { return };
    let kinds = [
        Holder::Exec(OnSigterm::Ends),
        Holder::Exec(OnSigterm::TakesNearlyTheGrace),
        Holder::Exec(OnSigterm::Ignores),
        Holder::Plugin,
    ];
    trials(
        &Settings::from_env(),
        &far,
        &far.postgres,
        &kinds,
        Cut::Partition,
    );
}

#[test]
fn a_holder_whose_session_the_server_ends_has_stopped_before_the_next_starts() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(far) = far() else { return };
    let kinds = [
        Holder::Exec(OnSigterm::TakesNearlyTheGrace),
        Holder::Exec(OnSigterm::Ignores),
        Holder::Plugin,
    ];
    trials(
        &Settings::from_env(),
        &far,
        &far.postgres,
        &kinds,
        Cut::Terminate,
    );
}

/// A server restart cuts the holder's session: it is stopped at once, and
/// the next holder, after the restart, waits out its lease (kept on the
/// server's disk).
#[test]
fn after_a_server_restart_the_next_holder_waits_out_the_old_lease() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(far) = far() else { return };
    let kinds = [Holder::Exec(OnSigterm::Ignores), Holder::Plugin];
    trials(
        &Settings::from_env(),
        &far,
        &far.postgres,
        &kinds,
        Cut::Restart,
    );
}

#[test]
fn an_etcd_holder_cut_off_by_a_partition_has_stopped_before_the_next_starts() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(far) = far() else { return };
    let kinds = [
        Holder::Exec(OnSigterm::Ends),
        Holder::Exec(OnSigterm::TakesNearlyTheGrace),
        Holder::Exec(OnSigterm::Ignores),
        Holder::Plugin,
    ];
    trials(
        &Settings::from_env(),
        &far,
        &far.etcd,
        &kinds,
        Cut::Partition,
    );
}

/// The holder reaches only the leader of a cluster of three, which dies: the
/// holder cannot renew its lease, and is stopped by its own clock; the
/// cluster elects another leader (which extends every lease by its election
/// timeout), ends the old lease, and the contender, on the other two
/// members, gets the lock.
#[test]
fn after_the_etcd_leader_dies_the_holder_that_reached_only_it_has_stopped_before_the_next_starts() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(far) = far() else { return };
    assert!(
        std::env::var("LOCKFILE_TEST_ETCD_CLUSTER").is_ok(),
        "no LOCKFILE_TEST_ETCD_CLUSTER: run `eval \"$(scripts/etcd start)\"`"
    );
    let kinds = [Holder::Exec(OnSigterm::Ignores), Holder::Plugin];
    trials(
        &Settings::from_env(),
        &far,
        &far.etcd,
        &kinds,
        Cut::LeaderKill,
    );
    etcd_script("start");
}

fn etcd_script(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/etcd");
    let out = Command::new(script)
        .arg(command)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(out.success(), "scripts/etcd {command}");
}

fn etcd_output(command: &str) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/etcd");
    // Its progress lines ("killed member 3, the leader") go to the test's
    // output, as etcd_script's do.
    let out = Command::new(script)
        .arg(command)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/etcd {command}");
    String::from_utf8(out.stdout).unwrap()
}
