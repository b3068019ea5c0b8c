//! Criterion benchmarks of one lock cycle and one failed try: the syscall
//! floor, the native lock, and the same from inside a plugin.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use lockfile_bench::{floor_contended, floor_cycle, native_contended, native_cycle, pid_record};
use lockfile_core::LockFile;
use lockfile_tests::{LOCKCTL_COMPONENT, run};

fn cycle(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.lock");
    let record = pid_record();
    let mut group = c.benchmark_group("cycle");
    group.bench_function("floor", |b| b.iter(|| floor_cycle(&path, &record).unwrap()));
    group.bench_function("native", |b| b.iter(|| native_cycle(&path)));
    group.bench_function("plugin", |b| {
        b.iter_custom(|iters| plugin_loop(dir.path(), "cycles", iters, "cycle-ns"))
    });
    group.finish();
}

fn contended(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.lock");
    let _held = LockFile::lock(&path).unwrap();
    let mut group = c.benchmark_group("contended");
    group.bench_function("floor", |b| b.iter(|| floor_contended(&path).unwrap()));
    group.bench_function("native", |b| b.iter(|| native_contended(&path)));
    group.bench_function("plugin", |b| {
        b.iter_custom(|iters| plugin_loop(dir.path(), "tries", iters, "try-ns"))
    });
    group.finish();
}

/// Runs `iters` operations in a loop inside the plugin, which times them itself,
/// so instantiation is not counted.
fn plugin_loop(dir: &std::path::Path, step: &str, iters: u64, label: &str) -> Duration {
    let iters = iters.max(1).to_string();
    let lock = if step == "cycles" {
        "bench.lock"
    } else {
        "held.lock"
    };
    let out = run(LOCKCTL_COMPONENT, dir, None, &[step, &iters, lock], |b| b);
    let per_op: u64 = out
        .stdout
        .trim()
        .strip_prefix(label)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Duration::from_nanos(per_op * iters.parse::<u64>().unwrap())
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    targets = cycle, contended
}
criterion_main!(benches);
