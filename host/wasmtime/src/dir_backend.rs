//! The lock directory as a [`LockBackend`]: lock files beneath one directory,
//! confined by cap-std as a plugin's paths are. It is what
//! [`LockfileCtx::builder`](crate::LockfileCtx::builder) serves a plugin's
//! locks from, and hosts that pick their backend at run time hold it as
//! `Arc<dyn LockBackend>`.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use lockfile_core::{
    Attempt, BackendFuture, BackendLock, Error, Inspection, LockBackend, LockOptions, PendingLock,
};

use crate::{async_wait, sandbox};

/// Lock files in one directory, as a [`LockBackend`]: a name is a lock path
/// beneath it, resolved by cap-std (paths that lead outside are refused), and
/// each lock is an OS lock on that file with zc.lockfile's record.
///
/// One try is made in line, with no thread and no runtime;
/// [`acquire_blocking`](LockBackend::acquire_blocking) waits on the calling
/// thread, and an [`acquire`](LockBackend::acquire) that must wait sleeps on
/// the tokio runtime it is called on (or this crate's reactor thread), never
/// blocking it.
#[derive(Debug, Clone)]
pub struct DirBackend {
    dir: Arc<Dir>,
    reactor: Option<tokio::runtime::Handle>,
}

impl DirBackend {
    /// Opens `path`, which must be a directory.
    pub fn open(path: impl AsRef<Path>) -> io::Result<Self> {
        Ok(Self::new(open_dir(path.as_ref())?))
    }

    /// Locks beneath a directory the host has already opened.
    pub fn new(dir: Dir) -> Self {
        Self {
            dir: Arc::new(dir),
            reactor: None,
        }
    }

    /// Registers the release watches of async waits with `runtime`'s I/O
    /// driver rather than this crate's reactor thread (see
    /// [`LockfileCtxBuilder::reactor`](crate::LockfileCtxBuilder::reactor)).
    pub fn reactor(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.reactor = Some(runtime);
        self
    }

    /// The checks and the open of an acquisition, before any try.
    fn prepare(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> Result<PendingLock, Error> {
        check_name(name)?;
        // The wait is named in a `TimedOut`; the waiting is the caller's.
        let options = LockOptions::rendered(content.as_deref()).wait(wait);
        let dir: &Dir = &self.dir;
        options
            .prepare(name, || sandbox::open_for_locking(dir, name))
            .map_err(|error| escape_as_io(name, error))
    }
}

fn io_error(name: &str, source: io::Error) -> Error {
    Error::Io {
        operation: "lock",
        path: name.into(),
        source,
    }
}

/// A path cap-std refused for leading outside, said so.
fn escape_as_io(name: &str, error: Error) -> Error {
    match error {
        Error::Io { ref source, .. } if sandbox::is_cap_std_escape(source) => io_error(
            name,
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                sandbox::Escape(name.to_owned()),
            ),
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
        let pending = match self.prepare(name, content, wait).map(PendingLock::try_lock) {
            Ok(Ok(Attempt::Taken(lock))) => return ready(Ok(Box::new(lock))),
            Ok(Ok(Attempt::Held(pending))) if !wait.is_zero() => pending,
            Ok(Ok(Attempt::Held(pending))) => return ready(Err(pending.into_error())),
            Ok(Err(error)) | Err(error) => return ready(Err(error)),
        };
        let waiting = async_wait::wait(pending, self.reactor.as_ref());
        Box::pin(async move { Ok(Box::new(waiting.await?) as Box<dyn BackendLock>) })
    }

    fn acquire_blocking(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> Result<Box<dyn BackendLock>, Error> {
        let lock = self.prepare(name, content, wait)?.lock()?;
        Ok(Box::new(lock))
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
        let exists = lockfile_core::LockName::new(name).is_ok() && self.dir.exists(name);
        ready(Ok(exists))
    }
}

/// The lock path rules, as an acquisition's error.
fn check_name(name: &str) -> Result<(), Error> {
    lockfile_core::LockName::new(name)
        .map(drop)
        .map_err(|error| {
            io_error(
                name,
                io::Error::new(io::ErrorKind::InvalidInput, error.to_string()),
            )
        })
}

fn ready<T: Send + 'static>(value: T) -> BackendFuture<T> {
    Box::pin(std::future::ready(value))
}

/// Opens a lock directory; the error names it.
fn open_dir(path: &Path) -> io::Result<Dir> {
    Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("lock directory '{}': {e}", path.display()),
        )
    })
}
