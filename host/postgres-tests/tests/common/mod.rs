//! What every test against the real server shares.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lockfile_postgres::PgLocker;

const START: &str = "run `eval \"$(scripts/postgres start)\"` first: it starts a throwaway PostgreSQL \
                     under target/postgres and prints the variables the tests need";

/// The test database's URL, from `LOCKFILE_TEST_DB`; never skipped silently.
pub fn db_url() -> String {
    std::env::var("LOCKFILE_TEST_DB")
        .unwrap_or_else(|_| panic!("LOCKFILE_TEST_DB is not set: {START}"))
}

/// The server's Unix socket directory, from `LOCKFILE_TEST_DB_SOCKET`.
pub fn socket_dir() -> String {
    std::env::var("LOCKFILE_TEST_DB_SOCKET")
        .unwrap_or_else(|_| panic!("LOCKFILE_TEST_DB_SOCKET is not set: {START}"))
}

/// The port in the test URL (the Unix socket's name carries it too).
pub fn port() -> String {
    let url = db_url();
    let host_port = url.rsplit_once('@').unwrap().1.split('/').next().unwrap();
    host_port.rsplit_once(':').unwrap().1.to_owned()
}

/// The password in the test URL, to check that no message shows it.
pub fn password() -> String {
    let url = db_url();
    let credentials = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
    credentials.split_once(':').unwrap().1.to_owned()
}

/// A namespace no other test (or earlier run) uses.
pub fn namespace(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{test}-{}-{nanos}", std::process::id())
}

pub async fn locker(namespace: &str) -> PgLocker {
    PgLocker::connect(&db_url(), namespace).await.unwrap()
}

/// The short lease of the tests that wait one out: 1 s, with the heartbeat
/// every 100 ms, answered within 300 ms, and a stop notice of 300 ms (as
/// `pg-lock-probe --lease-ms 1000`).
pub const SHORT_LEASE: Duration = Duration::from_secs(1);

/// A locker with [`SHORT_LEASE`].
pub async fn short_lease_locker(namespace: &str) -> PgLocker {
    PgLocker::builder(&db_url())
        .namespace(namespace)
        .heartbeat(SHORT_LEASE / 10, SHORT_LEASE * 3 / 10)
        .lease(SHORT_LEASE, SHORT_LEASE * 3 / 10)
        .connect()
        .await
        .unwrap()
}

/// A plain connection for looking at the server from outside.
pub async fn raw_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&db_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// Sessions queued for the advisory lock `key`, not holding it.
pub async fn waiters(client: &tokio_postgres::Client, key: i64) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
               AND objsubid = 1 AND classid = ($1::bigint >> 32)::oid
               AND objid = ($1::bigint & 4294967295)::oid",
            &[&key],
        )
        .await
        .unwrap()
        .get(0)
}

/// The probe program, pointed at the test database and `namespace`.
pub fn probe(namespace: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pg-lock-probe"));
    command
        .env("LOCKFILE_TEST_DB", db_url())
        .args(["--namespace", namespace]);
    command
}

/// A probe process holding a lock until told to release it, or killed.
pub struct Holder {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub token: u64,
}

impl Holder {
    /// Starts `pg-lock-probe hold NAME` and waits until it holds the lock.
    pub fn spawn(namespace: &str, name: &str, record: &str) -> Holder {
        Self::spawn_with(namespace, name, record, &[])
    }

    /// [`spawn`](Self::spawn) with [`SHORT_LEASE`].
    pub fn spawn_short_lease(namespace: &str, name: &str, record: &str) -> Holder {
        let ms = SHORT_LEASE.as_millis().to_string();
        Self::spawn_with(namespace, name, record, &["--lease-ms", &ms])
    }

    fn spawn_with(namespace: &str, name: &str, record: &str, options: &[&str]) -> Holder {
        let mut child = probe(namespace)
            .args(options)
            .args(["--record", record, "hold", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let token = line
            .strip_prefix("locked ")
            .unwrap_or_else(|| panic!("the holder did not take {name}: {line:?}"))
            .trim()
            .parse()
            .unwrap();
        Holder {
            child,
            stdin,
            stdout,
            token,
        }
    }

    /// The next line the holder prints ("released", "lost ...").
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }

    /// Tells the holder to release, and waits until it has.
    pub fn release(mut self) {
        let mut stdin = self.stdin.take().unwrap();
        let _ = stdin.flush();
        drop(stdin);
        assert_eq!(self.next_line(), "released");
        assert!(self.child.wait().unwrap().success());
    }

    /// SIGKILL: the process dies holding the lock.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Takes `name` with one try (which waits out a vanished holder's lease);
/// returns the lock and how long that took.
pub async fn take_timed(locker: &PgLocker, name: &str) -> (lockfile_postgres::PgLock, Duration) {
    let start = Instant::now();
    let lock = locker.acquire(name, None, Duration::ZERO).await.unwrap();
    (lock, start.elapsed())
}

/// Inspects `name` until `ready` says so (within 5 s); returns what it saw.
pub async fn wait_for_inspection(
    locker: &PgLocker,
    name: &str,
    ready: impl Fn(&lockfile_postgres::Inspection) -> bool,
) -> lockfile_postgres::Inspection {
    let start = Instant::now();
    loop {
        let found = locker.inspect(name).await.unwrap();
        if ready(&found) {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{name}: still {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Tries `name` once from a fresh connection until it succeeds or `limit`
/// passes; returns how long it took.
pub async fn free_within(locker: &PgLocker, name: &str, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        match locker.acquire(name, None, Duration::ZERO).await {
            Ok(lock) => {
                lock.release().await.unwrap();
                return start.elapsed();
            }
            Err(_) if start.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(error) => panic!("{name} still not free after {limit:?}: {error}"),
        }
    }
}
