//! Spent release watches are emptied and closed off the waiter's path, by a
//! background thread when need be (the kernel's close waits for an RCU grace
//! period). Three things about that thread were each measured to cost a
//! cross-process handover (issue 11's benchmark) a share of its ~100 µs:
//!
//! - it must exist before the waiter is woken: started on the first drop, it
//!   cost a few hundred microseconds between the release and the waiter's
//!   return with the lock;
//! - it must never push a waiter aside: at normal priority, woken as the
//!   waiter returned with the lock, it ran first on the waiter's CPU (~25 µs).
//!   It runs at nice 19;
//! - one wait's drop must not wake it at all: the waker pays for the wake-up
//!   (on a VM, an interrupt to the idle CPU; 20-50 µs at the median). A later
//!   watch reuses the spent one; only a second spent one wakes the thread.
//!
//! Its own test binary, with one test: no other test in this process can have
//! started the thread first.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use lockfile_core::ReleaseWatch;

/// Linux shortens thread names to 15 bytes.
const RECYCLER: &str = "lockfile-inotif";

/// One of this process's threads, from /proc.
#[derive(Debug)]
struct Thread {
    name: String,
    /// `S` while it sleeps, `R` while it runs or waits for a CPU.
    state: char,
    nice: i32,
    /// Voluntary context switches: how often it went to sleep, so one more
    /// each time it is woken.
    sleeps: u64,
}

fn threads() -> Vec<Thread> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let task = task.ok()?.path();
            let name = std::fs::read_to_string(task.join("comm")).ok()?;
            // Fields of stat from the state (field 3) on, after the name's
            // closing parenthesis (the name may hold spaces).
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            let state = fields.first()?.chars().next()?;
            let nice = fields.get(19 - 3)?.parse().ok()?;
            let status = std::fs::read_to_string(task.join("status")).ok()?;
            let sleeps = status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))?
                .trim()
                .parse()
                .ok()?;
            Some(Thread {
                name: name.trim_end().to_owned(),
                state,
                nice,
                sleeps,
            })
        })
        .collect()
}

fn recycler() -> Option<Thread> {
    threads().into_iter().find(|thread| thread.name == RECYCLER)
}

/// Waits until `done` holds of the recycler thread. The 10 s are a liveness
/// bound for a loaded machine, not a measure.
fn wait_for(what: &str, done: impl Fn(&Thread) -> bool) -> Thread {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match recycler() {
            Some(thread) if done(&thread) => return thread,
            thread => assert!(Instant::now() < deadline, "{what}: {thread:?}"),
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_recycling_thread_starts_early_yields_and_sleeps_through_one_drop() {
    assert!(
        recycler().is_none(),
        "no watch yet, so no recycling thread: {:?}",
        threads()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("job.lock")).unwrap();
    let watch = ReleaseWatch::new(&file).unwrap();
    wait_for(
        "a watch exists, so its recycling thread must already run",
        |_| true,
    );
    wait_for(
        "the recycling thread must run at the lowest priority (nice 19)",
        |thread| thread.nice == 19,
    );

    // Asleep, waiting for work: sleeping, and its count of sleeps stops
    // moving (a thread starved before its first wait would show neither).
    let mut asleep = wait_for("the recycling thread must go to sleep", |thread| {
        thread.state == 'S'
    })
    .sleeps;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let now = wait_for("the recycling thread must go back to sleep", |thread| {
            thread.state == 'S'
        })
        .sleeps;
        if now == asleep {
            break;
        }
        asleep = now;
    }
    drop(watch);
    // Long enough for a woken nice-19 thread to run on a machine whose
    // other work sleeps (this thread does); a thread woken later would let
    // this pass, never fail it.
    std::thread::sleep(Duration::from_millis(200));
    let after_one = recycler().unwrap();
    assert_eq!(
        after_one.sleeps, asleep,
        "one spent watch must wait for a later watch, not wake the thread"
    );

    // The next watch reuses it; a second spent one before a watch reuses the
    // first wakes the thread, which is still there to empty them.
    let watches: Vec<_> = (0..3).map(|_| ReleaseWatch::new(&file).unwrap()).collect();
    drop(watches);
    wait_for("several spent watches must wake the thread", |thread| {
        thread.sleeps > asleep
    });
}
