//! Where the command line's locks live: lock files, or the lock database of
//! `--lock-db` (PostgreSQL or etcd, by the URL's scheme), each behind
//! [`LockBackend`], so that `exec`, `inspect` and `run --singleton` each have
//! one body for every backend.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lockfile_core::{BackendLock, FileBackend, Inspection, LockBackend, block_on};
use lockfile_etcd::EtcdLocker;
use lockfile_postgres::PgLocker;

use crate::db::{DbArgs, LeaseSettings};
use crate::exit::{self, Failure};

/// The locks of one command: a backend, and what must outlive its locks.
pub struct Locks {
    backend: Arc<dyn LockBackend>,
    /// The runtime a database's sessions live on: one worker thread of its
    /// own, so that held locks are checked (heartbeats, loss) whatever the
    /// main thread does. Dropped after the backend.
    _runtime: Option<tokio::runtime::Runtime>,
}

impl Locks {
    /// `--lock-db`'s database if one is given (under `namespace`), else lock
    /// files: named by their paths, or beneath `dir`.
    pub fn open(db: &DbArgs, namespace: &str, dir: Option<&Path>) -> Result<Self, Failure> {
        let Some(url) = db.url() else {
            return Ok(Self::files(dir));
        };
        match Engine::of(&url)? {
            Engine::Postgres => Self::database(&url, namespace, db.lease(), db.sessions()),
            Engine::Etcd => Self::etcd(&url, namespace, db.lease()),
        }
    }

    /// Lock files, named by their paths, or beneath `dir`.
    pub fn files(dir: Option<&Path>) -> Self {
        let backend = match dir {
            Some(dir) => FileBackend::in_dir(dir),
            None => FileBackend::new(),
        };
        Self {
            backend: Arc::new(backend),
            _runtime: None,
        }
    }

    /// The lock database at `url`: 64 for a bad URL or namespace, or a
    /// lease its checks do not fit in, 74 for a server that cannot be
    /// reached, refuses the login or lacks the database, each on one line.
    pub fn database(
        url: &str,
        namespace: &str,
        lease: LeaseSettings,
        sessions: usize,
    ) -> Result<Self, Failure> {
        let runtime = db_runtime()?;
        // Durable: a fencing token this command hands out (to COMMAND, to a
        // plugin) is on the server's disk before anyone learns it, so none
        // is ever issued twice, whatever the server's clock does after a
        // crash. One WAL flush per acquisition.
        let locker = runtime
            .block_on(
                PgLocker::builder(url)
                    .namespace(namespace)
                    .durable_tokens(true)
                    .heartbeat(lease.heartbeat, lease.answer_within)
                    .lease(lease.lease, lease.grace)
                    .max_sessions(sessions)
                    .connect(),
            )
            .map_err(|error| match error {
                lockfile_postgres::Error::InvalidSettings { reason } => Failure::new(
                    exit::USAGE,
                    anyhow::anyhow!(
                        "--lease {} with --grace {}: {reason}",
                        humantime::format_duration(lease.lease),
                        humantime::format_duration(lease.grace)
                    ),
                ),
                error => exit::db_failure(&error),
            })?;
        Ok(Self {
            backend: Arc::new(locker),
            _runtime: Some(runtime),
        })
    }

    /// The etcd cluster at `url` (its key prefix `namespace`): 64 for a bad
    /// URL, namespace or lease, 74 for a cluster that cannot be reached or
    /// refuses the login, each on one line.
    pub fn etcd(url: &str, namespace: &str, lease: LeaseSettings) -> Result<Self, Failure> {
        let runtime = db_runtime()?;
        let locker = runtime
            .block_on(
                EtcdLocker::builder(url)
                    .namespace(namespace)
                    .heartbeat(lease.heartbeat, lease.answer_within)
                    .lease(lease.lease, lease.grace)
                    .connect(),
            )
            .map_err(|error| match error {
                lockfile_etcd::Error::InvalidSettings { reason } => Failure::new(
                    exit::USAGE,
                    anyhow::anyhow!(
                        "--lease {} with --grace {}: {reason}",
                        humantime::format_duration(lease.lease),
                        humantime::format_duration(lease.grace)
                    ),
                ),
                error => exit::etcd_failure(&error),
            })?;
        Ok(Self {
            backend: Arc::new(locker),
            _runtime: Some(runtime),
        })
    }

    /// The backend, for a plugin's own locks.
    pub fn backend(&self) -> Arc<dyn LockBackend> {
        self.backend.clone()
    }

    /// Takes the lock `name`, recording `content` (`None`: none), with one
    /// try or waiting up to `wait`; logs contention as exclusive_control does
    /// if `log_failures`.
    pub fn acquire(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
        log_failures: bool,
    ) -> Result<Box<dyn BackendLock>, Failure> {
        self.backend
            .acquire_blocking(name, content, wait)
            .map_err(|error| {
                if log_failures {
                    error.log_failure();
                }
                Failure::lock(&error)
            })
    }

    /// The record, whether the lock is held now, and the last fencing token.
    pub fn inspect(&self, name: &str) -> Result<Inspection, Failure> {
        block_on(self.backend.inspect(name)).map_err(|error| Failure::lock(&error))
    }

    /// Releases `lock`: [`lockfile_core::Error::Lost`] if it had been lost.
    pub fn release(&self, lock: Box<dyn BackendLock>) -> Result<(), lockfile_core::Error> {
        block_on(lock.release())
    }
}

/// Which lock server a `--lock-db` URL names, by its scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Postgres,
    Etcd,
}

impl Engine {
    /// 64 for a scheme that names neither.
    fn of(url: &str) -> Result<Self, Failure> {
        let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
        match scheme {
            "postgres" | "postgresql" => Ok(Engine::Postgres),
            "etcd" | "etcds" => Ok(Engine::Etcd),
            _ => {
                // Shown without its password; a string that is no URL at
                // all (key=value pairs) may hold one anywhere: not shown.
                let shown = if url.contains("://") {
                    format!(" '{}'", lockfile_etcd::redact_url(url))
                } else {
                    String::new()
                };
                Err(Failure::new(
                    exit::USAGE,
                    anyhow::anyhow!(
                        "invalid lock database URL{shown}: expected a postgres:// (or postgresql://) URL for PostgreSQL, or etcd:// (etcds:// for TLS) for etcd"
                    ),
                ))
            }
        }
    }
}

/// The runtime a lock server's sessions live on: one worker thread of its
/// own, so that held locks are checked (renewals, loss) whatever the main
/// thread does.
fn db_runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lockfile-db")
        .enable_all()
        .build()
        .map_err(|error| {
            Failure::new(
                exit::SOFTWARE,
                anyhow::anyhow!("couldn't start the lock database's runtime: {error}"),
            )
        })
}

/// `path` as the name of a lock where `db` says locks live: UTF-8, and on a
/// database under the lock path rules (64 otherwise), checked before anything
/// is connected or locked. Lock files are the user's own paths.
pub fn name<'a>(db: &DbArgs, path: &'a Path) -> Result<&'a str, Failure> {
    let Some(name) = path.to_str() else {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("lock name {path:?} is not UTF-8: give a UTF-8 path"),
        ));
    };
    if db.url().is_some() {
        lockfile_core::LockName::new(name).map_err(|error| Failure::new(exit::USAGE, error))?;
    }
    Ok(name)
}
