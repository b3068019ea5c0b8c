//! What the benchmarks measure, shared by the criterion benches and the
//! `compare` command that prints every figure from one run.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use lockfile_core::{Error, LockFile, LockOptions};

/// The floor: the bare system calls of one zc.lockfile cycle, through std
/// with nothing around them: open without truncating, flock, pwrite of
/// `" <pid>\n"` at 0, ftruncate, unlock, close.
pub fn floor_cycle(path: &Path, record: &[u8]) -> io::Result<()> {
    let file = open(path)?;
    file.try_lock().map_err(io::Error::from)?;
    file.write_all_at(record, 0)?;
    file.set_len(record.len() as u64)?;
    file.unlock()?;
    Ok(())
}

/// The floor of a failed try: open, flock refused, close.
pub fn floor_contended(path: &Path) -> io::Result<()> {
    let file = open(path)?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => Ok(()),
        other => panic!("expected the lock to be held: {other:?}"),
    }
}

/// The floor of a failed try that also reads the holder's record, which a
/// `Locked` error carries: open, flock refused, pread, close.
pub fn floor_contended_reading_holder(path: &Path) -> io::Result<()> {
    let file = open(path)?;
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut record = [0; 4096];
            let read = file.read_at(&mut record, 0)?;
            std::hint::black_box(&record[..read]);
            Ok(())
        }
        other => panic!("expected the lock to be held: {other:?}"),
    }
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// The record the floor writes, as zc.lockfile writes it.
pub fn pid_record() -> Vec<u8> {
    format!(" {}\n", std::process::id()).into_bytes()
}

/// One native acquire+release with zc.lockfile's defaults.
pub fn native_cycle(path: &Path) {
    LockFile::lock(path).unwrap().release();
}

/// One native failed try on a held lock (it reads the holder, as zc does not).
pub fn native_contended(path: &Path) {
    assert!(matches!(LockFile::lock(path), Err(Error::Locked { .. })));
}

/// The median of `samples` runs of `op`, each timed over `batch` calls.
pub fn median_ns(samples: usize, batch: u32, mut op: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..samples)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..batch {
                op();
            }
            start.elapsed().as_nanos() as f64 / f64::from(batch)
        })
        .collect();
    percentile(&mut times, 0.5)
}

/// The `q` quantile (0..=1) of `values`, sorting them.
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * q).round() as usize;
    values[index]
}

/// Wait handovers: a holder releases at a random point while a waiter waits
/// with [`LockOptions::wait`]; returns the microseconds from the holder's
/// release to the waiter holding the lock, one per round.
pub fn handovers(path: &Path, rounds: usize) -> Vec<f64> {
    let mut results = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let held = LockFile::lock(path).unwrap();
        let released = std::thread::scope(|scope| {
            let waiter = scope.spawn(|| {
                let lock = LockOptions::new()
                    .wait(Duration::from_secs(10))
                    .lock(path)
                    .unwrap();
                let taken = Instant::now();
                drop(lock);
                taken
            });
            // Hold for 0.2 to 5 ms, so the waiter is caught at every point of its backoff.
            std::thread::sleep(Duration::from_micros(200 + (round as u64 * 7919) % 4800));
            let released = Instant::now();
            held.release();
            (released, waiter.join().unwrap())
        });
        results.push(released.1.duration_since(released.0).as_secs_f64() * 1e6);
    }
    results
}

/// The wait this project had before it waited on events: a non-blocking try
/// every 20 µs doubling to 500 µs. Kept here only as the reference the
/// event-driven wait is measured against in the same run.
pub fn polling_lock(path: &Path, wait: Duration) -> LockFile {
    let start = Instant::now();
    let mut delay = Duration::from_micros(20);
    loop {
        match LockFile::lock(path) {
            Ok(lock) => return lock,
            Err(Error::Locked { .. }) if start.elapsed() < wait => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_micros(500));
            }
            Err(error) => panic!("{error}"),
        }
    }
}

/// What [`counter_race`] measured.
pub struct Race {
    /// From the start until every waiter had made all its increments.
    pub elapsed: Duration,
    /// The counter at the end: exactly `waiters * increments` if the lock
    /// excluded.
    pub count: u64,
    /// The longest any one take waited, in ms: how close to starving the
    /// unluckiest waiter came.
    pub longest_wait_ms: f64,
}

/// `waiters` threads each take the lock at `path` `increments` times through
/// `take`, and increment a counter file under it (read, 100 µs of work,
/// write), as zc.lockfile's own 50-thread test does.
pub fn counter_race(
    path: &Path,
    counter: &Path,
    waiters: usize,
    increments: usize,
    take: impl Fn(&Path) -> LockFile + Sync,
) -> Race {
    std::fs::write(counter, "0").unwrap();
    let start = Instant::now();
    let longest = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..waiters)
            .map(|_| {
                scope.spawn(|| {
                    let mut longest = Duration::ZERO;
                    for _ in 0..increments {
                        let asked = Instant::now();
                        let lock = take(path);
                        longest = longest.max(asked.elapsed());
                        let n: u64 = std::fs::read_to_string(counter).unwrap().parse().unwrap();
                        std::thread::sleep(Duration::from_micros(100));
                        std::fs::write(counter, (n + 1).to_string()).unwrap();
                        drop(lock);
                    }
                    longest
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .max()
            .unwrap_or_default()
    });
    Race {
        elapsed: start.elapsed(),
        count: std::fs::read_to_string(counter).unwrap().parse().unwrap(),
        longest_wait_ms: longest.as_secs_f64() * 1e3,
    }
}
