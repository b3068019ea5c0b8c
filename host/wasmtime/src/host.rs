//! The interface's implementation, shared by every binding: both versions,
//! sync and async (their traits are implemented in `api`).

use std::time::Duration;

use lockfile_core::{
    Attempt, BackendFuture, BackendLock, LockFile, LockOptions, PendingLock, WaitSchedule, block_on,
};
use wasmtime::component::Resource;

use crate::ctx::Place;
use crate::{LockfileCtxView, sandbox};

mod api;

/// A plugin's lock handle: the lock until it is released, and what the plugin
/// may ask about it afterwards. Dropping it, which the store does for every
/// handle left when it is dropped, releases the lock: a plugin that traps
/// leaves nothing locked.
#[derive(Debug)]
pub struct HostLock {
    lock: Option<Held>,
    path: String,
    content: Option<String>,
    /// The acquisition's fencing token, kept after release for `fencing-token`.
    token: Option<u64>,
}

impl HostLock {
    /// Whether the lock is still held: not released, and not lost.
    fn held(&self) -> bool {
        self.lock.as_ref().is_some_and(Held::held)
    }
}

/// A lock a plugin holds: a lock file, or one of another backend.
#[derive(Debug)]
enum Held {
    File(LockFile),
    Backend(Box<dyn BackendLock>),
}

impl Held {
    fn content(&self) -> Option<&str> {
        match self {
            Held::File(lock) => lock.content(),
            Held::Backend(lock) => lock.content(),
        }
    }

    /// A lock file cannot be lost while its descriptor is open; a backend's
    /// lock can (a database session ends), and the backend says so.
    fn held(&self) -> bool {
        match self {
            Held::File(_) => true,
            Held::Backend(lock) => lock.held(),
        }
    }

    /// Lock files issue no fencing token: their record is zc.lockfile's, with
    /// no room for one.
    fn token(&self) -> Option<u64> {
        match self {
            Held::File(_) => None,
            Held::Backend(lock) => lock.token(),
        }
    }

    /// Releases at once: a backend's lock is free on return (one round trip),
    /// so the plugin can take it again right away, as with a lock file.
    fn release(self) {
        match self {
            Held::File(lock) => lock.release(),
            Held::Backend(lock) => {
                if let Err(error) = block_on(lock.release()) {
                    log::debug!(target: "lockfile", "release: {error}");
                }
            }
        }
    }
}

/// A backend's acquisition in flight.
type BackendAcquire = BackendFuture<Result<Box<dyn BackendLock>, lockfile_core::Error>>;

/// Why `acquire` or `read-content` failed, before it is put into either
/// binding's `error`.
enum Failure {
    Lock(lockfile_core::Error),
    NotPermitted(String),
    TooManyLocks(u32),
}

impl Failure {
    fn from_core(path: &str, error: lockfile_core::Error) -> Self {
        match error {
            lockfile_core::Error::Io { ref source, .. } if sandbox::is_escape(source) => {
                Self::NotPermitted(sandbox::escape_message(path))
            }
            lockfile_core::Error::Io { ref source, .. } => {
                match sandbox::is_creation_limit(source) {
                    Some(message) => Self::NotPermitted(message),
                    None => Self::Lock(error),
                }
            }
            other => Self::Lock(other),
        }
    }
}

impl LockfileCtxView<'_> {
    /// Checks everything that does not need the file, then builds the options.
    fn start_acquire(
        &self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<LockOptions, Failure> {
        if let Some(reason) = sandbox::refuse(path) {
            return Err(Failure::NotPermitted(reason));
        }
        if self.ctx.live_locks >= self.ctx.max_locks {
            return Err(Failure::TooManyLocks(self.ctx.max_locks));
        }
        let mut wait = Duration::from_millis(wait_ms);
        if let Some(max) = self.ctx.max_wait {
            wait = wait.min(max);
        }
        let mut options = LockOptions::new()
            .wait(wait)
            .log_failures(self.ctx.log_failures)
            .field("plugin", self.ctx.plugin.clone());
        options = match template {
            Some(template) => options.content_template(template),
            None => options.no_content(),
        };
        if let Some(hostname) = &self.ctx.hostname {
            options = options.hostname(hostname.clone());
        }
        Ok(options)
    }

    fn acquire_blocking(
        &mut self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<Held, Failure> {
        let options = self.start_acquire(path, template, wait_ms)?;
        let dir = match &self.ctx.place {
            Place::Dir(dir) => dir,
            Place::Backend(_) => {
                if let Some(ask) = self.ask_if_new(path) {
                    self.count_name(path, block_on(ask))?;
                }
                let acquire = self.acquire_backend(path, &options)?;
                return self.backend_outcome(block_on(acquire));
            }
        };
        let files = &mut self.ctx.files;
        options
            .lock_with(path, || sandbox::open_for_locking(dir, path, files))
            .map(Held::File)
            .map_err(|e| Failure::from_core(path, e))
    }

    /// Whether the backend must be asked if `path` exists before it is
    /// acquired: a backend keeps every name it is given, so names the plugin
    /// creates count against its file budget, as lock files do. `None` for a
    /// name known to exist already (no round trip).
    fn ask_if_new(&self, path: &str) -> Option<BackendFuture<Result<bool, lockfile_core::Error>>> {
        let Place::Backend(backend) = &self.ctx.place else {
            unreachable!("called for a backend only");
        };
        (!self.ctx.files.is_known(path)).then(|| backend.exists(path))
    }

    /// Counts `path` against the budget if the backend said it is new, or
    /// refuses it if the budget is spent.
    fn count_name(
        &mut self,
        path: &str,
        existed: Result<bool, lockfile_core::Error>,
    ) -> Result<(), Failure> {
        let existed = existed.map_err(Failure::Lock)?;
        self.ctx
            .files
            .admit_name(path, existed)
            .map_err(|limit| Failure::NotPermitted(limit.to_string()))
    }

    /// Renders the content as for a lock file, then asks the backend; the
    /// future it returns waits the backend's way (a database's own queue).
    fn acquire_backend(
        &self,
        path: &str,
        options: &LockOptions,
    ) -> Result<BackendAcquire, Failure> {
        let Place::Backend(backend) = &self.ctx.place else {
            unreachable!("called for a backend only");
        };
        let content = options.render_content(path).map_err(Failure::Lock)?;
        Ok(backend.acquire(path, content, options.wait_limit()))
    }

    fn backend_outcome(
        &self,
        outcome: Result<Box<dyn BackendLock>, lockfile_core::Error>,
    ) -> Result<Held, Failure> {
        outcome.map(Held::Backend).map_err(|error| {
            if self.ctx.log_failures {
                error.log_failure();
            }
            Failure::Lock(error)
        })
    }

    /// Like [`acquire_blocking`](Self::acquire_blocking), but a wait never
    /// blocks the executor thread: between non-blocking tries it sleeps on
    /// tokio until the lock file is closed ([`AsyncReleaseWatch`]) or
    /// [`FallbackPoll`] has passed, and at most until the deadline, where it
    /// makes its last try. It holds nothing but futures, so when the future is
    /// dropped (a timeout), nothing is left that could take the lock later.
    async fn acquire_async(
        &mut self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<Held, Failure> {
        let options = self.start_acquire(path, template, wait_ms)?;
        let dir = match &self.ctx.place {
            Place::Dir(dir) => dir,
            Place::Backend(_) => {
                // Each future is awaited before `self` is borrowed again: the
                // view is not `Sync`.
                if let Some(ask) = self.ask_if_new(path) {
                    let existed = ask.await;
                    self.count_name(path, existed)?;
                }
                let acquire = self.acquire_backend(path, &options)?;
                let outcome = acquire.await;
                return self.backend_outcome(outcome);
            }
        };
        let files = &mut self.ctx.files;
        let fail = |e| Failure::from_core(path, e);
        let mut pending = options
            .prepare(path, || sandbox::open_for_locking(dir, path, files))
            .map_err(fail)?;
        let wait = options.wait_limit();
        // A single try (no wait) pays for no watch.
        let reactor = self.ctx.reactor.as_ref();
        let mut watch = (!wait.is_zero()).then(|| AsyncReleaseWatch::new(&pending, reactor));
        let mut schedule = WaitSchedule::new(wait);
        loop {
            pending = match pending.try_lock().map_err(fail)? {
                Attempt::Taken(lock) => return Ok(Held::File(lock)),
                Attempt::Held(pending) => pending,
            };
            match (schedule.next_sleep(), &mut watch) {
                (Some(sleep), Some(watch)) => watch.sleep(sleep).await,
                _ => return Err(Failure::Lock(pending.into_error())),
            }
        }
    }

    fn insert(&mut self, path: String, lock: Held) -> wasmtime::Result<Resource<HostLock>> {
        let content = lock.content().map(str::to_owned);
        let token = lock.token();
        let handle = self.table.push(HostLock {
            lock: Some(lock),
            path,
            content,
            token,
        })?;
        self.ctx.live_locks += 1;
        Ok(handle)
    }

    fn read_holder(&mut self, path: &str) -> Result<Option<String>, Failure> {
        if let Some(reason) = sandbox::refuse(path) {
            return Err(Failure::NotPermitted(reason));
        }
        let dir = match &self.ctx.place {
            Place::Dir(dir) => dir,
            Place::Backend(backend) => {
                return block_on(backend.read_content(path)).map_err(Failure::Lock);
            }
        };
        // Only the open can be refused as an escape or by the budget; a read
        // error is reported as it is, which `from_core` leaves it.
        sandbox::read_record(dir, path).map_err(|e| Failure::from_core(path, e))
    }

    fn lock_mut(&mut self, handle: &Resource<HostLock>) -> wasmtime::Result<&mut HostLock> {
        Ok(self.table.get_mut(handle)?)
    }

    fn forget(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        self.ctx.live_locks -= 1;
        Ok(())
    }
}

/// A [`lockfile_core::ReleaseWatch`] on tokio: wakes an async wait when the
/// lock file is closed, or after its sleep, whichever comes first.
///
/// On Linux the watch's inotify descriptor is registered as an `AsyncFd` with
/// a reactor of this crate's own, not the embedder's runtime: tokio panics
/// (rather than failing) when a runtime without an I/O driver registers a
/// descriptor, and runtimes built with timers only are common (`lockfile
/// run`'s is one). That reactor is one thread, started by the first async
/// wait and parked in `epoll_wait` while no watch fires, as wasmtime-wasi keeps
/// a runtime of its own. Without a watch (other systems, or no inotify
/// instance left) the sleep alone remains: the wait polls.
struct AsyncReleaseWatch {
    #[cfg(target_os = "linux")]
    fd: Option<tokio::io::unix::AsyncFd<lockfile_core::ReleaseWatch>>,
}

impl AsyncReleaseWatch {
    /// Watches `pending`'s file; create it before the first try, so a release
    /// right after that try is seen. `own_reactor` is the embedder's runtime
    /// ([`LockfileCtxBuilder::reactor`](crate::LockfileCtxBuilder::reactor)),
    /// `None` for this crate's reactor thread.
    fn new(pending: &PendingLock, own_reactor: Option<&tokio::runtime::Handle>) -> Self {
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
            Self { fd }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (pending, own_reactor);
            Self {}
        }
    }

    /// Sleeps until the file is closed or `limit` has passed.
    async fn sleep(&mut self, limit: Duration) {
        #[cfg(target_os = "linux")]
        if let Some(fd) = &mut self.fd {
            let broken = match tokio::time::timeout(limit, fd.readable_mut()).await {
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
                tokio::time::sleep(limit).await;
            }
            return;
        }
        tokio::time::sleep(limit).await;
    }
}

/// The reactor [`AsyncReleaseWatch`]es are registered with, started on first
/// use; `None` if it could not be.
#[cfg(target_os = "linux")]
fn reactor() -> Option<&'static tokio::runtime::Runtime> {
    static REACTOR: std::sync::OnceLock<Option<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    REACTOR
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("lockfile-reactor")
                .enable_io()
                .build()
                .inspect_err(|e| log::warn!(target: "lockfile", "async waits will poll: {e}"))
                .ok()
        })
        .as_ref()
}
