//! Lock files as a [`LockBackend`]: the same locks and records as
//! [`LockOptions::lock`], behind the boundary every other backend implements.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backend::Inspection;
use crate::{
    BackendFuture, BackendLock, Error, LockBackend, LockFile, LockOptions, open_for_locking,
    read_content,
};

/// Lock files by path, as a [`LockBackend`]: a lock's name is its path,
/// beneath a directory if one is given ([`in_dir`](Self::in_dir)), and each
/// lock is the OS lock with zc.lockfile's record that [`LockOptions::lock`]
/// takes.
///
/// A one-try acquire is made in line, with no thread and no runtime, and
/// [`acquire_blocking`](LockBackend::acquire_blocking) waits on the calling
/// thread; an [`acquire`](LockBackend::acquire) that must wait does so on a
/// thread of its own ([`PendingLock::acquire`](crate::PendingLock::acquire)).
/// Names are used as paths as they are: this backend is for the user's own
/// paths (the command line), not a plugin's, which lockfile-host confines.
#[derive(Debug, Clone, Default)]
pub struct FileBackend {
    dir: Option<PathBuf>,
}

impl FileBackend {
    /// Names are paths, relative to the current directory or absolute.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names are paths beneath `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        match &self.dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }
}

impl LockBackend for FileBackend {
    fn acquire(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> BackendFuture<Result<Box<dyn BackendLock>, Error>> {
        let path = self.path(name);
        let prepared = LockOptions::rendered(content.as_deref())
            .wait(wait)
            .prepare(name, || open_for_locking(&path));
        match prepared {
            Ok(pending) => pending.acquire(),
            Err(error) => ready(Err(error)),
        }
    }

    fn acquire_blocking(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> Result<Box<dyn BackendLock>, Error> {
        let path = self.path(name);
        let lock = LockOptions::rendered(content.as_deref())
            .wait(wait)
            .lock_with(name, || open_for_locking(&path))?;
        Ok(Box::new(lock))
    }

    fn read_content(&self, name: &str) -> BackendFuture<Result<Option<String>, Error>> {
        ready(read_content(self.path(name)).map_err(|error| renamed(error, name)))
    }

    fn inspect(&self, name: &str) -> BackendFuture<Result<Inspection, Error>> {
        ready(inspect(&self.path(name)).map_err(|error| renamed(error, name)))
    }

    fn exists(&self, name: &str) -> BackendFuture<Result<bool, Error>> {
        ready(Ok(self.path(name).exists()))
    }
}

/// [`inspect_from`](crate::inspect_from) the lock file at `path`, opened as
/// [`read_content`] opens it.
fn inspect(path: &Path) -> Result<Inspection, Error> {
    let file = crate::open::open_for_reading(path).map_err(|e| Error::io("open", path, e))?;
    crate::inspect_from(&file).map_err(|e| Error::io("read", path, e))
}

/// `error` naming the lock by `name`, as the caller gave it, rather than by
/// the path it resolved to.
fn renamed(error: Error, name: &str) -> Error {
    match error {
        Error::Io {
            operation, source, ..
        } => Error::io(operation, name, source),
        other => other,
    }
}

fn ready<T: Send + 'static>(value: T) -> BackendFuture<T> {
    Box::pin(std::future::ready(value))
}

/// A lock file held through a backend: the OS keeps it while the file is
/// open, so it is never lost, and it has no fencing token.
impl BackendLock for LockFile {
    fn content(&self) -> Option<&str> {
        LockFile::content(self)
    }

    fn token(&self) -> Option<u64> {
        None
    }

    fn held(&self) -> bool {
        true
    }

    fn release(self: Box<Self>) -> BackendFuture<Result<(), Error>> {
        LockFile::release(*self);
        ready(Ok(()))
    }

    /// On Unix the command inherits the locked file ([`LockFile::share_with`]);
    /// on Windows a lock belongs to the handle that took it, and cannot be.
    fn share_with(&mut self, command: &mut std::process::Command) -> bool {
        #[cfg(unix)]
        {
            LockFile::share_with(self, command);
            true
        }
        #[cfg(not(unix))]
        {
            let _ = command;
            false
        }
    }
}
