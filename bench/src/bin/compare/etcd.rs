//! etcd's figures, against the member of `LOCKFILE_TEST_ETCD` (`eval
//! "$(scripts/etcd start)"`; scripts/bench starts it): an acquire + release
//! cycle through lockfile-etcd over loopback against the bare `Lock` +
//! `Unlock` of etcd's own lock service on the same client and channel,
//! blocks alternated in the same run; and the handover between two
//! processes (this one and itself as a probe, waiting in the queue). Without
//! a member, one line says why they were skipped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockfile_bench::percentile;
use lockfile_etcd::EtcdLocker;
use tokio::runtime::Runtime;

use super::{Row, row, verdict};

/// The argument that makes `compare` the waiter of the handover.
pub const PROBE: &str = "--etcd-handover-probe";

/// How much to measure.
pub struct Counts {
    /// Alternated blocks of floor and lock cycles…
    pub blocks: usize,
    /// …of this many cycles each.
    pub per_block: u32,
    /// Handovers between the two processes.
    pub handovers: usize,
}

pub const FULL: Counts = Counts {
    blocks: 40,
    per_block: 200,
    handovers: 300,
};
pub const QUICK: Counts = Counts {
    blocks: 2,
    per_block: 5,
    handovers: 3,
};

/// Adds etcd's rows, or says why there are none.
pub fn measure(rows: &mut Vec<Row>, n: &Counts) {
    let Some(url) = std::env::var("LOCKFILE_TEST_ETCD")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!(
            "  (skipping etcd: LOCKFILE_TEST_ETCD is not set; `eval \"$(scripts/etcd start)\"` sets it, scripts/bench does)"
        );
        return;
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(error) => {
            println!("  (skipping etcd: no runtime: {error})");
            return;
        }
    };
    let ns = format!("compare-{}-{}", std::process::id(), wall_clock_ns());
    if let Err(error) = cycles(rows, &rt, &url, &ns, n) {
        println!("  (skipping the etcd cycle: {error})");
    }
    match handovers(&rt, &url, &ns, n.handovers) {
        Ok(mut times) => {
            let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
            row(
                rows,
                "etcd handover between two processes (loopback; release to the waiter holding it) p50 / p99",
                format!("{p50:.0} µs / {p99:.0} µs"),
                format!("p50 ≤ 5 ms: {}", verdict(p50 <= 5000.0)),
            );
        }
        Err(error) => println!("  (skipping the etcd handover: {error})"),
    }
}

fn runtime() -> std::io::Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

/// The floor and the cycle, blocks alternated so both see the same machine;
/// the per-cycle medians and the median of the blocks' ratios.
fn cycles(
    rows: &mut Vec<Row>,
    rt: &Runtime,
    url: &str,
    ns: &str,
    n: &Counts,
) -> Result<(), lockfile_etcd::Error> {
    let locker = rt.block_on(EtcdLocker::connect(url, ns))?;
    let record = Some(std::process::id().to_string());
    let floor_name = format!("{ns}/floor");
    let (mut floors, mut locks, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n.blocks {
        let floor = rt.block_on(locker.bare_cycles(&floor_name, n.per_block))?;
        let lock = rt.block_on(async {
            let start = Instant::now();
            for _ in 0..n.per_block {
                let lock = locker
                    .acquire("bench.lock", record.clone(), Duration::ZERO)
                    .await?;
                lock.release().await?;
            }
            Ok::<_, lockfile_etcd::Error>(start.elapsed())
        })?;
        let per = |d: Duration| d.as_secs_f64() * 1e6 / f64::from(n.per_block);
        floors.push(per(floor));
        locks.push(per(lock));
        ratios.push(per(lock) / per(floor));
    }
    let (floor, lock, ratio) = (
        percentile(&mut floors, 0.5),
        percentile(&mut locks, 0.5),
        percentile(&mut ratios, 0.5),
    );
    row(
        rows,
        "etcd floor cycle (its lock service's Lock + Unlock on one lease, loopback, same client)",
        format!("{floor:.1} µs"),
        "",
    );
    row(
        rows,
        "etcd cycle (lockfile-etcd acquire + release)",
        format!("{lock:.1} µs = {ratio:.2} × floor"),
        format!("≤ 1.5 × floor: {}", verdict(ratio <= 1.5)),
    );
    Ok(())
}

/// Handovers between this process and a probe (this binary again) waiting
/// in the queue: µs from the start of this process's release to the waiter
/// holding the lock, per round.
fn handovers(rt: &Runtime, url: &str, ns: &str, rounds: usize) -> Result<Vec<f64>, String> {
    let locker = rt
        .block_on(EtcdLocker::connect(url, ns))
        .map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(&exe)
        .args([PROBE, url, ns])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    let mut to_child = child.stdin.take().expect("piped");
    let mut from_child = BufReader::new(child.stdout.take().expect("piped"));
    let mut results = Vec::with_capacity(rounds);
    // The first round opens the waiter's lease and streams: not counted.
    for round in 0..=rounds {
        let lock = rt
            .block_on(locker.acquire("handover.lock", None, Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        writeln!(to_child, "go").map_err(|e| e.to_string())?;
        to_child.flush().map_err(|e| e.to_string())?;
        // Held 3 to 8 ms, varied: the waiter is queued by then.
        std::thread::sleep(Duration::from_micros(3000 + (round as u64 * 7919) % 5000));
        let released = wall_clock_ns();
        rt.block_on(lock.release()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        from_child.read_line(&mut line).map_err(|e| e.to_string())?;
        let taken: u128 = line
            .trim()
            .parse()
            .map_err(|_| format!("the probe said {line:?}"))?;
        if round > 0 {
            results.push((taken as f64 - released as f64) / 1e3);
        }
    }
    drop(to_child);
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("the probe exited with {status}"));
    }
    Ok(results)
}

/// The probe: for each line on stdin, waits for `handover.lock`, prints the
/// wall clock (ns) at which it holds it, and releases it.
pub fn probe(url: &str, ns: &str) -> anyhow::Result<()> {
    let rt = runtime()?;
    let locker = rt.block_on(EtcdLocker::connect(url, ns))?;
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        line?;
        let lock = rt.block_on(locker.acquire("handover.lock", None, Duration::from_secs(30)))?;
        let held = wall_clock_ns();
        writeln!(out, "{held}")?;
        out.flush()?;
        rt.block_on(lock.release())?;
    }
    Ok(())
}

fn wall_clock_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}
