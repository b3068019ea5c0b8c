//! What a lock costs on PostgreSQL over loopback, against the bare advisory
//! lock calls measured in the same run, and the handover between two
//! processes through the server.
//!
//! ```sh
//! eval "$(scripts/postgres start)"
//! cargo bench -p lockfile-postgres-tests --bench pg
//! ```
//!
//! The floor runs on the very session the lock uses next (same client, same
//! connection, same server process): on a small VM a round trip costs 17 µs
//! or 50 µs depending on whether the server process shares the client's CPU,
//! so a floor on another connection would compare placements, not costs.
//! The ratios come from blocks of floor and lock cycles alternated.
//!
//! Without `--bench` (as `cargo test --benches` runs it) every measurement
//! runs briefly, as a smoke test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::Criterion;
use lockfile_postgres::{ADVISORY_KEY_BASE, PgLocker};
use tokio::runtime::Runtime;

/// The floor's key: below the crate's keys, never a lock's.
const FLOOR_KEY: i64 = ADVISORY_KEY_BASE - 1;

fn db_url() -> String {
    std::env::var("LOCKFILE_TEST_DB").unwrap_or_else(|_| {
        panic!("LOCKFILE_TEST_DB is not set: run `eval \"$(scripts/postgres start)\"` first")
    })
}

fn namespace() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench-{}-{nanos}", std::process::id())
}

/// One thread runs the client and its connection tasks: the quickest
/// round trips, for the floor and the lock alike.
fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

struct Setup {
    locker: PgLocker,
    record: Option<String>,
    /// Another process's lock, for failed tries, and its key.
    _held: lockfile_postgres::PgLock,
    held_key: i64,
}

fn setup(rt: &Runtime, ns: &str) -> Setup {
    let url = db_url();
    let locker = rt.block_on(PgLocker::connect(&url, ns)).unwrap();
    let other = rt.block_on(PgLocker::connect(&url, ns)).unwrap();
    let record = Some(std::process::id().to_string());
    let held = rt
        .block_on(other.acquire("held.lock", Some("other holder".into()), Duration::ZERO))
        .unwrap();
    let held_key = rt
        .block_on(locker.inspect("held.lock"))
        .unwrap()
        .key
        .unwrap();
    Setup {
        locker,
        record,
        _held: held,
        held_key,
    }
}

async fn cycles(setup: &Setup, iterations: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        let lock = setup
            .locker
            .acquire("bench.lock", setup.record.clone(), Duration::ZERO)
            .await
            .unwrap();
        lock.release().await.unwrap();
    }
    start.elapsed()
}

async fn failed_tries(setup: &Setup, iterations: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iterations {
        let error = setup
            .locker
            .acquire("held.lock", None, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(error.holder(), Some("other holder"));
    }
    start.elapsed()
}

async fn floor(setup: &Setup, iterations: u64, key: i64, unlock: bool) -> Duration {
    let iterations = u32::try_from(iterations).unwrap();
    setup
        .locker
        .bare_cycles(key, iterations, unlock)
        .await
        .unwrap()
}

fn bench(c: &mut Criterion, rt: &Runtime, setup: &Setup) {
    let mut group = c.benchmark_group("postgres");
    group.bench_function(
        "floor cycle (pg_try_advisory_lock + pg_advisory_unlock)",
        |b| b.iter_custom(|n| rt.block_on(floor(setup, n, FLOOR_KEY, true))),
    );
    group.bench_function("cycle (acquire + release)", |b| {
        b.iter_custom(|n| rt.block_on(cycles(setup, n)))
    });
    group.bench_function("floor failed try (pg_try_advisory_lock)", |b| {
        b.iter_custom(|n| rt.block_on(floor(setup, n, setup.held_key, false)))
    });
    group.bench_function("failed try (acquire: Locked, with the record)", |b| {
        b.iter_custom(|n| rt.block_on(failed_tries(setup, n)))
    });
    group.finish();
}

/// Per-iteration medians (µs) of the floor and the measured code, and the
/// median of their per-block ratios, from `blocks` alternated blocks.
fn interleaved(
    rt: &Runtime,
    blocks: usize,
    per_block: u64,
    mut floor_block: impl FnMut(u64) -> Duration,
    mut code_block: impl FnMut(u64) -> Duration,
) -> (f64, f64, f64) {
    let (mut floors, mut codes, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let _enter = rt.enter();
    for _ in 0..blocks {
        let floor = floor_block(per_block).as_secs_f64() * 1e6 / per_block as f64;
        let code = code_block(per_block).as_secs_f64() * 1e6 / per_block as f64;
        floors.push(floor);
        codes.push(code);
        ratios.push(code / floor);
    }
    (
        percentile(&mut floors, 0.5),
        percentile(&mut codes, 0.5),
        percentile(&mut ratios, 0.5),
    )
}

/// Handovers between two processes: this one releases while the probe
/// process waits in the server's queue; the time from the start of the
/// release to the waiter holding the lock, in microseconds, per round.
fn handovers(rt: &Runtime, ns: &str, rounds: usize) -> Vec<f64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pg-lock-probe"))
        .args(["--namespace", ns, "handover", "handover.lock"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap());
    let locker = rt.block_on(PgLocker::connect(&db_url(), ns)).unwrap();
    let mut results = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let lock = rt
            .block_on(locker.acquire("handover.lock", None, Duration::from_secs(30)))
            .unwrap();
        writeln!(to_child, "go").unwrap();
        to_child.flush().unwrap();
        // Hold 3 to 8 ms: the waiter is queued on the server by then.
        std::thread::sleep(Duration::from_micros(3000 + (round as u64 * 7919) % 5000));
        let released = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        rt.block_on(lock.release()).unwrap();
        let mut line = String::new();
        from_child.read_line(&mut line).unwrap();
        let taken: u128 = line.trim().parse().expect("the probe's clock");
        results.push((taken as f64 - released.as_nanos() as f64) / 1000.0);
    }
    drop(to_child);
    assert!(child.wait().unwrap().success());
    results
}

fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let full = std::env::args().any(|arg| arg == "--bench");
    let rt = runtime();
    let ns = namespace();
    let setup = setup(&rt, &ns);
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion, &rt, &setup);
    criterion.final_summary();

    let (blocks, per_block) = if full { (40, 500) } else { (2, 5) };
    let (floor_us, cycle_us, ratio) = interleaved(
        &rt,
        blocks,
        per_block,
        |n| rt.block_on(floor(&setup, n, FLOOR_KEY, true)),
        |n| rt.block_on(cycles(&setup, n)),
    );
    println!(
        "postgres/cycle, interleaved ({blocks} blocks of {per_block}; medians): \
         floor {floor_us:.1} µs, cycle {cycle_us:.1} µs = {ratio:.2} x floor"
    );
    let (floor_us, failed_us, ratio) = interleaved(
        &rt,
        blocks,
        per_block,
        |n| rt.block_on(floor(&setup, n, setup.held_key, false)),
        |n| rt.block_on(failed_tries(&setup, n)),
    );
    println!(
        "postgres/failed try, interleaved ({blocks} blocks of {per_block}; medians): \
         floor {floor_us:.1} µs, failed try {failed_us:.1} µs = {ratio:.2} x floor"
    );

    let mut handover = handovers(&rt, &ns, if full { 300 } else { 5 });
    let (p50, p99) = (
        percentile(&mut handover, 0.5),
        percentile(&mut handover, 0.99),
    );
    println!(
        "postgres/handover between two processes: p50 {p50:.0} µs, p99 {p99:.0} µs ({} rounds)",
        handover.len()
    );
}
