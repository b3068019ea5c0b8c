//! A server restart while locks are held: every holder learns it lost its
//! lock within seconds, and the same locker works again afterwards.
//!
//! Restarts the server of `LOCKFILE_TEST_DB` with `scripts/postgres restart`:
//! this is the only test in its binary, and cargo runs test binaries one at a
//! time, so no other test sees the restart.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Holder, namespace};
use lockfile_postgres::Error;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_restart_is_reported_as_lost_within_seconds() {
    // It can only restart the server scripts/postgres runs.
    let env = Command::new(SCRIPT).arg("env").output().unwrap();
    let env = String::from_utf8_lossy(&env.stdout);
    assert!(
        env.contains(&format!("LOCKFILE_TEST_DB={}\n", common::db_url())),
        "LOCKFILE_TEST_DB is not the server of scripts/postgres, which this test restarts"
    );
    let ns = namespace("restart");
    let locker = common::short_lease_locker(&ns).await;
    let lock = locker
        .acquire("job.lock", Some("in-process".into()), Duration::ZERO)
        .await
        .unwrap();
    let lost = lock.lost_notify();
    let mut holder = Holder::spawn_short_lease(&ns, "other.lock", "in a probe");
    assert!(lock.held());

    let start = Instant::now();
    let restart = tokio::task::spawn_blocking(|| Command::new(SCRIPT).arg("restart").status());

    let reason = tokio::time::timeout(Duration::from_secs(10), lost)
        .await
        .expect("the loss was not reported within 10 s");
    let noticed = start.elapsed();
    eprintln!("lost after {noticed:?}: {reason}");
    assert!(noticed < Duration::from_secs(5), "{noticed:?}");
    assert!(!lock.held());
    assert_eq!(lock.lost_reason().as_deref(), Some(reason.as_str()));
    assert!(
        matches!(lock.release().await, Err(Error::Lost { ref name, .. }) if name == "job.lock")
    );

    // The probe process holding the other lock learnt it too.
    let line = tokio::task::block_in_place(|| holder.next_line());
    assert!(line.starts_with("lost "), "{line}");
    let _ = holder.child.wait();

    assert!(restart.await.unwrap().unwrap().success());
    // The same locker reconnects: its pooled sessions died with the server.
    let lock = locker
        .acquire("job.lock", Some("again".into()), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        locker.read_content("job.lock").await.unwrap().as_deref(),
        Some("again")
    );
    lock.release().await.unwrap();
}
