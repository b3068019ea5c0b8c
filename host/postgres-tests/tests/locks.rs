//! Exclusion, waiting, records and tokens, against the real server
//! (`LOCKFILE_TEST_DB`, from `scripts/postgres start`).

mod common;

use std::time::{Duration, Instant};

use common::{Holder, locker, namespace, probe, raw_client, waiters};
use lockfile_core::Error as CoreError;
use lockfile_postgres::{Error, PgLocker};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_processes_exclude_each_other_with_the_record_in_the_error() {
    let ns = namespace("exclude");
    let holder = Holder::spawn(&ns, "job.lock", "4242;host-a");
    let locker = locker(&ns).await;

    let error = locker
        .acquire("job.lock", Some("me".into()), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Lock(CoreError::Locked { holder: Some(h), .. }) if h == "4242;host-a"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "Couldn't lock 'job.lock': held by 4242;host-a"
    );

    // A third process sees the same, and says so as zc.lockfile would.
    let other = probe(&ns).args(["try", "job.lock"]).output().unwrap();
    assert_eq!(other.status.code(), Some(75));
    assert_eq!(
        String::from_utf8_lossy(&other.stderr),
        "Couldn't lock 'job.lock': held by 4242;host-a\n"
    );

    holder.release();
    let lock = locker
        .acquire("job.lock", Some("me".into()), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        locker.read_content("job.lock").await.unwrap().as_deref(),
        Some("me")
    );
    lock.release().await.unwrap();
}

/// A holder killed with SIGKILL: the server frees its advisory lock at once,
/// but its lease runs on (it could have been a machine cut off, whose
/// command still runs), so the next holder gets the lock only once the
/// lease has ended, by the server's clock; `inspect` shows it meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_holders_sigkill_the_next_waits_out_its_lease() {
    let ns = namespace("sigkill");
    let locker = common::short_lease_locker(&ns).await;
    for _ in 0..3 {
        let holder = Holder::spawn_short_lease(&ns, "job.lock", "doomed");
        holder.kill();
        let found = common::wait_for_inspection(&locker, "job.lock", |found| !found.locked).await;
        let left = found
            .lease_left
            .expect("a killed holder's lease is not released");
        assert!(left <= common::SHORT_LEASE, "{left:?}");
        let (lock, took) = common::take_timed(&locker, "job.lock").await;
        eprintln!("taken {took:?} after the holder's SIGKILL, its lease having {left:?} left");
        // The wait is counted from the lease the server reported, less the
        // round trips since.
        assert!(
            took + Duration::from_millis(50) >= left,
            "{took:?} < {left:?}"
        );
        lock.release().await.unwrap();
        // Released cleanly: the next holder need not wait.
        let found = locker.inspect("job.lock").await.unwrap();
        assert_eq!(found.lease_left, None);
    }
}

#[test]
fn eight_processes_count_to_exactly_200_under_the_lock() {
    let ns = namespace("counter");
    let dir = tempfile_dir();
    let counter = dir.join("counter");
    let start = Instant::now();
    let children: Vec<_> = (0..8)
        .map(|_| {
            probe(&ns)
                .args(["count", "counter.lock", counter.to_str().unwrap(), "25"])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let total = std::fs::read_to_string(&counter).unwrap();
    assert_eq!(total.trim(), "200");
    eprintln!("8 x 25 increments in {:?}", start.elapsed());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_gives_up_in_time_and_never_takes_the_lock_late() {
    let ns = namespace("giveup");
    let holder = Holder::spawn(&ns, "job.lock", "slow holder");
    let locker = locker(&ns).await;

    let wait = Duration::from_millis(300);
    let start = Instant::now();
    let error = locker
        .acquire("job.lock", Some("waiter".into()), wait)
        .await
        .unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(&error, Error::Lock(CoreError::TimedOut { holder: Some(h), waited, .. }) if h == "slow holder" && *waited == wait),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "Couldn't lock 'job.lock' within 300ms: held by slow holder"
    );
    assert!(
        waited >= wait && waited < wait + Duration::from_millis(500),
        "{waited:?}"
    );

    // Once the waiter has given up, the lock goes to nobody when freed:
    // every single try of a third party succeeds.
    holder.release();
    let third = common::locker(&ns).await;
    for _ in 0..20 {
        let lock = third
            .acquire("job.lock", None, Duration::ZERO)
            .await
            .unwrap();
        lock.release().await.unwrap();
    }
    assert!(!locker.inspect("job.lock").await.unwrap().locked);
}

/// Releases timed to land on the waiter's deadline: whatever the waiter is
/// told, a timeout never leaves it holding the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_release_on_the_deadline_never_leaves_the_timed_out_waiter_holding() {
    let ns = namespace("deadline");
    let locker = locker(&ns).await;
    let holder_side = common::locker(&ns).await;
    let third = common::locker(&ns).await;
    let (mut timed_out, mut taken) = (0, 0);
    for round in 0..30u64 {
        let held = holder_side
            .acquire("job.lock", None, Duration::ZERO)
            .await
            .unwrap();
        let wait = Duration::from_millis(50);
        let release = tokio::spawn(async move {
            // Around the deadline, from just before to just after it.
            tokio::time::sleep(Duration::from_micros(45_000 + round * 350)).await;
            held.release().await.unwrap();
        });
        match locker.acquire("job.lock", None, wait).await {
            Ok(lock) => {
                taken += 1;
                lock.release().await.unwrap();
            }
            Err(Error::Lock(CoreError::TimedOut { .. })) => timed_out += 1,
            Err(error) => panic!("{error}"),
        }
        release.await.unwrap();
        let lock = third
            .acquire("job.lock", None, Duration::ZERO)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}: the waiter kept the lock"));
        lock.release().await.unwrap();
    }
    eprintln!("{taken} taken, {timed_out} timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_waiter_cancels_its_wait_on_the_server() {
    let ns = namespace("dropped");
    let holder = Holder::spawn(&ns, "job.lock", "holder");
    let locker = locker(&ns).await;
    let key = locker.inspect("job.lock").await.unwrap().key.unwrap();
    let raw = raw_client().await;

    // A future dropped by a timeout around it, and one in an aborted task.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(200),
        locker.acquire("job.lock", None, Duration::from_secs(60)),
    )
    .await;
    assert!(cancelled.is_err(), "the lock was never free");
    let task = {
        let locker = locker.clone();
        tokio::spawn(async move {
            locker
                .acquire("job.lock", None, Duration::from_secs(60))
                .await
        })
    };
    let start = Instant::now();
    while waiters(&raw, key).await < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());

    // The server forgets both waits at once, without waiting for their 60 s.
    let start = Instant::now();
    while waiters(&raw, key).await > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "a dropped wait stayed queued"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("dropped waits left the queue within {:?}", start.elapsed());

    holder.release();
    let third = common::locker(&ns).await;
    for _ in 0..20 {
        let lock = third
            .acquire("job.lock", None, Duration::ZERO)
            .await
            .unwrap();
        lock.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_takes_the_lock_when_it_is_released() {
    let ns = namespace("handover");
    let holder = Holder::spawn(&ns, "job.lock", "first");
    let locker = locker(&ns).await;
    let waiter = {
        let locker = locker.clone();
        tokio::spawn(async move {
            locker
                .acquire("job.lock", Some("second".into()), Duration::from_secs(30))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished());
    let released = Instant::now();
    tokio::task::block_in_place(|| holder.release());
    let lock = waiter.await.unwrap().unwrap();
    eprintln!(
        "taken {:?} after the holder's release began",
        released.elapsed()
    );
    assert_eq!(lock.content(), Some("second"));
    lock.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_name_twice_in_one_process_fails() {
    let ns = namespace("twice");
    let locker = locker(&ns).await;
    let lock = locker
        .acquire("a/job.lock", Some("mine".into()), Duration::ZERO)
        .await
        .unwrap();
    let other_locker = common::locker(&ns).await;
    for (who, name) in [
        (&locker, "a/job.lock"),
        (&locker, "./a//job.lock"),
        (&other_locker, "b/../a/job.lock"),
    ] {
        let error = who.acquire(name, None, Duration::ZERO).await.unwrap_err();
        assert!(
            matches!(&error, Error::Lock(CoreError::Locked { holder: Some(h), .. }) if h == "mine"),
            "{name}: {error:?}"
        );
    }
    // A second take with a wait waits for the first, as with a lock file.
    let error = locker
        .acquire("a/job.lock", None, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Lock(CoreError::TimedOut { .. })),
        "{error:?}"
    );
    lock.release().await.unwrap();
    locker
        .acquire("a/job.lock", None, Duration::ZERO)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_tokens_grow_with_every_acquisition() {
    let ns = namespace("tokens");
    let locker = locker(&ns).await;
    let mut last = 0;
    for round in 0..6 {
        let token = if round % 2 == 0 {
            let lock = locker
                .acquire("job.lock", None, Duration::ZERO)
                .await
                .unwrap();
            let token = lock.token();
            lock.release().await.unwrap();
            token
        } else {
            // Another process's acquisition in between.
            let holder = Holder::spawn(&ns, "job.lock", "other");
            let token = holder.token;
            holder.release();
            token
        };
        assert!(token > last, "token {token} after {last}");
        last = token;
    }
    let inspection = locker.inspect("job.lock").await.unwrap();
    assert_eq!(inspection.token, Some(last));
    // Tokens of different names are unrelated, but each grows on its own.
    let other = locker
        .acquire("other.lock", None, Duration::ZERO)
        .await
        .unwrap();
    assert!(other.token() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_record_is_readable_without_taking_the_lock() {
    let ns = namespace("read");
    let locker = locker(&ns).await;
    assert_eq!(locker.read_content("job.lock").await.unwrap(), None);
    assert_eq!(
        locker.inspect("job.lock").await.unwrap(),
        lockfile_postgres::Inspection::default()
    );

    let holder = Holder::spawn(&ns, "job.lock", "123;box");
    for _ in 0..3 {
        assert_eq!(
            locker.read_content("job.lock").await.unwrap().as_deref(),
            Some("123;box")
        );
    }
    let inspection = locker.inspect("job.lock").await.unwrap();
    assert!(
        inspection.locked && inspection.holder_pid.is_some(),
        "{inspection:?}"
    );
    assert_eq!(inspection.token, Some(holder.token));
    // Reading took nothing: the holder still holds, and releases cleanly.
    holder.release();
    let inspection = locker.inspect("job.lock").await.unwrap();
    assert!(!inspection.locked, "{inspection:?}");
    // As in a lock file, the last holder's record stays after the release...
    assert_eq!(inspection.content.as_deref(), Some("123;box"));
    // ...and a holder recording nothing leaves it, as SimpleLockFile does.
    let lock = locker
        .acquire("job.lock", None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        locker.read_content("job.lock").await.unwrap().as_deref(),
        Some("123;box")
    );
    lock.release().await.unwrap();
}

/// Dropping a lock closes its session, as a crash would: the advisory lock
/// is freed at once, the lease runs on. Releasing it ends both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropping_a_lock_leaves_its_lease_and_releasing_ends_it() {
    let ns = namespace("drop");
    let locker = common::short_lease_locker(&ns).await;
    let other = common::short_lease_locker(&ns).await;
    for _ in 0..3 {
        let lock = locker
            .acquire("job.lock", None, Duration::ZERO)
            .await
            .unwrap();
        assert!(lock.held());
        drop(lock);
        let found = common::wait_for_inspection(&other, "job.lock", |found| !found.locked).await;
        assert!(
            found.lease_left.is_some_and(|left| !left.is_zero()),
            "{found:?}"
        );
        let (lock, took) = common::take_timed(&other, "job.lock").await;
        eprintln!("taken {took:?} after the drop");
        lock.release().await.unwrap();
        let (lock, took) = common::take_timed(&locker, "job.lock").await;
        assert!(took < common::SHORT_LEASE / 2, "{took:?} after a release");
        lock.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_follow_the_lock_path_rules_and_namespaces_separate_them() {
    let ns = namespace("names");
    let locker = locker(&ns).await;
    for bad in ["../x.lock", "/locks/x.lock", "", "a/..", "a\0b"] {
        let error = locker.acquire(bad, None, Duration::ZERO).await.unwrap_err();
        assert!(matches!(error, Error::Name(_)), "{bad:?}: {error:?}");
    }
    let error = locker
        .acquire("x.lock", Some("two\nlines".into()), Duration::ZERO)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Lock(CoreError::InvalidTemplate(_))),
        "{error:?}"
    );
    let error = locker
        .acquire(
            "x.lock",
            Some("x".repeat(lockfile_core::MAX_RECORD)),
            Duration::ZERO,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Lock(CoreError::InvalidTemplate(_))),
        "{error:?}"
    );

    let here = locker
        .acquire("x.lock", None, Duration::ZERO)
        .await
        .unwrap();
    let elsewhere = common::locker(&format!("{ns}-other")).await;
    let there = elsewhere
        .acquire("x.lock", None, Duration::ZERO)
        .await
        .unwrap();
    here.release().await.unwrap();
    there.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_unix_socket_url_reaches_the_same_locks() {
    let ns = namespace("socket");
    let url = format!(
        "postgresql:///lockfile_test?host={}&port={}&user=lockfile",
        common::socket_dir(),
        common::port()
    );
    let over_socket = PgLocker::connect(&url, &ns).await.unwrap();
    let over_tcp = locker(&ns).await;
    let lock = over_socket
        .acquire("job.lock", Some("socket".into()), Duration::ZERO)
        .await
        .unwrap();
    let error = over_tcp
        .acquire("job.lock", None, Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(error.holder(), Some("socket"));
    lock.release().await.unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(namespace("dir"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_name_exists_once_acquired_for_every_locker_and_for_good() {
    let ns = namespace("exists");
    let locker = locker(&ns).await;
    assert!(!locker.exists("new.lock").await.unwrap());
    // Asking creates nothing.
    assert!(!locker.exists("new.lock").await.unwrap());
    locker
        .acquire("new.lock", Some("me".into()), Duration::ZERO)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    assert!(locker.exists("new.lock").await.unwrap());
    // Another locker (another host) has no cache to answer from.
    assert!(common::locker(&ns).await.exists("new.lock").await.unwrap());
    // The same name in another namespace is another lock.
    let elsewhere = common::locker(&namespace("exists-elsewhere")).await;
    assert!(!elsewhere.exists("new.lock").await.unwrap());
}

/// The README's fencing example, as written there: what the lock protects
/// refuses a write whose token is older than the last it accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_with_an_older_token_is_refused_as_the_readme_shows() {
    let ns = namespace("fence");
    let locker = locker(&ns).await;
    let client = raw_client().await;
    // A temporary table: this session's alone.
    client
        .batch_execute(
            "CREATE TEMP TABLE report (id int PRIMARY KEY, body text, token bigint NOT NULL);
             INSERT INTO report VALUES (1, '', 0);",
        )
        .await
        .unwrap();
    let write = "UPDATE report SET body = $2, token = $1 WHERE id = 1 AND token < $1";
    let a = locker
        .acquire("report.lock", None, Duration::ZERO)
        .await
        .unwrap();
    let t1 = a.token() as i64;
    assert_eq!(client.execute(write, &[&t1, &"from A"]).await.unwrap(), 1);
    a.release().await.unwrap();
    let b = locker
        .acquire("report.lock", None, Duration::ZERO)
        .await
        .unwrap();
    let t2 = b.token() as i64;
    assert!(t2 > t1);
    assert_eq!(client.execute(write, &[&t2, &"from B"]).await.unwrap(), 1);
    // A, late: refused.
    assert_eq!(client.execute(write, &[&t1, &"A, late"]).await.unwrap(), 0);
    let body: String = client
        .query_one("SELECT body FROM report WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(body, "from B");
    b.release().await.unwrap();
}
