use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::timeout;

use crate::Error;
use crate::error::describe;
use crate::pool::Inner;
use crate::shared::{LockSession, SlotWatch};
use lockfile_core::lease::Lease;

/// A lock held on the database: a session-level advisory lock, on one of the
/// few sessions the locker's locks share.
///
/// Released by [`release`](Self::release), which also ends its lease. Dropping
/// the value unlocks it without ending the lease, as a crash would leave it:
/// the next holder then waits the lease out.
///
/// Unlike a lock file, it can be **lost** while held: when its session ends
/// (the server restarts or fails over, the network drops, the server stops
/// answering), the server frees the lock and someone else may take it.
/// [`held`](Self::held) and [`lost_notify`](Self::lost_notify) say so within
/// a heartbeat when the loss is seen, and at the latest the lease's notice
/// before its [`deadline`](Self::deadline), when the lease could not be
/// renewed; the next holder does not start before that deadline. Guard what
/// the lock protects with the [`token`](Self::token) too: a holder paused
/// for longer than the lease (SIGSTOP, a frozen machine) can only be turned
/// away there.
pub struct PgLock {
    pub(crate) inner: Arc<Inner>,
    /// `None` once released.
    home: Option<Arc<LockSession>>,
    lost: watch::Receiver<Option<String>>,
    deadline: watch::Receiver<Instant>,
    name: String,
    key: i64,
    token: u64,
    content: Option<String>,
}

impl std::fmt::Debug for PgLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLock")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("content", &self.content)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl PgLock {
    /// The lock taken on `home` (which has recorded it as `watch`), whose
    /// key this locker's table holds for it.
    pub(crate) fn new(
        inner: Arc<Inner>,
        home: Arc<LockSession>,
        watch: SlotWatch,
        name: String,
        key: i64,
        token: u64,
        content: Option<String>,
    ) -> Self {
        PgLock {
            inner,
            home: Some(home),
            lost: watch.lost,
            deadline: watch.deadline,
            name,
            key,
            token,
            content,
        }
    }

    /// The lock's name, as it was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This acquisition's fencing token: larger than every token issued
    /// before for this name, in this namespace. Pass it to what the lock
    /// protects, and have that refuse any token lower than one it has seen:
    /// a holder that lost the lock without noticing yet is then turned away.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// What this holder recorded; `None` if it recorded nothing.
    pub fn content(&self) -> Option<&str> {
        self.content.as_deref()
    }

    /// Whether the lock is still held: `false` once its session has ended.
    /// Checks what this process knows, without a round trip; the session is
    /// checked every heartbeat interval (1 s by default) and the loss known
    /// within the heartbeat timeout (5 s) even if the server goes silent.
    pub fn held(&self) -> bool {
        self.lost.borrow().is_none() && self.home.as_ref().is_some_and(|home| home.alive())
    }

    /// When whatever this lock protects must have stopped, by this process's
    /// monotonic clock: the end of the lease the server last confirmed, less
    /// the clocks' margin. It moves on with every renewal while the lock is
    /// held, and stays put once the lock is lost: after it, another holder
    /// may start.
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }

    /// The deadline as it moves, for a reader that outlives a borrow.
    pub(crate) fn deadline_watch(&self) -> watch::Receiver<Instant> {
        self.deadline.clone()
    }

    /// Waits out the lease of a holder that vanished without releasing the
    /// lock, which the server said has `left` to run by its clock: that
    /// holder may run until then. Fails if this lock is lost meanwhile.
    pub(crate) async fn wait_out_prior(&self, left: Duration) -> Result<(), Error> {
        if left.is_zero() {
            return Ok(());
        }
        let wait = Lease::wait_out(left);
        log::info!(
            "the last holder of '{}' vanished without releasing it: waiting out its lease, {wait:?}",
            self.name
        );
        tokio::select! {
            reason = self.lost_notify() => Err(Error::Lost {
                name: self.name.clone(),
                reason,
            }),
            () = tokio::time::sleep(wait) => Ok(()),
        }
    }

    /// Why the lock was lost, if it was.
    pub fn lost_reason(&self) -> Option<String> {
        if let Some(reason) = &*self.lost.borrow() {
            return Some(reason.clone());
        }
        self.home
            .as_ref()
            .and_then(|home| home.session.end_reason())
    }

    /// A future that completes, with the reason, when the lock is lost; it
    /// never completes for a lock that is released instead. It owns what it
    /// needs, so it can be moved into a task that watches the lock.
    pub fn lost_notify(&self) -> impl Future<Output = String> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            let reason = lost
                .wait_for(Option::is_some)
                .await
                .map(|reason| reason.clone().unwrap_or_default());
            match reason {
                Ok(reason) => reason,
                // The heartbeat was stopped: the lock was released, not lost.
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Unlocks, and ends the lease: when this returns `Ok`, the lock is free
    /// on the server, and the next holder need not wait.
    ///
    /// [`Error::Lost`] if the lock had been lost meanwhile (its session
    /// ended, or it was not its own any more): the lock is free too, but it
    /// was not held all along.
    pub async fn release(mut self) -> Result<(), Error> {
        let home = self.home.take().expect("held until released");
        let lost = |reason: String| Error::Lost {
            name: self.name.clone(),
            reason,
        };
        // From here the heartbeat renews it no more.
        let was_lost = home.remove(self.key);
        let result = match was_lost.or_else(|| home.session.end_reason()) {
            Some(reason) => Err(lost(reason)),
            None => {
                let session = &home.session;
                let token = self.token as i64;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&self.key, &token];
                let release = session.client.query_one(&session.stmts.release, &params);
                match timeout(self.inner.settings.heartbeat_timeout, release).await {
                    Ok(Ok(row)) if row.get::<_, bool>(0) => Ok(()),
                    Ok(Ok(_)) => Err(lost(
                        "the server no longer counted it as held by this session".into(),
                    )),
                    Ok(Err(error)) => Err(lost(
                        session.end_reason().unwrap_or_else(|| describe(&error)),
                    )),
                    Err(_) => {
                        let reason = format!(
                            "no answer to the unlock within {:?}",
                            self.inner.settings.heartbeat_timeout
                        );
                        // A session that does not answer cannot be trusted
                        // to have let go: closing it does.
                        home.lose(&reason);
                        Err(lost(reason))
                    }
                }
            }
        };
        self.inner.unhold(self.key);
        self.inner.released(&home);
        result
    }
}

impl Drop for PgLock {
    /// Unlocks without ending the lease, as a crash would leave it.
    fn drop(&mut self) {
        let Some(home) = self.home.take() else {
            return;
        };
        let was_lost = home.remove(self.key);
        let inner = self.inner.clone();
        let key = self.key;
        let unlock = async move {
            if was_lost.is_none() && home.alive() {
                let session = &home.session;
                let limit = inner.settings.heartbeat_timeout;
                let unlocked = timeout(
                    limit,
                    session.client.query_one(&session.stmts.unlock, &[&key]),
                )
                .await;
                if !matches!(unlocked, Ok(Ok(_))) {
                    home.lose("no answer to the unlock of a dropped lock");
                }
            }
            inner.unhold(key);
            inner.released(&home);
        };
        let runtime =
            tokio::runtime::Handle::try_current().unwrap_or_else(|_| self.inner.runtime.clone());
        runtime.spawn(unlock);
    }
}
