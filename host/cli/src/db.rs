//! `--lock-db`: locks on PostgreSQL advisory locks instead of lock files, for
//! `exec`, `inspect` and `run`.

use std::path::Path;
use std::process::ExitCode;

use lockfile_postgres::PgLocker;

use crate::exit;

/// The environment variable that gives `--lock-db` its default.
pub const LOCK_DB_ENV: &str = "LOCKFILE_DB";

/// Where the locks are when they are not files.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    /// Take locks on this PostgreSQL database instead of lock files:
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DBNAME`, as libpq accepts it,
    /// with libpq's sslmode (disable, prefer: the default, require,
    /// verify-ca, verify-full) and sslrootcert=CA.pem. A lock's name is then
    /// its path, under --lock-namespace: the same name is the same lock on
    /// every machine [env: LOCKFILE_DB].
    #[arg(long, value_name = "URL")]
    lock_db: Option<String>,

    /// With --lock-db: the namespace of the lock names; the same name in two
    /// namespaces is two locks [default: for `run`, the last component of
    /// --lock-dir if given (--lock-dir /srv/locks/nightly: `nightly`), so
    /// that lock directories stay apart on the database; else `default`].
    #[arg(long, value_name = "NS")]
    lock_namespace: Option<String>,
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

/// The runtime the database's sessions live on: one worker thread of its
/// own, so that held locks are checked (heartbeats, loss) whatever the main
/// thread does, a plugin that computes or a wait for a command included.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("lockfile-db")
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("lockfile: couldn't start the lock database's runtime: {error}");
            ExitCode::from(exit::SOFTWARE)
        })
}

/// Connects to `url`, printing why not on one line (64 for a bad URL or
/// namespace, 74 for a server that cannot be reached, refuses the login or
/// lacks the database).
pub fn connect(
    runtime: &tokio::runtime::Runtime,
    url: &str,
    namespace: &str,
) -> Result<PgLocker, ExitCode> {
    runtime
        .block_on(PgLocker::connect(url, namespace))
        .map_err(|error| exit::db_error(&error))
}

/// Checks a lock name before anything is connected: the lock path rules.
pub fn check_name(name: &std::path::Path) -> Result<&str, ExitCode> {
    let Some(text) = name.to_str() else {
        eprintln!("lockfile: lock name {name:?} is not UTF-8");
        return Err(ExitCode::from(exit::USAGE));
    };
    lockfile_core::check_lock_path(text).map_err(|error| {
        eprintln!("lockfile: {error}");
        ExitCode::from(exit::USAGE)
    })?;
    Ok(text)
}

/// `lockfile inspect --lock-db URL NAME`: the holder's record, whether a
/// session holds the lock now (and which server process), and the last
/// fencing token, without taking the lock.
pub fn inspect(db: &DbArgs, url: &str, name: &std::path::Path) -> ExitCode {
    let name = match check_name(name) {
        Ok(name) => name,
        Err(code) => return code,
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let locker = match connect(&runtime, url, db.namespace()) {
        Ok(locker) => locker,
        Err(code) => return code,
    };
    let found = match runtime.block_on(locker.inspect(name)) {
        Ok(found) => found,
        Err(error) => return exit::db_error(&error),
    };
    println!("content: {}", found.content.as_deref().unwrap_or("(none)"));
    match (found.locked, found.holder_pid) {
        (true, Some(pid)) => println!("locked: yes (backend pid {pid})"),
        (true, None) => println!("locked: yes"),
        (false, _) => println!("locked: no"),
    }
    if let Some(token) = found.token {
        println!("token: {token}");
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(namespace: Option<&str>) -> DbArgs {
        DbArgs {
            lock_db: None,
            lock_namespace: namespace.map(str::to_owned),
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

    #[cfg(unix)]
    #[test]
    fn a_lock_directory_whose_name_is_not_utf8_asks_for_a_namespace() {
        use std::os::unix::ffi::OsStrExt;
        let dir = Path::new(std::ffi::OsStr::from_bytes(b"/srv/\xff"));
        let message = args(None).namespace_beside(Some(dir)).unwrap_err();
        assert!(message.ends_with("give --lock-namespace"), "{message}");
    }
}
