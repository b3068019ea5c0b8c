//! Release watches reuse their inotify instances instead of closing them.
//!
//! Closing an instance that had a watch takes the kernel 10-25 ms, so with
//! one background thread closing them, quick waits in a row left them piling
//! up: 300 in a row had 119 open at once, near the user's
//! `fs.inotify.max_user_instances` (128 by default), past which new watches
//! fail and waits fall back to the slow poll (in the benchmark, one of eight
//! waiters then waited 1.8 s for a lock that was free).
//!
//! Its own test binary: no other test's watches in this process.

#![cfg(target_os = "linux")]

#[path = "support/inotify.rs"]
mod inotify;

use inotify::inotify_instances;
use lockfile_core::ReleaseWatch;

#[test]
fn three_hundred_waits_in_a_row_keep_a_few_instances_open() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("job.lock")).unwrap();
    let mut most = 0;
    for round in 0..300 {
        let watch = ReleaseWatch::new(&file)
            .unwrap_or_else(|e| panic!("watch {round} could not be created: {e}"));
        drop(watch);
        most = most.max(inotify_instances());
    }
    // One in use, a few spares waiting to be reused.
    assert!(most <= 10, "{most} inotify instances open at once");
}
