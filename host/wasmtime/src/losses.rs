//! The losses of a plugin's locks, for the embedder to act on: a backend's
//! lock can be lost while the plugin holds it (a database session ends), and
//! a plugin that goes on as if it held it would run beside the next holder.
//! The embedder awaits [`LostLocks::next`] beside the plugin's call and
//! stops the plugin when it completes, as `lockfile run` does (exit 76).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use lockfile_core::BackendFuture;

/// The loss notices of the locks a plugin holds, keyed by their handles.
#[derive(Default)]
struct Watched {
    losses: HashMap<u32, (String, BackendFuture<String>)>,
    /// Whoever awaits [`LostLocks::next`], woken when a lock is added.
    waiter: Option<Waker>,
}

/// A plugin's lock losses, shared between its context (which adds and
/// removes locks as the plugin takes and releases them) and the embedder
/// (which awaits them). Cloning shares it.
#[derive(Clone, Default)]
pub struct LostLocks {
    watched: Arc<Mutex<Watched>>,
    /// `false` if the embedder opted out: then no loss is ever reported.
    enabled: bool,
}

impl std::fmt::Debug for LostLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LostLocks")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// A lock the plugin held that was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLock {
    /// The lock's path, as the plugin named it.
    pub path: String,
    /// Why it was lost.
    pub reason: String,
}

impl LostLocks {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            watched: Arc::default(),
            enabled,
        }
    }

    fn watched(&self) -> std::sync::MutexGuard<'_, Watched> {
        self.watched.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Watches the lock behind handle `rep` for its loss.
    pub(crate) fn watch(&self, rep: u32, path: &str, lost: BackendFuture<String>) {
        if !self.enabled {
            return;
        }
        let mut watched = self.watched();
        watched.losses.insert(rep, (path.to_owned(), lost));
        if let Some(waiter) = watched.waiter.take() {
            waiter.wake();
        }
    }

    /// Stops watching the lock behind handle `rep` (released, or dropped).
    pub(crate) fn forget(&self, rep: u32) {
        self.watched().losses.remove(&rep);
    }

    /// Completes when one of the plugin's locks is lost, with which and why;
    /// never, if none is, or if the embedder opted out
    /// ([`LockfileCtxBuilder::stop_on_lost_lock`](crate::LockfileCtxBuilder::stop_on_lost_lock)).
    /// Locks a plugin took only through a lock directory cannot be lost.
    pub fn next(&self) -> impl Future<Output = LostLock> + Send + 'static {
        let watched = self.watched.clone();
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut watched = watched.lock().unwrap_or_else(PoisonError::into_inner);
            let lost = watched.losses.iter_mut().find_map(|(&rep, (path, lost))| {
                match lost.as_mut().poll(cx) {
                    Poll::Ready(reason) => Some((rep, path.clone(), reason)),
                    Poll::Pending => None,
                }
            });
            if let Some((rep, path, reason)) = lost {
                watched.losses.remove(&rep);
                return Poll::Ready(LostLock { path, reason });
            }
            watched.waiter = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost_now() -> BackendFuture<String> {
        Box::pin(std::future::ready("the session ended".to_owned()))
    }

    fn poll_once(losses: &LostLocks) -> Poll<LostLock> {
        let mut next = std::pin::pin!(losses.next());
        next.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_loss_is_reported_once_with_its_path() {
        let losses = LostLocks::new(true);
        assert!(poll_once(&losses).is_pending());
        losses.watch(1, "job.lock", lost_now());
        assert_eq!(
            poll_once(&losses),
            Poll::Ready(LostLock {
                path: "job.lock".into(),
                reason: "the session ended".into()
            })
        );
        assert!(poll_once(&losses).is_pending());
    }

    #[test]
    fn a_released_lock_is_not_reported() {
        let losses = LostLocks::new(true);
        losses.watch(1, "job.lock", lost_now());
        losses.forget(1);
        assert!(poll_once(&losses).is_pending());
    }

    #[test]
    fn an_embedder_that_opted_out_is_never_told() {
        let losses = LostLocks::new(false);
        losses.watch(1, "job.lock", lost_now());
        assert!(poll_once(&losses).is_pending());
    }
}
