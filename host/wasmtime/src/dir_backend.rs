//! The lock directory as a [`LockBackend`]: the same lock files, confined the
//! same way, behind the boundary the database backend implements, for hosts
//! that pick their backend at run time and hold it as `Arc<dyn LockBackend>`.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cap_std::fs::Dir;
use lockfile_core::{
    BackendFuture, BackendLock, Error, Inspection, LockBackend, LockOptions, PendingLock,
};

use crate::ctx::open_dir;
use crate::sandbox::{self, FileBudget};

/// Lock files in one directory, as a [`LockBackend`]: a name is a lock path
/// beneath it, resolved by cap-std as a plugin's paths are, and each lock is
/// an OS lock on that file with zc.lockfile's record, exactly as
/// [`LockfileCtx::builder`](crate::LockfileCtx::builder) takes them. Waits
/// run on a thread of their own, one per waiting acquisition
/// ([`PendingLock::acquire`]).
#[derive(Debug, Clone)]
pub struct DirBackend {
    dir: Arc<Dir>,
}

impl DirBackend {
    /// Opens `path`, which must be a directory.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::new(open_dir(path.as_ref())?))
    }

    /// Locks beneath a directory the host has already opened.
    pub fn new(dir: Dir) -> Self {
        Self { dir: Arc::new(dir) }
    }

    /// The checks and the open of an acquisition, before any try.
    fn prepare(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> Result<PendingLock, Error> {
        check_name(name)?;
        // The wait is named in a `TimedOut`; the waiting is `acquire`'s.
        let options = LockOptions::rendered(content.as_deref()).wait(wait);
        // Hosts bound new names themselves, through `exists`.
        let mut unbounded = FileBudget::new(u32::MAX);
        let dir: &Dir = &self.dir;
        options
            .prepare(name, || {
                sandbox::open_for_locking(dir, name, &mut unbounded)
            })
            .map_err(|error| escape_as_io(name, error))
    }
}

fn io_error(name: &str, kind: io::ErrorKind, message: String) -> Error {
    Error::Io {
        operation: "lock",
        path: name.into(),
        source: io::Error::new(kind, message),
    }
}

/// A path cap-std refused for leading outside, said so.
fn escape_as_io(name: &str, error: Error) -> Error {
    match error {
        Error::Io { ref source, .. } if sandbox::is_escape(source) => io_error(
            name,
            io::ErrorKind::PermissionDenied,
            sandbox::escape_message(name),
        ),
        other => other,
    }
}

impl LockBackend for DirBackend {
    fn acquire(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> BackendFuture<Result<Box<dyn BackendLock>, Error>> {
        match self.prepare(name, content, wait) {
            Ok(pending) => pending.acquire(),
            Err(error) => ready(Err(error)),
        }
    }

    fn read_content(&self, name: &str) -> BackendFuture<Result<Option<String>, Error>> {
        let read = check_name(name).and_then(|()| {
            sandbox::read_record(&self.dir, name).map_err(|error| escape_as_io(name, error))
        });
        ready(read)
    }

    fn inspect(&self, name: &str) -> BackendFuture<Result<Inspection, Error>> {
        let inspected = check_name(name).and_then(|()| {
            let file =
                sandbox::open_record(&self.dir, name).map_err(|error| escape_as_io(name, error))?;
            lockfile_core::inspect_from(&file).map_err(|source| Error::Io {
                operation: "read",
                path: name.into(),
                source,
            })
        });
        ready(inspected)
    }

    fn exists(&self, name: &str) -> BackendFuture<Result<bool, Error>> {
        let exists = lockfile_core::check_lock_path(name).is_ok() && self.dir.exists(name);
        ready(Ok(exists))
    }
}

/// The lock path rules, as an acquisition's error.
fn check_name(name: &str) -> Result<(), Error> {
    lockfile_core::check_lock_path(name)
        .map_err(|error| io_error(name, io::ErrorKind::InvalidInput, error.to_string()))
}

fn ready<T: Send + 'static>(value: T) -> BackendFuture<T> {
    Box::pin(std::future::ready(value))
}
