//! A waiter hands its spent release watch to a background thread to close
//! (the kernel's close waits for an RCU grace period). That thread must exist
//! before the waiter is woken: started on the first drop instead, it cost a
//! waiter a few hundred microseconds between the release and its return with
//! the lock, most of a cross-process handover (issue 11's benchmark).
//!
//! Its own test binary, with one test: no other test in this process can have
//! started the thread first.

#![cfg(target_os = "linux")]

use std::time::{Duration, Instant};

use lockfile_core::ReleaseWatch;

/// The names of this process's threads, from /proc.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim_end().to_owned())
        .collect()
}

#[test]
fn the_closing_thread_runs_before_the_first_watch_is_dropped() {
    // Linux shortens thread names to 15 bytes.
    let closer = "lockfile-inotif";
    assert!(
        !thread_names().iter().any(|name| name == closer),
        "no watch yet, so no closing thread: {:?}",
        thread_names()
    );
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("job.lock")).unwrap();
    let watch = ReleaseWatch::new(&file).unwrap();
    // A new thread names itself once it runs: give it time (a liveness bound,
    // not a measure), while the watch is still alive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !thread_names().iter().any(|name| name == closer) {
        assert!(
            Instant::now() < deadline,
            "a watch exists, so its closing thread must already run: {:?}",
            thread_names()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(watch);
}
