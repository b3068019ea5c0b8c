//! A server that stops answering (its process stopped, the network still
//! up): the heartbeat declares the lock lost within its timeout.
//!
//! Stops the server process of the lock's session with SIGSTOP, which needs
//! root or the server's user; otherwise it says why and checks nothing.

mod common;

use std::time::{Duration, Instant};

use common::{db_url, namespace};
use lockfile_postgres::PgLocker;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_server_is_reported_as_lost_by_the_heartbeat() {
    let ns = namespace("silence");
    let locker = PgLocker::builder(&db_url())
        .namespace(&ns)
        .heartbeat(Duration::from_millis(200), Duration::from_secs(1))
        .lease(Duration::from_secs(3), Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let lock = locker
        .acquire("job.lock", None, Duration::ZERO)
        .await
        .unwrap();
    let backend = locker
        .inspect("job.lock")
        .await
        .unwrap()
        .holder_pid
        .unwrap();
    // SAFETY: kill(2) with a pid and a signal number; no memory is involved.
    if unsafe { libc::kill(backend, libc::SIGSTOP) } != 0 {
        eprintln!(
            "skipped: cannot stop the server process {backend}: {} (run as root or as the server's user)",
            std::io::Error::last_os_error()
        );
        return;
    }
    let start = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(10), lock.lost_notify()).await;
    let noticed = start.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(backend, libc::SIGCONT) };
    let reason = reason.expect("the silence was not noticed within 10 s");
    eprintln!("lost after {noticed:?}: {reason}");
    assert!(noticed < Duration::from_secs(2), "{noticed:?}");
    assert!(reason.contains("did not answer"), "{reason}");
    assert!(!lock.held());

    // The session was closed on our side: once the server process runs
    // again it sees that and frees the lock.
    let other = PgLocker::connect(&db_url(), &ns).await.unwrap();
    let took = common::free_within(&other, "job.lock", Duration::from_secs(5)).await;
    eprintln!("free again {took:?} after SIGCONT");
}
