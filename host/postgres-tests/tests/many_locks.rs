//! Many locks on few connections: the locks of a locker share at most
//! `max_sessions` lock sessions, and a session that ends loses exactly its
//! locks, each reported.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{db_url, namespace, raw_client};
use lockfile_postgres::{PgLock, PgLocker};

/// The test URL with an application_name of its own, to count its
/// connections in `pg_stat_activity`.
fn url_named(app: &str) -> String {
    let url = db_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={app}")
}

async fn connections(client: &tokio_postgres::Client, app: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_locks_use_at_most_eight_sessions_and_release_cleanly() {
    let ns = namespace("many");
    let app = format!("many-{}", std::process::id());
    let locker = PgLocker::builder(&url_named(&app))
        .namespace(&ns)
        .connect()
        .await
        .unwrap();
    let observer = raw_client().await;
    let start = Instant::now();
    // All at once: as many in flight as the tasks allow.
    let tasks: Vec<_> = (0..500)
        .map(|i| {
            let locker = locker.clone();
            tokio::spawn(async move {
                locker
                    .acquire(
                        &format!("many-{i}.lock"),
                        Some(i.to_string()),
                        Duration::ZERO,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut locks: Vec<PgLock> = Vec::new();
    for task in tasks {
        locks.push(task.await.unwrap());
    }
    let took = start.elapsed();
    let open = connections(&observer, &app).await;
    eprintln!("500 locks taken in {took:?} over {open} connections (the reader included)");
    assert!(
        open <= 9,
        "{open} connections: 8 lock sessions and the reader at most"
    );
    // Each is held, by its own record, and a second locker is refused.
    let other = common::locker(&ns).await;
    for i in [0, 250, 499] {
        let error = other
            .acquire(&format!("many-{i}.lock"), None, Duration::ZERO)
            .await
            .unwrap_err();
        assert_eq!(error.holder(), Some(i.to_string().as_str()));
    }
    // Renewed together: all still held a few heartbeats later.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(locks.iter().all(PgLock::held));
    for lock in locks {
        lock.release().await.unwrap();
    }
    let free = other
        .acquire("many-250.lock", None, Duration::ZERO)
        .await
        .unwrap();
    free.release().await.unwrap();
}

/// The same name twice in one locker is refused by the locker's own table
/// (the sessions are shared, and advisory locks are re-entrant within one),
/// and a wait for it takes it once the first is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_name_twice_on_shared_sessions_is_refused_then_waited_for() {
    let ns = namespace("twice-shared");
    let locker = common::locker(&ns).await;
    let first = locker
        .acquire("job.lock", Some("first".into()), Duration::ZERO)
        .await
        .unwrap();
    let error = locker
        .acquire("job.lock", None, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(error.holder(), Some("first"));
    let waiter = {
        let locker = locker.clone();
        tokio::spawn(async move {
            locker
                .acquire("job.lock", Some("second".into()), Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.release().await.unwrap();
    let second = waiter.await.unwrap().unwrap();
    assert_eq!(
        locker.read_content("job.lock").await.unwrap().as_deref(),
        Some("second")
    );
    second.release().await.unwrap();
}

/// A session the server ends loses exactly the locks on it, each reported;
/// the locks on the other session stay held.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_session_loses_exactly_its_locks() {
    let ns = namespace("lost-session");
    let locker = PgLocker::builder(&db_url())
        .namespace(&ns)
        .max_sessions(2)
        .connect()
        .await
        .unwrap();
    // Two waits at once cannot share a session, but a waiting session leaves
    // one for the rest: spread locks by taking some while a wait blocks.
    let blocker = common::locker(&ns).await;
    let blocked = blocker
        .acquire("blocked.lock", None, Duration::ZERO)
        .await
        .unwrap();
    let first: Vec<PgLock> = take_in_turn(&locker, "a", 5).await;
    let waiting = {
        let locker = locker.clone();
        tokio::spawn(async move {
            locker
                .acquire("blocked.lock", None, Duration::from_secs(10))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocked.release().await.unwrap();
    let on_wait_session = waiting.await.unwrap().unwrap();
    let mut all = first;
    all.push(on_wait_session);
    let mut pids = HashSet::new();
    let mut owner = Vec::new();
    for lock in &all {
        let pid = locker
            .inspect(lock.name())
            .await
            .unwrap()
            .holder_pid
            .unwrap();
        pids.insert(pid);
        owner.push(pid);
    }
    assert_eq!(pids.len(), 2, "the locks did not spread over two sessions");
    let victim = owner[owner.len() - 1];
    let observer = raw_client().await;
    observer
        .execute("SELECT pg_terminate_backend($1)", &[&victim])
        .await
        .unwrap();
    let start = Instant::now();
    for (lock, pid) in all.iter().zip(&owner) {
        if *pid == victim {
            let reason = tokio::time::timeout(Duration::from_secs(5), lock.lost_notify())
                .await
                .unwrap_or_else(|_| panic!("{} was not reported lost", lock.name()));
            eprintln!("{} lost after {:?}: {reason}", lock.name(), start.elapsed());
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (lock, pid) in all.iter().zip(&owner) {
        assert_eq!(lock.held(), *pid != victim, "{}", lock.name());
    }
    for lock in all {
        let _ = lock.release().await;
    }
}

/// `n` locks named `PREFIX-i.lock`, one after another.
async fn take_in_turn(locker: &PgLocker, prefix: &str, n: usize) -> Vec<PgLock> {
    let mut locks = Vec::new();
    for i in 0..n {
        locks.push(
            locker
                .acquire(&format!("{prefix}-{i}.lock"), None, Duration::ZERO)
                .await
                .unwrap(),
        );
    }
    locks
}

/// Locks taken and released one after another on a session keep renewing
/// the leases of the locks held on it beside them: a held lock whose
/// session saw a new lock every 100 ms was declared lost at its stop time,
/// because each new lock restarted the heartbeat's interval, so the renewal
/// never came.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_locks_beside_a_held_one_do_not_starve_its_renewals() {
    let ns = namespace("short-beside-held");
    let beat = Duration::from_millis(300);
    let locker = PgLocker::builder(&db_url())
        .namespace(&ns)
        .max_sessions(1)
        .heartbeat(beat, Duration::from_secs(1))
        .lease(Duration::from_secs(3), Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let held = locker
        .acquire("held.lock", None, Duration::ZERO)
        .await
        .unwrap();
    let first_deadline = held.deadline();
    // Three leases' worth of short locks, each more often than a heartbeat.
    let until = Instant::now() + Duration::from_secs(9);
    while Instant::now() < until {
        let short = locker
            .acquire("short.lock", None, Duration::ZERO)
            .await
            .unwrap();
        short.release().await.unwrap();
        tokio::time::sleep(beat / 3).await;
    }
    assert!(
        held.held(),
        "the held lock was lost: {:?}",
        held.lost_reason()
    );
    assert!(
        held.deadline() > first_deadline + Duration::from_secs(5),
        "its lease was not renewed"
    );
    held.release().await.unwrap();
}
