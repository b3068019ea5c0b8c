//! The lock directory as a [`LockBackend`]: the same lock files, confined the
//! same way, behind the boundary the database backend implements, for hosts
//! that pick their backend at run time and hold it as `Arc<dyn LockBackend>`.

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cap_std::fs::Dir;
use lockfile_core::{
    Attempt, BackendFuture, BackendLock, Error, LockBackend, LockFile, LockOptions, PendingLock,
    WaitSchedule, sleep_or_watch,
};

use crate::ctx::open_dir;
use crate::sandbox::{self, FileBudget};

/// Lock files in one directory, as a [`LockBackend`]: a name is a lock path
/// beneath it, resolved by cap-std as a plugin's paths are, and each lock is
/// an OS lock on that file with zc.lockfile's record, exactly as
/// [`LockfileCtx::builder`](crate::LockfileCtx::builder) takes them. Waits
/// run on a thread of their own, one per waiting acquisition, which only
/// ever makes non-blocking tries and stops trying once the acquisition is
/// dropped, so a waiter that gave up never takes the lock late.
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
        if let Err(error) = lockfile_core::check_lock_path(name) {
            return Err(io_error(
                name,
                io::ErrorKind::InvalidInput,
                error.to_string(),
            ));
        }
        let options = match content {
            // The content is already rendered: written as it is, braces
            // included.
            Some(content) => {
                LockOptions::new().content_template(content.replace('{', "{{").replace('}', "}}"))
            }
            None => LockOptions::new().no_content(),
        }
        // Names the wait in a `TimedOut`; the waiting is `wait_for`'s.
        .wait(wait);
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
        let outcome = self.prepare(name, content, wait).and_then(|pending| {
            if wait.is_zero() {
                return match pending.try_lock()? {
                    Attempt::Taken(lock) => Ok(Err(lock)),
                    Attempt::Held(pending) => Err(pending.into_error()),
                };
            }
            Ok(Ok(pending))
        });
        let pending = match outcome {
            Ok(Ok(pending)) => pending,
            Ok(Err(lock)) => return Box::pin(std::future::ready(Ok(DirLock::boxed(lock)))),
            Err(error) => return Box::pin(std::future::ready(Err(error))),
        };
        let shared = Arc::new(Mutex::new(Waiting::default()));
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("lockfile-dir-wait".into())
            .spawn(move || wait_for(pending, wait, &thread_shared));
        if let Err(error) = spawned {
            return Box::pin(std::future::ready(Err(io_error(
                name,
                error.kind(),
                format!("couldn't start a waiting thread: {error}"),
            ))));
        }
        Box::pin(DirAcquire { shared })
    }

    fn read_content(&self, name: &str) -> BackendFuture<Result<Option<String>, Error>> {
        let read = || {
            if let Err(error) = lockfile_core::check_lock_path(name) {
                return Err(io_error(
                    name,
                    io::ErrorKind::InvalidInput,
                    error.to_string(),
                ));
            }
            sandbox::read_record(&self.dir, name).map_err(|error| escape_as_io(name, error))
        };
        Box::pin(std::future::ready(read()))
    }

    fn exists(&self, name: &str) -> BackendFuture<Result<bool, Error>> {
        let exists = lockfile_core::check_lock_path(name).is_ok() && self.dir.exists(name);
        Box::pin(std::future::ready(Ok(exists)))
    }
}

/// What a waiting thread and its acquisition share.
#[derive(Default)]
struct Waiting {
    /// Set when the acquisition is dropped: no try is made after it.
    dropped: bool,
    outcome: Option<Result<LockFile, Error>>,
    waker: Option<Waker>,
}

fn lock(shared: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The waiting thread: tries under the shared lock, so a try and the
/// acquisition's drop never overlap; sleeps between tries on the file's
/// release watch (or the fallback poll).
fn wait_for(pending: PendingLock, wait: Duration, shared: &Mutex<Waiting>) {
    let mut watch = pending.release_watch().ok();
    let mut schedule = WaitSchedule::new(wait);
    let mut pending = pending;
    loop {
        let mut state = lock(shared);
        if state.dropped {
            return;
        }
        let outcome = match pending.try_lock() {
            Ok(Attempt::Taken(lock)) => Ok(lock),
            Err(error) => Err(error),
            Ok(Attempt::Held(held)) => match schedule.next_sleep() {
                None => Err(held.into_error()),
                Some(sleep) => {
                    pending = held;
                    drop(state);
                    sleep_or_watch(&mut watch, sleep);
                    continue;
                }
            },
        };
        state.outcome = Some(outcome);
        if let Some(waker) = state.waker.take() {
            waker.wake();
        }
        return;
    }
}

/// An acquisition waiting on its thread.
struct DirAcquire {
    shared: Arc<Mutex<Waiting>>,
}

impl Future for DirAcquire {
    type Output = Result<Box<dyn BackendLock>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.shared);
        match state.outcome.take() {
            Some(outcome) => Poll::Ready(outcome.map(DirLock::boxed)),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for DirAcquire {
    fn drop(&mut self) {
        // A lock taken before this (and not handed over) is dropped with
        // the state: released, as after any acquire and release.
        let mut state = lock(&self.shared);
        state.dropped = true;
        state.outcome = None;
    }
}

/// A lock file held through [`DirBackend`].
#[derive(Debug)]
struct DirLock {
    lock: LockFile,
}

impl DirLock {
    fn boxed(lock: LockFile) -> Box<dyn BackendLock> {
        Box::new(DirLock { lock })
    }
}

impl BackendLock for DirLock {
    fn content(&self) -> Option<&str> {
        self.lock.content()
    }

    /// Lock files issue no fencing tokens.
    fn token(&self) -> Option<u64> {
        None
    }

    /// The OS keeps a lock file's lock while the file is open.
    fn held(&self) -> bool {
        true
    }

    fn release(self: Box<Self>) -> BackendFuture<Result<(), Error>> {
        self.lock.release();
        Box::pin(std::future::ready(Ok(())))
    }
}
