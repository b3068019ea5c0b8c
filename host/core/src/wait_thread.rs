//! Waiting for a lock file on a thread of its own, for callers that want a
//! future and have no runtime to lend (a [`LockBackend`](crate::LockBackend)
//! is driven by whoever awaits it).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::{
    Attempt, BackendFuture, BackendLock, Error, LockFile, PendingLock, WaitSchedule, sleep_or_watch,
};

impl PendingLock {
    /// A [`LockBackend::acquire`](crate::LockBackend::acquire) of this lock
    /// file: one try in line (a ready future, with no thread, if it decides),
    /// then, if the options asked to wait, [`wait_on_thread`](Self::wait_on_thread).
    pub fn acquire(self) -> BackendFuture<Result<Box<dyn BackendLock>, Error>> {
        let ready = |outcome| -> BackendFuture<_> { Box::pin(std::future::ready(outcome)) };
        let pending = match self.try_lock() {
            Ok(Attempt::Taken(lock)) => return ready(Ok(Box::new(lock) as Box<dyn BackendLock>)),
            Ok(Attempt::Held(pending)) if !pending.wait_limit().is_zero() => pending,
            Ok(Attempt::Held(pending)) => return ready(Err(pending.into_error())),
            Err(error) => return ready(Err(error)),
        };
        let waiting = pending.wait_on_thread();
        Box::pin(async move { Ok(Box::new(waiting.await?) as Box<dyn BackendLock>) })
    }

    /// Waits for the lock, for as long as the options asked, on a new thread
    /// that only ever makes non-blocking tries and stops trying once the
    /// future is dropped, so a waiter that gave up never takes the lock late.
    /// Between tries it sleeps on the file's [`ReleaseWatch`](crate::ReleaseWatch)
    /// (or the fallback poll), as [`LockOptions::lock`](crate::LockOptions::lock) does.
    pub fn wait_on_thread(self) -> BackendFuture<Result<LockFile, Error>> {
        let shared = Arc::new(Mutex::new(Waiting::default()));
        let thread_shared = shared.clone();
        let path = self.path().to_owned();
        let spawned = std::thread::Builder::new()
            .name("lockfile-wait".into())
            .spawn(move || wait_for(self, &thread_shared));
        if let Err(error) = spawned {
            let error = Error::io(
                "wait for",
                path,
                std::io::Error::new(
                    error.kind(),
                    format!("couldn't start a waiting thread: {error}"),
                ),
            );
            return Box::pin(std::future::ready(Err(error)));
        }
        Box::pin(ThreadWait { shared })
    }
}

/// What a waiting thread and its future share.
#[derive(Default)]
struct Waiting {
    /// Set when the future is dropped: no try is made after it.
    dropped: bool,
    outcome: Option<Result<LockFile, Error>>,
    waker: Option<Waker>,
}

fn lock(shared: &Mutex<Waiting>) -> MutexGuard<'_, Waiting> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The waiting thread: tries under the shared lock, so a try and the
/// future's drop never overlap; sleeps between tries on the file's release
/// watch (or the fallback poll).
fn wait_for(pending: PendingLock, shared: &Mutex<Waiting>) {
    let mut watch = pending.release_watch().ok();
    let mut schedule = WaitSchedule::new(pending.wait_limit());
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

/// A wait in progress on its thread.
struct ThreadWait {
    shared: Arc<Mutex<Waiting>>,
}

impl Future for ThreadWait {
    type Output = Result<LockFile, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = lock(&self.shared);
        match state.outcome.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                state.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for ThreadWait {
    fn drop(&mut self) {
        // A lock taken before this (and not handed over) is dropped with
        // the state: released, as after any acquire and release.
        let mut state = lock(&self.shared);
        state.dropped = true;
        state.outcome = None;
    }
}
