//! The lock backend boundary: what a host (the wasmtime glue, the CLI) asks of
//! a place where locks live other than a lock directory, such as a database.
//!
//! Templates and the record rules stay with the caller
//! ([`LockOptions::render_content`](crate::LockOptions::render_content)):
//! a backend receives the rendered content, so records are the same
//! everywhere. Names are lock paths ([`check_lock_path`](crate::check_lock_path)),
//! and outcomes are this crate's [`Error`]s, worded as for lock files.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::Error;

/// A boxed future that the backend drives itself (on a runtime of its own):
/// it may be awaited from any executor, or blocked on from a thread that
/// runs none.
pub type BackendFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Where locks live, when not in a lock directory.
///
/// Every future it returns makes progress without being polled by a
/// particular runtime (the backend runs the work on its own), so a
/// synchronous host blocks on it and an asynchronous one awaits it. Dropping
/// an `acquire` future before it completes cancels it: the lock is never
/// taken late.
pub trait LockBackend: Send + Sync + fmt::Debug {
    /// Takes the lock `name`, recording `content` (`None` keeps the last
    /// holder's record), with one try if `wait` is zero, else waiting at most
    /// `wait`: [`Error::Locked`] or [`Error::TimedOut`] with the holder's
    /// record if it stays held.
    fn acquire(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> BackendFuture<Result<Box<dyn BackendLock>, Error>>;

    /// What the holder of `name` recorded (or the last holder), without
    /// taking the lock.
    fn read_content(&self, name: &str) -> BackendFuture<Result<Option<String>, Error>>;

    /// Whether `name` exists in the backend: [`acquire`](Self::acquire)
    /// creates a missing name, and names are kept for good (as lock files
    /// are), so a host asks this before letting a plugin create one more, to
    /// bound what plugins leave behind as a lock directory's file budget does.
    fn exists(&self, name: &str) -> BackendFuture<Result<bool, Error>>;
}

/// A lock held through a [`LockBackend`]; dropping it releases the lock.
pub trait BackendLock: Send + Sync + fmt::Debug {
    /// What this holder recorded.
    fn content(&self) -> Option<&str>;

    /// This acquisition's fencing token, if the backend issues them.
    fn token(&self) -> Option<u64>;

    /// Whether the lock is still held, as far as this process knows: unlike
    /// a lock file, a backend's lock can be lost (its session ended).
    fn held(&self) -> bool;

    /// Releases the lock; `Err` if it had been lost meanwhile (it is free
    /// either way).
    fn release(self: Box<Self>) -> BackendFuture<Result<(), Error>>;
}
