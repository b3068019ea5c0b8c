//! [`EtcdLocker`] as a [`LockBackend`]: the lock boundary that hosts which
//! know only `lockfile_core` (the wasmtime glue, the command line) use.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use lockfile_core::{BackendFuture, BackendLock, DeadlineReader, Inspection, LockBackend, Locked};
use tokio::task::JoinHandle;

use crate::{Error, EtcdLock, EtcdLocker};

/// The locker's work, run on the runtime it was connected on, so that the
/// caller may await it from any executor or block on it; dropping it aborts
/// the work (a wait in the queue then leaves it).
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
                source: io::Error::other(format!("the etcd client's task failed: {error}")),
            })
        })
    }
}

impl EtcdLocker {
    /// Runs `work` on this locker's runtime with its own handle and the lock
    /// `name`; its error said as a lock file's about `name`.
    fn on_runtime_named<T, Work>(
        &self,
        name: &str,
        work: impl FnOnce(EtcdLocker, String) -> Work,
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

/// The runtime `EtcdLocker` connected on drives the work: it must keep
/// running while the backend is used.
impl LockBackend for EtcdLocker {
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
                locked: match (found.locked, found.holder_lease) {
                    (true, lease) => {
                        Locked::Yes(lease.map(|lease| format!("etcd lease {lease:x}")))
                    }
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

impl BackendLock for EtcdLock {
    fn content(&self) -> Option<&str> {
        EtcdLock::content(self)
    }

    fn token(&self) -> Option<u64> {
        Some(EtcdLock::token(self))
    }

    fn held(&self) -> bool {
        EtcdLock::held(self)
    }

    /// The lease's loss, declared by this process's clock, or the key's.
    fn lost(&self) -> Option<BackendFuture<String>> {
        Some(Box::pin(self.lost_notify()))
    }

    /// The lease's end, less the clocks' margin.
    fn deadline(&self) -> Option<DeadlineReader> {
        let deadline = self.deadline_watch();
        Some(Box::new(move || *deadline.borrow()))
    }

    fn release(self: Box<Self>) -> BackendFuture<Result<(), lockfile_core::Error>> {
        let name = self.name().to_owned();
        let runtime = self.runtime();
        let work = OnRuntime(runtime.spawn(async move {
            (*self)
                .release()
                .await
                .map_err(|error| error.into_core(&name))
        }));
        Box::pin(async move { work.await? })
    }
}
