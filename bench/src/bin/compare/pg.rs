//! The lock database's figures, against the PostgreSQL server of
//! `LOCKFILE_TEST_DB` (`eval "$(scripts/postgres start)"`; scripts/bench
//! starts one): an acquire+release cycle through lockfile-postgres over
//! loopback against the bare `pg_try_advisory_lock` + `pg_advisory_unlock`
//! round trips measured in the same run, on the very session the cycle uses
//! next (same client, connection and server process), with TLS and
//! without; and the handover between two processes through the server.
//! Without a server, one line says why they were skipped.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lockfile_bench::percentile;
use lockfile_postgres::{ADVISORY_KEY_BASE, PgLocker};
use tokio::runtime::Runtime;

use super::{Row, row, verdict};

/// How much to measure.
pub struct Counts {
    /// Alternated blocks of floor and lock cycles…
    pub blocks: usize,
    /// …of this many cycles each.
    pub per_block: u32,
    /// Handovers between the two processes.
    pub handovers: usize,
    /// Locks one process takes and holds at once.
    pub many: usize,
}

pub const FULL: Counts = Counts {
    blocks: 40,
    per_block: 500,
    handovers: 300,
    many: 500,
};
pub const QUICK: Counts = Counts {
    blocks: 2,
    per_block: 5,
    handovers: 3,
    many: 5,
};

/// Adds the database's rows, or says why there are none.
pub fn measure(rows: &mut Vec<Row>, n: &Counts) {
    let Some(url) = std::env::var("LOCKFILE_TEST_DB")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!(
            "  (skipping PostgreSQL: LOCKFILE_TEST_DB is not set; `eval \"$(scripts/postgres start)\"` sets it, scripts/bench does)"
        );
        return;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            println!("  (skipping PostgreSQL: no runtime: {error})");
            return;
        }
    };
    let ns = namespace();
    for mode in ["require", "disable"] {
        let url = with_sslmode(&url, mode);
        if let Err(error) = cycles(rows, &rt, &url, &ns, n) {
            println!("  (skipping the PostgreSQL cycle with sslmode={mode}: {error})");
        }
    }
    if let Err(error) = many(rows, &rt, &url, &ns, n.many) {
        println!("  (skipping the PostgreSQL many-locks row: {error})");
    }
    match handovers(&rt, &url, &ns, n.handovers) {
        Ok((kind, mut times)) => {
            let (p50, p99) = (percentile(&mut times, 0.5), percentile(&mut times, 0.99));
            row(
                rows,
                &format!(
                    "PostgreSQL handover between two processes ({kind}; release to the waiter holding it) p50 / p99"
                ),
                format!("{p50:.0} µs / {p99:.0} µs"),
                format!("p50 ≤ 1 ms: {}", verdict(p50 <= 1000.0)),
            );
        }
        Err(error) => println!("  (skipping the PostgreSQL handover: {error})"),
    }
}

/// The floor and the cycle, blocks alternated so both see the same machine;
/// the per-cycle medians and the median of the blocks' ratios.
fn cycles(
    rows: &mut Vec<Row>,
    rt: &Runtime,
    url: &str,
    ns: &str,
    n: &Counts,
) -> Result<(), lockfile_postgres::Error> {
    let locker = rt.block_on(PgLocker::connect(url, ns))?;
    let kind = kind(rt.block_on(locker.lock_session_encrypted())?);
    let record = Some(std::process::id().to_string());
    // Below the crate's keys, never a lock's; one per process, so that two
    // runs on one server do not take each other's floor.
    let floor_key = ADVISORY_KEY_BASE - 1 - i64::from(std::process::id());
    let (mut floors, mut locks, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n.blocks {
        let floor = rt.block_on(locker.bare_cycles(floor_key, n.per_block, true))?;
        let lock = rt.block_on(async {
            let start = std::time::Instant::now();
            for _ in 0..n.per_block {
                let lock = locker
                    .acquire("bench.lock", record.clone(), Duration::ZERO)
                    .await?;
                lock.release().await?;
            }
            Ok::<_, lockfile_postgres::Error>(start.elapsed())
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
        &format!(
            "PostgreSQL floor cycle (pg_try_advisory_lock + pg_advisory_unlock, loopback TCP, {kind})"
        ),
        format!("{floor:.1} µs"),
        "",
    );
    row(
        rows,
        &format!("PostgreSQL cycle (lockfile-postgres acquire + release, {kind})"),
        format!("{lock:.1} µs = {ratio:.2} × floor"),
        format!("≤ 1.5 × floor: {}", verdict(ratio <= 1.5)),
    );
    Ok(())
}

/// `count` locks taken one after another by one process and held together,
/// then released: the time to take them, and the server connections it used
/// (from `pg_stat_activity`, by an application_name of its own).
fn many(
    rows: &mut Vec<Row>,
    rt: &Runtime,
    url: &str,
    ns: &str,
    count: usize,
) -> Result<(), lockfile_postgres::Error> {
    let app = format!("bench-many-{}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    let named = format!("{url}{separator}application_name={app}");
    let locker = rt.block_on(PgLocker::connect(&named, ns))?;
    let observer = rt.block_on(PgLocker::connect(url, ns))?;
    let (took, connections) = rt.block_on(async {
        let start = std::time::Instant::now();
        let mut held = Vec::with_capacity(count);
        for i in 0..count {
            held.push(
                locker
                    .acquire(&format!("many-{i}.lock"), None, Duration::ZERO)
                    .await?,
            );
        }
        let took = start.elapsed();
        let connections = observer.connections_named(&app).await?;
        for lock in held {
            lock.release().await?;
        }
        Ok::<_, lockfile_postgres::Error>((took, connections))
    })?;
    row(
        rows,
        &format!("PostgreSQL: {count} locks taken one after another and held by one process"),
        format!(
            "{:.0} ms ({:.0} µs a lock), over {connections} connections",
            took.as_secs_f64() * 1e3,
            took.as_secs_f64() * 1e6 / count as f64
        ),
        format!("≤ 8 connections: {}", verdict(connections <= 8)),
    );
    Ok(())
}

/// Handovers between this process and a `pg-lock-probe` waiting in the
/// server's queue: µs from the start of this process's release to the
/// waiter holding the lock, per round, and the connection's kind.
fn handovers(
    rt: &Runtime,
    url: &str,
    ns: &str,
    rounds: usize,
) -> Result<(&'static str, Vec<f64>), String> {
    let probe = probe_exe()?;
    let locker = rt
        .block_on(PgLocker::connect(url, ns))
        .map_err(|e| e.to_string())?;
    let kind = kind(
        rt.block_on(locker.lock_session_encrypted())
            .map_err(|e| e.to_string())?,
    );
    let mut child = Command::new(&probe)
        .args(["--url", url, "--namespace", ns, "handover", "handover.lock"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", probe.display()))?;
    let mut to_child = child.stdin.take().expect("piped");
    let mut from_child = BufReader::new(child.stdout.take().expect("piped"));
    let mut results = Vec::with_capacity(rounds);
    // The first round opens the waiter's sessions: not counted.
    for round in 0..=rounds {
        let lock = rt
            .block_on(locker.acquire("handover.lock", None, Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        writeln!(to_child, "go").map_err(|e| e.to_string())?;
        to_child.flush().map_err(|e| e.to_string())?;
        // Held 3 to 8 ms, varied: the waiter is queued on the server by
        // then, and its wait is caught at every point.
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
    Ok((kind, results))
}

/// `pg-lock-probe`, built beside this binary (`cargo build -p
/// lockfile-postgres-tests`; scripts/bench and scripts/test build it).
fn probe_exe() -> Result<PathBuf, String> {
    let exe = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("pg-lock-probe");
    if !exe.exists() {
        return Err(format!(
            "build {} first (cargo build -p lockfile-postgres-tests)",
            exe.display()
        ));
    }
    Ok(exe)
}

/// `url` with `sslmode=MODE` in place of any it had.
fn with_sslmode(url: &str, mode: &str) -> String {
    let (base, query) = match url.split_once('@') {
        Some((credentials, rest)) => match rest.split_once('?') {
            Some((rest, query)) => (format!("{credentials}@{rest}"), query),
            None => (url.to_owned(), ""),
        },
        None => match url.split_once('?') {
            Some((base, query)) => (base.to_owned(), query),
            None => (url.to_owned(), ""),
        },
    };
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode="))
        .collect();
    let mode = format!("sslmode={mode}");
    params.push(&mode);
    format!("{base}?{}", params.join("&"))
}

fn kind(encrypted: bool) -> &'static str {
    if encrypted { "TLS" } else { "no TLS" }
}

/// A namespace of this run's own.
fn namespace() -> String {
    format!("compare-{}-{}", std::process::id(), wall_clock_ns())
}

fn wall_clock_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos()
}

#[cfg(test)]
mod tests {
    use super::with_sslmode;

    #[test]
    fn sslmode_is_replaced_or_added() {
        assert_eq!(
            with_sslmode("postgres://u:p@h:1/db", "disable"),
            "postgres://u:p@h:1/db?sslmode=disable"
        );
        assert_eq!(
            with_sslmode("postgres://u:p?x@h/db?sslmode=prefer&a=b", "require"),
            "postgres://u:p?x@h/db?a=b&sslmode=require"
        );
        assert_eq!(
            with_sslmode("postgres://h/db?a=b", "require"),
            "postgres://h/db?a=b&sslmode=require"
        );
    }
}
