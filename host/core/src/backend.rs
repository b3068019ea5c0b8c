//! The lock backend boundary: what a host (the wasmtime glue, the CLI) asks of
//! a place where locks live: lock files ([`FileBackend`](crate::FileBackend)),
//! a database, the next engine. Everything a caller needs goes through it:
//! taking a lock with one try or a wait, reading and inspecting it without
//! the lock, learning that a held lock was lost, and handing a lock to a
//! spawned command where the backend can.
//!
//! Templates and the record rules stay with the caller
//! ([`LockOptions::render_content`](crate::LockOptions::render_content)):
//! a backend receives the rendered content, so records are the same
//! everywhere. Names are lock paths ([`check_lock_path`](crate::check_lock_path)),
//! and outcomes are this crate's [`Error`]s, worded as for lock files.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::Error;

/// A boxed future that the backend drives itself (on a runtime of its own):
/// it may be awaited from any executor, or blocked on from a thread that
/// runs none.
pub type BackendFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Reads a leased lock's deadline as it moves ([`BackendLock::deadline`]).
pub type DeadlineReader = Box<dyn Fn() -> Instant + Send + Sync>;

/// Where locks live.
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

    /// [`acquire`](Self::acquire), blocking the calling thread until it is
    /// done: for synchronous hosts. Backends that can wait on the calling
    /// thread itself (lock files) override it, so a wait costs no thread.
    fn acquire_blocking(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> Result<Box<dyn BackendLock>, Error> {
        block_on(self.acquire(name, content, wait))
    }

    /// What the holder of `name` recorded (or the last holder), without
    /// taking the lock.
    fn read_content(&self, name: &str) -> BackendFuture<Result<Option<String>, Error>>;

    /// The record, whether the lock is held now (and by whom, if the backend
    /// can tell), and the last fencing token, without taking the lock.
    fn inspect(&self, name: &str) -> BackendFuture<Result<Inspection, Error>>;

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

    /// A future that completes, with the reason, if the lock is lost while
    /// held; `None` for locks that cannot be lost (a lock file's lasts as
    /// long as its descriptor).
    fn lost(&self) -> Option<BackendFuture<String>> {
        None
    }

    /// For a leased lock, a reader of when whatever it protects must have
    /// stopped, by this process's monotonic clock: after that, another holder
    /// may start. It moves on while the lease is renewed, and stays put once
    /// the lock is lost; [`lost`](Self::lost) completes a notice before it,
    /// so that a holder can be stopped in time. `None` for locks that are
    /// never taken from their holder.
    fn deadline(&self) -> Option<DeadlineReader> {
        None
    }

    /// Lets the process `command` spawns hold the lock too, as flock(1)'s
    /// command holds its lock file: `true` if it will, and the lock then
    /// stays held while that process (or anything it starts that keeps the
    /// lock) runs, even if this one dies. `false` where the lock belongs to
    /// this process alone (a database session; any lock on Windows): the
    /// caller must then tie the command's life to its own.
    fn share_with(&mut self, command: &mut std::process::Command) -> bool {
        let _ = command;
        false
    }
}

/// What [`LockBackend::inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The holder's record, or the last holder's; `None` if there is none.
    pub content: Option<String>,
    /// Whether the lock is held now.
    pub locked: Locked,
    /// The last fencing token issued for the name, if the backend issues them
    /// and the name was ever locked.
    pub token: Option<u64>,
    /// What is left of the last holder's lease, for a backend that leases
    /// its locks: `None` once released (or never taken, or not leased), zero
    /// once ended.
    pub lease_left: Option<Duration>,
}

/// Whether a lock is held, as far as the backend can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// Held, by the holder described if the backend can tell (`pid 4242`,
    /// `backend pid 4242`).
    Yes(Option<String>),
    /// Free.
    No,
    /// The backend cannot tell (lock files on systems without a lock table
    /// to read).
    Unknown,
}

/// Runs `future` to completion on the calling thread, which sleeps between
/// polls: for synchronous callers of a [`LockBackend`], whose futures make
/// progress on their own (see the trait's docs).
pub fn block_on<T>(mut future: BackendFuture<T>) -> T {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}
