use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};
use tokio::sync::watch;

use crate::Error;
use crate::grant::Grant;
use crate::locker::Inner;

/// A lock held on etcd: the first key of its name's queue, on its locker's
/// lease.
///
/// Released by [`release`](Self::release), which deletes the key. Dropping
/// the value instead moves the key onto a lease of its own that nobody
/// renews, as a crash would leave it: the next holder gets the lock when
/// that lease ends.
///
/// It can be **lost** while held: when the lease could not be renewed in
/// time (a partition, a cluster without a quorum) or its key was deleted.
/// [`held`](Self::held) and [`lost_notify`](Self::lost_notify) say so, at
/// the latest the lease's notice before its [`deadline`](Self::deadline);
/// the next holder does not start before that deadline. Guard what the lock
/// protects with the [`token`](Self::token) too: a holder paused for longer
/// than the lease (SIGSTOP, a frozen machine) can only be turned away there.
pub struct EtcdLock {
    inner: Arc<Inner>,
    /// `None` once released.
    grant: Option<Arc<Grant>>,
    lost: watch::Receiver<Option<String>>,
    deadline: watch::Receiver<Instant>,
    name: String,
    entry: Vec<u8>,
    created: i64,
    token: u64,
    content: Option<String>,
}

impl std::fmt::Debug for EtcdLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLock")
            .field("name", &self.name)
            .field("token", &self.token)
            .field("content", &self.content)
            .field("held", &self.held())
            .finish_non_exhaustive()
    }
}

impl EtcdLock {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: Arc<Inner>,
        grant: Arc<Grant>,
        lost: watch::Receiver<Option<String>>,
        name: String,
        entry: Vec<u8>,
        created: i64,
        token: u64,
        content: Option<String>,
    ) -> Self {
        EtcdLock {
            inner,
            deadline: grant.deadline(),
            grant: Some(grant),
            lost,
            name,
            entry,
            created,
            token,
            content,
        }
    }

    /// The lock's name, as it was given.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This acquisition's fencing token: the revision at which it wrote its
    /// record, larger than every token issued before for this name (and
    /// than every revision before it on the cluster).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// What this holder recorded; `None` if it recorded nothing.
    pub fn content(&self) -> Option<&str> {
        self.content.as_deref()
    }

    /// Whether the lock is still held, as far as this process knows, without
    /// a round trip.
    pub fn held(&self) -> bool {
        self.lost.borrow().is_none()
    }

    /// When whatever this lock protects must have stopped, by this process's
    /// monotonic clock: it moves on with every renewal, and stays put once
    /// the lock is lost.
    pub fn deadline(&self) -> Instant {
        *self.deadline.borrow()
    }

    /// The runtime its locker runs on.
    pub(crate) fn runtime(&self) -> tokio::runtime::Handle {
        self.inner.runtime.clone()
    }

    /// The deadline as it moves.
    pub(crate) fn deadline_watch(&self) -> watch::Receiver<Instant> {
        self.deadline.clone()
    }

    /// A future that completes, with the reason, when the lock is lost; it
    /// never completes for a lock that is released instead.
    pub fn lost_notify(&self) -> impl Future<Output = String> + Send + 'static {
        let mut lost = self.lost.clone();
        async move {
            let reason = lost
                .wait_for(Option::is_some)
                .await
                .map(|reason| reason.clone().unwrap_or_default());
            match reason {
                Ok(reason) => reason,
                // Released, not lost.
                Err(_) => std::future::pending().await,
            }
        }
    }

    /// Deletes the key: when this returns `Ok`, the lock is free, and the
    /// next waiter has it. [`Error::Lost`] if it had been lost meanwhile.
    pub async fn release(mut self) -> Result<(), Error> {
        let grant = self.grant.take().expect("held until released");
        let lost = |reason: String| Error::Lost {
            name: self.name.clone(),
            reason,
        };
        if let Some(reason) = grant.unhold(&self.entry) {
            return Err(lost(reason));
        }
        let delete = Txn::new()
            .when([Compare::create_revision(
                self.entry.clone(),
                CompareOp::Equal,
                self.created,
            )])
            .and_then([TxnOp::delete(self.entry.clone(), None)]);
        let limit = self.inner.timing.answer_within;
        let mut kv = self.inner.client.kv_client();
        match tokio::time::timeout(limit, kv.txn(delete)).await {
            Ok(Ok(answer)) if answer.succeeded() => Ok(()),
            Ok(Ok(_)) => Err(lost("its key was gone from the server".into())),
            Ok(Err(error)) => {
                // The key may still be there, on a lease this process
                // renews: stop renewing it.
                let reason = format!("the release failed: {}", crate::error::describe(&error));
                grant.lose(&reason);
                Err(lost(reason))
            }
            Err(_) => {
                let reason = format!("no answer to the release within {limit:?}");
                grant.lose(&reason);
                Err(lost(reason))
            }
        }
    }
}

impl Drop for EtcdLock {
    /// Moves the key onto a lease of its own that nobody renews, as a crash
    /// would leave it; if that fails, the locker's lease stops being renewed.
    fn drop(&mut self) {
        let Some(grant) = self.grant.take() else {
            return;
        };
        if grant.unhold(&self.entry).is_some() {
            return;
        }
        let inner = self.inner.clone();
        let entry = std::mem::take(&mut self.entry);
        let created = self.created;
        let orphan = async move {
            let limit = inner.timing.answer_within;
            let moved = tokio::time::timeout(limit, async {
                let own = inner
                    .client
                    .lease_client()
                    .grant(inner.timing.ttl(), None)
                    .await?;
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        entry.clone(),
                        CompareOp::Equal,
                        created,
                    )])
                    .and_then([TxnOp::put(
                        entry,
                        "",
                        Some(PutOptions::new().with_lease(own.id()).with_ignore_value()),
                    )]);
                inner.client.kv_client().txn(txn).await
            })
            .await;
            if !matches!(moved, Ok(Ok(_))) {
                grant.lose("a dropped lock's key could not be left to end with a lease of its own");
            }
        };
        let runtime =
            tokio::runtime::Handle::try_current().unwrap_or_else(|_| self.inner.runtime.clone());
        runtime.spawn(orphan);
    }
}
