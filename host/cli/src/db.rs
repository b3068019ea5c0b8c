//! `--lock-db`: the flags that put locks on PostgreSQL advisory locks instead
//! of lock files, for `exec`, `inspect` and `run` (see `locks`).

use std::path::Path;
use std::time::Duration;

use crate::duration::parse_duration;

/// The environment variable that gives `--lock-db` its default.
pub const LOCK_DB_ENV: &str = "LOCKFILE_DB";

/// Where the locks are when they are not files.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Take locks on this PostgreSQL database or etcd cluster instead of
    /// lock files: `postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME`, as libpq
    /// accepts it, with libpq's sslmode (disable, prefer: the default,
    /// require, verify-ca, verify-full) and sslrootcert=CA.pem; or
    /// `etcd://[USER[:PASSWORD]@]HOST:PORT[,HOST:PORT...]` (`etcds://` for
    /// TLS, with ?cacert=CA.pem). A lock's name is then its path, under
    /// --lock-namespace: the same name is the same lock on every machine
    /// [env: LOCKFILE_DB].
    #[arg(long, value_name = "URL")]
    lock_db: Option<String>,

    /// With --lock-db: the namespace of the lock names (on etcd, their key
    /// prefix: NS/NAME); the same name in two namespaces is two locks [default: for `run`, the last component of
    /// --lock-dir if given (--lock-dir /srv/locks/nightly: `nightly`), so
    /// that lock directories stay apart on the database; else `default`].
    #[arg(long, value_name = "NS")]
    lock_namespace: Option<String>,

    /// With --lock-db: how long a holder that vanished (a crash, a lost
    /// network) may still be running. Each held lock renews its lease on the
    /// server; the next holder waits out a lease that was not released, and a
    /// holder that cannot renew its lease is stopped before it ends, by its
    /// own clock [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    lease: Option<Duration>,

    /// With --lock-db: how long before its lease ends a holder that cannot
    /// renew it is stopped, which is what COMMAND gets between SIGTERM and
    /// SIGKILL [default: 5s, or a third of --lease if shorter].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    grace: Option<Duration>,

    /// With --lock-db on PostgreSQL: the most server connections this process opens for
    /// its locks, beside one for reading. Held locks share them (one holds
    /// any number); a wait in the server's queue takes one of its own while
    /// that leaves one for the rest, and otherwise waits by trying again.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    lock_db_sessions: u16,
}

/// A held lock's lease and checks, from --lease and --grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    /// The lease (`--lease`).
    pub lease: Duration,
    /// The stop notice, and COMMAND's grace (`--grace`).
    pub grace: Duration,
    /// How often the lease is renewed: every second, or 15 times a lease.
    pub heartbeat: Duration,
    /// How long a renewal may take: 5 s, or a third of the lease.
    pub answer_within: Duration,
}

impl DbArgs {
    /// The database's URL: `--lock-db`, else a non-empty `LOCKFILE_DB`.
    pub fn url(&self) -> Option<String> {
        self.lock_db.clone().or_else(|| {
            std::env::var(LOCK_DB_ENV)
                .ok()
                .filter(|url| !url.is_empty())
        })
    }

    /// The lease settings of --lease and --grace: the heartbeat and its
    /// answer timeout scale down with a short lease, so that a lease of a few
    /// seconds (for tests) still fits them.
    pub fn lease(&self) -> LeaseSettings {
        let lease = self.lease.unwrap_or(Duration::from_secs(15));
        let third = lease / 3;
        LeaseSettings {
            lease,
            grace: self.grace.unwrap_or(third.min(Duration::from_secs(5))),
            heartbeat: (lease / 15).min(Duration::from_secs(1)),
            answer_within: third.min(Duration::from_secs(5)),
        }
    }

    /// `--lock-db-sessions`.
    pub fn sessions(&self) -> usize {
        usize::from(self.lock_db_sessions)
    }

    /// The namespace where there is no lock directory (`exec`, `inspect`):
    /// --lock-namespace, else `default`.
    pub fn namespace(&self) -> &str {
        self.lock_namespace
            .as_deref()
            .unwrap_or(lockfile_postgres::DEFAULT_NAMESPACE)
    }

    /// The namespace beside a lock directory (`run`): --lock-namespace, else
    /// the last component of `lock_dir`, the --lock-dir given (if any), else
    /// `default`. A path that ends in no name (`.`, `..`, `/`) gives
    /// `default`; one whose name is not UTF-8 is an error, which says so.
    pub fn namespace_beside(&self, lock_dir: Option<&Path>) -> Result<String, String> {
        if let Some(namespace) = &self.lock_namespace {
            return Ok(namespace.clone());
        }
        let Some(name) = lock_dir.and_then(Path::file_name) else {
            return Ok(lockfile_postgres::DEFAULT_NAMESPACE.to_owned());
        };
        name.to_str().map(str::to_owned).ok_or_else(|| {
            format!(
                "--lock-dir {:?}: its last component, the default lock namespace, is not UTF-8; give --lock-namespace",
                lock_dir.unwrap_or(Path::new(""))
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(namespace: Option<&str>) -> DbArgs {
        DbArgs {
            lock_db: None,
            lock_namespace: namespace.map(str::to_owned),
            lease: None,
            grace: None,
            lock_db_sessions: 8,
        }
    }

    #[test]
    fn the_namespace_defaults_to_the_lock_directorys_name_or_default() {
        let beside = |ns: Option<&str>, dir: Option<&str>| {
            args(ns).namespace_beside(dir.map(Path::new)).unwrap()
        };
        assert_eq!(beside(None, Some("/srv/locks/nightly")), "nightly");
        assert_eq!(beside(None, Some("nightly/")), "nightly");
        assert_eq!(beside(None, Some("locks")), "locks");
        assert_eq!(beside(None, None), "default");
        for nameless in [".", "..", "/", "a/.."] {
            assert_eq!(beside(None, Some(nameless)), "default", "{nameless}");
        }
        assert_eq!(beside(Some("ops"), Some("/srv/locks/nightly")), "ops");
        assert_eq!(args(None).namespace(), "default");
        assert_eq!(args(Some("ops")).namespace(), "ops");
    }

    #[test]
    fn the_lease_defaults_and_a_short_lease_scale_the_checks() {
        let s = Duration::from_secs;
        let settings = args(None).lease();
        assert_eq!((settings.lease, settings.grace), (s(15), s(5)));
        assert_eq!((settings.heartbeat, settings.answer_within), (s(1), s(5)));
        let short = DbArgs {
            lease: Some(s(6)),
            ..args(None)
        }
        .lease();
        assert_eq!((short.grace, short.answer_within), (s(2), s(2)));
        assert_eq!(short.heartbeat, Duration::from_millis(400));
    }

    #[cfg(unix)]
    #[test]
    fn a_lock_directory_whose_name_is_not_utf8_asks_for_a_namespace() {
        use std::os::unix::ffi::OsStrExt;
        let dir = Path::new(std::ffi::OsStr::from_bytes(b"/srv/\xff"));
        let message = args(None).namespace_beside(Some(dir)).unwrap_err();
        assert!(message.ends_with("give --lock-namespace"), "{message}");
    }
}
