//! [`PgLocker`] as a [`LockBackend`]: the lock boundary that hosts which
//! know only `lockfile_core` (the wasmtime glue) use.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lockfile_core::{BackendFuture, BackendLock, DeadlineReader, Inspection, LockBackend, Locked};
use tokio::task::JoinHandle;

use crate::{Error, PgLock, PgLocker};

impl Error {
    /// This error as a lock file's: the outcomes they share as they are, a
    /// lost lock as [`lockfile_core::Error::Lost`], the rest as
    /// [`lockfile_core::Error::Io`] on `name` (a name that resolves to no
    /// lock as `InvalidInput`).
    pub fn into_core(self, name: &str) -> lockfile_core::Error {
        let (kind, message) = match self {
            Error::Lock(error) => return error,
            Error::Lost { name, reason } => {
                return lockfile_core::Error::Lost {
                    path: name.into(),
                    reason,
                };
            }
            Error::Name(error) => (io::ErrorKind::InvalidInput, error.to_string()),
            error => (io::ErrorKind::Other, error.to_string()),
        };
        lockfile_core::Error::Io {
            operation: "lock",
            path: name.into(),
            source: io::Error::new(kind, message),
        }
    }
}

/// The locker's work, run on the runtime it was connected on, so that the
/// caller may await it from any executor or block on it; dropping it aborts
/// the work (an acquisition's wait is then cancelled on the server).
struct OnRuntime<T>(JoinHandle<T>);

impl<T> Drop for OnRuntime<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for OnRuntime<T> {
    type Output = Result<T, lockfile_core::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.map_err(|error| lockfile_core::Error::Io {
                operation: "lock",
                path: "".into(),
                source: io::Error::other(format!("the lock database's task failed: {error}")),
            })
        })
    }
}

impl PgLocker {
    /// Runs `work` on this locker's runtime with its own handle and the lock
    /// `name`; its error said as a lock file's about `name`.
    fn on_runtime_named<T, Work>(
        &self,
        name: &str,
        work: impl FnOnce(PgLocker, String) -> Work,
    ) -> OnRuntime<Result<T, lockfile_core::Error>>
    where
        T: Send + 'static,
        Work: Future<Output = Result<T, Error>> + Send + 'static,
    {
        let name = name.to_owned();
        let work = work(self.clone(), name.clone());
        OnRuntime(
            self.inner
                .runtime
                .spawn(async move { work.await.map_err(|error| error.into_core(&name)) }),
        )
    }
}

/// The runtime `PgLocker::connect` ran on drives the work: it must keep
/// running (a multi-threaded runtime, or one a thread blocks on) while the
/// backend is used.
impl LockBackend for PgLocker {
    fn acquire(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> BackendFuture<Result<Box<dyn BackendLock>, lockfile_core::Error>> {
        let work = self.on_runtime_named(name, move |locker, name| async move {
            locker.acquire(&name, content, wait).await
        });
        Box::pin(async move { Ok(Box::new(work.await??) as Box<dyn BackendLock>) })
    }

    fn read_content(
        &self,
        name: &str,
    ) -> BackendFuture<Result<Option<String>, lockfile_core::Error>> {
        let work = self.on_runtime_named(name, |locker, name| async move {
            locker.read_content(&name).await
        });
        Box::pin(async move { work.await? })
    }

    fn inspect(&self, name: &str) -> BackendFuture<Result<Inspection, lockfile_core::Error>> {
        let work = self.on_runtime_named(name, |locker, name| async move {
            let found = locker.inspect(&name).await?;
            Ok(Inspection {
                content: found.content,
                locked: match (found.locked, found.holder_pid) {
                    (true, pid) => Locked::Yes(pid.map(|pid| format!("backend pid {pid}"))),
                    (false, _) => Locked::No,
                },
                token: found.token,
                lease_left: found.lease_left,
            })
        });
        Box::pin(async move { work.await? })
    }

    fn exists(&self, name: &str) -> BackendFuture<Result<bool, lockfile_core::Error>> {
        let work = self.on_runtime_named(
            name,
            |locker, name| async move { locker.exists(&name).await },
        );
        Box::pin(async move { work.await? })
    }
}

impl BackendLock for PgLock {
    fn content(&self) -> Option<&str> {
        PgLock::content(self)
    }

    fn token(&self) -> Option<u64> {
        Some(PgLock::token(self))
    }

    fn held(&self) -> bool {
        PgLock::held(self)
    }

    /// The session's end, noticed by its heartbeat (see the crate's docs).
    fn lost(&self) -> Option<BackendFuture<String>> {
        Some(Box::pin(self.lost_notify()))
    }

    /// The lease's end, less the clocks' margin (see the crate's docs).
    fn deadline(&self) -> Option<DeadlineReader> {
        let deadline = self.deadline_watch();
        Some(Box::new(move || *deadline.borrow()))
    }

    fn release(self: Box<Self>) -> BackendFuture<Result<(), lockfile_core::Error>> {
        let name = self.name().to_owned();
        let runtime = self.inner.runtime.clone();
        let work = OnRuntime(runtime.spawn(async move {
            (*self)
                .release()
                .await
                .map_err(|error| error.into_core(&name))
        }));
        Box::pin(async move { work.await? })
    }
}
