//! Waiting for a lock file without blocking a thread: between non-blocking
//! tries, a wait sleeps on tokio until the file is closed or the fallback
//! poll has passed, and at most until the deadline, where it makes its last
//! try. It holds nothing but futures, so when it is dropped (a timeout),
//! nothing is left that could take the lock later.

use std::time::Duration;

use lockfile_core::{Attempt, BackendFuture, Error, LockFile, PendingLock, WaitSchedule};

/// Waits for `pending` as long as its options asked. The release watch is
/// registered with `own_reactor` (the embedder's runtime) or this crate's
/// reactor thread; the sleeps run on the runtime `wait` is called on, or on
/// that reactor thread for callers that run none (a `block_on`), or, if
/// neither can be had, the wait runs on a thread of its own.
pub(crate) fn wait(
    pending: PendingLock,
    own_reactor: Option<&tokio::runtime::Handle>,
) -> BackendFuture<Result<LockFile, Error>> {
    let timers = tokio::runtime::Handle::try_current()
        .ok()
        .or_else(|| reactor().map(|runtime| runtime.handle().clone()));
    let Some(timers) = timers else {
        return pending.wait_on_thread();
    };
    // Created before the first try, so a release right after it is seen.
    let mut watch = AsyncReleaseWatch::new(&pending, own_reactor, timers);
    let mut schedule = WaitSchedule::new(pending.wait_limit());
    Box::pin(async move {
        let mut pending = pending;
        loop {
            pending = match pending.try_lock()? {
                Attempt::Taken(lock) => return Ok(lock),
                Attempt::Held(pending) => pending,
            };
            match schedule.next_sleep() {
                Some(sleep) => watch.sleep(sleep).await,
                None => return Err(pending.into_error()),
            }
        }
    })
}

/// A [`lockfile_core::ReleaseWatch`] on tokio: wakes an async wait when the
/// lock file is closed, or after its sleep, whichever comes first.
///
/// On Linux the watch's inotify descriptor is registered as an `AsyncFd` with
/// the embedder's runtime if it lent one
/// ([`LockfileCtxBuilder::reactor`](crate::LockfileCtxBuilder::reactor)),
/// else with a reactor of this crate's own: tokio panics (rather than failing)
/// when a runtime without an I/O driver registers a descriptor, and runtimes
/// built with timers only are common. That reactor is one thread, started by
/// the first async wait that needs it and parked in `epoll_wait` while no
/// watch fires, as wasmtime-wasi keeps a runtime of its own. Without a watch
/// (other systems, or no inotify instance left) the sleep alone remains: the
/// wait polls.
struct AsyncReleaseWatch {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<lockfile_core::ReleaseWatch>>,
    /// The runtime whose timers the sleeps use.
    timers: tokio::runtime::Handle,
}

impl AsyncReleaseWatch {
    /// Watches `pending`'s file; create it before the first try, so a release
    /// right after that try is seen.
    fn new(
        pending: &PendingLock,
        own_reactor: Option<&tokio::runtime::Handle>,
        timers: tokio::runtime::Handle,
    ) -> Self {
        #[cfg(target_os = "linux")]
        {
            let fd = pending.release_watch().ok().and_then(|watch| {
                let _reactor = match own_reactor {
                    Some(runtime) => runtime.enter(),
                    None => reactor()?.enter(),
                };
                // SAFETY: the `ReleaseWatch` owns its descriptor and keeps it
                // open, unchanged, until the `AsyncFd` drops it.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        watch,
                        tokio::io::Interest::READABLE,
                    )
                }
                .inspect_err(|e| log::debug!(target: "lockfile", "waits poll: {e}"))
                .ok()
            });
            Self { fd, timers }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (pending, own_reactor);
            Self { timers }
        }
    }

    /// Sleeps until the file is closed or `limit` has passed.
    async fn sleep(&mut self, limit: Duration) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &mut self.fd {
            let timed = {
                let _timers = self.timers.enter();
                tokio::time::timeout(limit, fd.readable_mut())
            };
            let broken = match timed.await {
                Err(_elapsed) => false,
                Ok(Ok(mut ready)) => {
                    // Consume the events; a failure to read ends the watch.
                    let drained = ready.get_inner_mut().drain();
                    ready.clear_ready();
                    drained.is_err()
                }
                Ok(Err(_)) => true,
            };
            if broken {
                // Polling from now on, rather than spinning on a broken watch.
                self.fd = None;
                self.sleep_only(limit).await;
            }
            return;
        }
        self.sleep_only(limit).await;
    }

    async fn sleep_only(&self, limit: Duration) {
        let sleep = {
            let _timers = self.timers.enter();
            tokio::time::sleep(limit)
        };
        sleep.await;
    }
}

/// This crate's reactor: the runtime [`AsyncReleaseWatch`]es are registered
/// with when the embedder lent none, and whose timers serve waits polled
/// outside any runtime; started on first use; `None` if it could not be.
fn reactor() -> Option<&'static tokio::runtime::Runtime> {
    static REACTOR: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    REACTOR
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("lockfile-reactor")
                .enable_io()
                .enable_time()
                .build()
                .inspect_err(|e| log::warn!(target: "lockfile", "async waits will poll: {e}"))
                .ok()
        })
        .as_ref()
}
