//! A session that is alive but no longer owns its lock: each heartbeat
//! checks that the session still holds the advisory lock and that the
//! name's row still carries this holder's fencing token, so a token issued
//! to someone else (a failover that let another holder in, a row edited by
//! hand) is noticed within one heartbeat, not only a dead session.

mod common;

use std::time::{Duration, Instant};

use common::{db_url, namespace, raw_client};
use lockfile_postgres::PgLocker;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_token_on_the_row_is_a_lost_lock_within_one_heartbeat() {
    let ns = namespace("ownership");
    let locker = PgLocker::builder(&db_url())
        .namespace(&ns)
        .heartbeat(Duration::from_millis(200), Duration::from_secs(2))
        .lease(Duration::from_secs(4), Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let lock = locker
        .acquire("job.lock", None, Duration::ZERO)
        .await
        .unwrap();
    // Beats that find it owned do not declare it lost.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(lock.held(), "{:?}", lock.lost_reason());

    // Another holder's token, as a failover to a server that had let
    // someone else take the lock would leave.
    let client = raw_client().await;
    let updated = client
        .execute(
            "UPDATE lockfile_locks SET token = token + 1 WHERE namespace = $1 AND name = $2",
            &[&ns, &"job.lock"],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);
    let start = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(5), lock.lost_notify())
        .await
        .expect("the new token was not noticed within 5 s");
    eprintln!("lost after {:?}: {reason}", start.elapsed());
    assert!(
        reason.contains(&format!("not this holder's {}", lock.token())),
        "{reason}"
    );
    assert!(!lock.held());
    // The session is closed with the loss: the advisory lock is free again.
    let other = PgLocker::connect(&db_url(), &ns).await.unwrap();
    common::free_within(&other, "job.lock", Duration::from_secs(5)).await;
}
