//! One etcd lease, shared by a locker's queue keys: granted once, renewed by
//! one keep-alive stream every heartbeat, and declared lost by this
//! process's own clock a notice before the deadline the last confirmed
//! renewal gives, whatever the network does. It is never revoked when lost:
//! the server ends it at its TTL, by when whatever its locks protect has
//! stopped.
//!
//! Each renewal is followed by one transaction that checks that every held
//! lock's queue key is still there with its own revision (someone may have
//! deleted it): a lock whose key is gone is lost at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, Txn, TxnOp};
use lockfile_core::lease::Lease;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout_at};

use crate::error::describe;

/// How many keys one ownership check compares: below etcd's default limit of
/// 128 operations a transaction.
const CHECK_CHUNK: usize = 100;

/// The lease's timing, from the locker's settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub lease: Lease,
    pub heartbeat: Duration,
    pub answer_within: Duration,
}

impl Timing {
    /// The TTL asked of etcd, in its unit: the lease rounded up to whole
    /// seconds, so the server never ends it before this process's deadline.
    pub fn ttl(&self) -> i64 {
        let length = self.lease.length;
        let whole = length.as_secs() + u64::from(length.subsec_nanos() > 0);
        i64::try_from(whole.max(1)).unwrap_or(i64::MAX)
    }
}

/// A lock held on the lease: its queue key's revision, and where to say it
/// is lost.
struct Held {
    revision: i64,
    lost: watch::Sender<Option<String>>,
}

/// A granted lease and its renewal.
pub(crate) struct Grant {
    pub id: i64,
    lost: watch::Sender<Option<String>>,
    deadline: watch::Sender<Instant>,
    held: Mutex<HashMap<Vec<u8>, Held>>,
    renewal: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("id", &format_args!("{:x}", self.id))
            .field("lost", &*self.lost.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.lock().unwrap().take() {
            renewal.abort();
        }
    }
}

impl Grant {
    /// Grants a lease of `timing`'s TTL and starts renewing it. The grant's
    /// own answer counts as its first renewal: sent at `sent`.
    pub async fn new(client: &Client, timing: Timing) -> Result<Arc<Self>, etcd_client::Error> {
        let sent = Instant::now();
        let granted = client.lease_client().grant(timing.ttl(), None).await?;
        let (lost, _) = watch::channel(None);
        let (deadline, _) = watch::channel(timing.lease.deadline(sent));
        let grant = Arc::new(Grant {
            id: granted.id(),
            lost,
            deadline,
            held: Mutex::new(HashMap::new()),
            renewal: Mutex::new(None),
        });
        let renewal = tokio::spawn(renew(client.clone(), Arc::downgrade(&grant), timing));
        *grant.renewal.lock().unwrap() = Some(renewal);
        Ok(grant)
    }

    /// Why the lease was lost, if it was.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.borrow().clone()
    }

    /// Completes with the reason when the lease is lost.
    pub async fn lost(&self) -> String {
        let mut lost = self.lost.subscribe();
        let reason = lost
            .wait_for(Option::is_some)
            .await
            .map(|reason| reason.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    }

    /// The deadline as it moves.
    pub fn deadline(&self) -> watch::Receiver<Instant> {
        self.deadline.subscribe()
    }

    /// Records a lock held by `key` at `revision`: the lease's loss, or the
    /// key's, is said on the receiver returned. `None` if the lease is lost
    /// already.
    pub fn hold(&self, key: Vec<u8>, revision: i64) -> Option<watch::Receiver<Option<String>>> {
        let mut held = self.held.lock().unwrap();
        if self.lost.borrow().is_some() {
            return None;
        }
        let (lost, receiver) = watch::channel(None);
        held.insert(key, Held { revision, lost });
        Some(receiver)
    }

    /// Forgets a held lock: its loss is no longer said. Returns why it had
    /// been lost, if it had.
    pub fn unhold(&self, key: &[u8]) -> Option<String> {
        let held = self.held.lock().unwrap().remove(key);
        held.and_then(|held| held.lost.borrow().clone())
            .or_else(|| self.lost_reason())
    }

    /// Declares the lease lost, with every lock on it; it is not renewed
    /// again, and ends on the server at its TTL.
    pub fn lose(&self, reason: &str) {
        let held = self.held.lock().unwrap();
        if self.lost.borrow().is_some() {
            return;
        }
        // The holder says it, once, with the lock's name (a lost lock's error).
        log::info!("etcd lease {:x} lost: {reason}", self.id);
        self.lost.send_replace(Some(reason.to_owned()));
        for lock in held.values() {
            lock.lost.send_if_modified(|lost| {
                lost.get_or_insert_with(|| reason.to_owned());
                true
            });
        }
        if let Some(renewal) = self.renewal.lock().unwrap().take() {
            renewal.abort();
        }
    }

    /// The held locks' keys and revisions, for an ownership check.
    fn held_keys(&self) -> Vec<(Vec<u8>, i64)> {
        let held = self.held.lock().unwrap();
        held.iter()
            .map(|(key, held)| (key.clone(), held.revision))
            .collect()
    }

    /// Says that the lock of `key` is lost: its key is gone.
    fn lose_one(&self, key: &[u8], reason: &str) {
        if let Some(held) = self.held.lock().unwrap().get(key) {
            held.lost.send_replace(Some(reason.to_owned()));
        }
    }
}

/// Renews the lease every heartbeat until it is lost or dropped; declares it
/// lost at the notice before its deadline if no renewal was confirmed.
async fn renew(client: Client, grant: Weak<Grant>, timing: Timing) {
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = Instant::now() + timing.heartbeat;
    loop {
        let Some(deadline) = grant.upgrade().map(|grant| *grant.deadline.borrow()) else {
            return;
        };
        let stop_at = timing.lease.stop_at(deadline);
        sleep_until(next.min(stop_at).into()).await;
        let Some(current) = grant.upgrade() else {
            return;
        };
        if Instant::now() >= stop_at {
            current.lose(&format!(
                "no renewal of its lease was confirmed for {:?}: stopped {:?} before the lease ends",
                timing.lease.length - timing.lease.margin() - timing.lease.notice,
                timing.lease.notice
            ));
            return;
        }
        let id = current.id;
        drop(current);
        let sent = Instant::now();
        next = sent + timing.heartbeat;
        let limit = (sent + timing.answer_within).min(stop_at);
        let answer = timeout_at(limit.into(), async {
            if stream.is_none() {
                // Opening the stream sends a renewal and reads its answer.
                let (keeper, opened) = client.lease_client().keep_alive(id).await?;
                stream = Some((keeper, opened));
                return Ok(Some(timing.ttl()));
            }
            let (keeper, responses) = stream.as_mut().expect("opened above");
            keeper.keep_alive().await?;
            responses
                .message()
                .await
                .map(|answer| answer.map(|answer| answer.ttl()))
        })
        .await;
        let Some(grant_now) = grant.upgrade() else {
            return;
        };
        match answer {
            Ok(Ok(Some(ttl))) if ttl > 0 => {
                grant_now.deadline.send_replace(timing.lease.deadline(sent));
                check_ownership(&client, &grant_now, timing, stop_at).await;
            }
            Ok(Ok(Some(_))) => {
                grant_now.lose("the lease had ended on the server");
                return;
            }
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(message)))
                if message.contains("not found") =>
            {
                grant_now.lose("the lease had ended on the server");
                return;
            }
            Ok(Ok(None)) => {
                log::info!("etcd lease {id:x}: the renewal stream ended; reopening it");
                stream = None;
            }
            Ok(Err(error)) => {
                log::info!("etcd lease {id:x}: renewal failed: {}", describe(&error));
                stream = None;
            }
            Err(_) => {
                log::info!(
                    "etcd lease {id:x}: no answer to a renewal within {:?}",
                    limit - sent
                );
                stream = None;
            }
        }
    }
}

/// Checks that every held lock's key is still there with its own revision;
/// a lock whose key is gone is lost. A check that fails or does not answer
/// proves nothing: the next renewal tries again.
async fn check_ownership(client: &Client, grant: &Grant, timing: Timing, stop_at: Instant) {
    let keys = grant.held_keys();
    let limit = (Instant::now() + timing.answer_within).min(stop_at);
    for chunk in keys.chunks(CHECK_CHUNK) {
        let compares: Vec<Compare> = chunk
            .iter()
            .map(|(key, revision)| {
                Compare::create_revision(key.clone(), CompareOp::Equal, *revision)
            })
            .collect();
        let reads: Vec<TxnOp> = chunk
            .iter()
            .map(|(key, _)| {
                TxnOp::get(
                    key.clone(),
                    Some(etcd_client::GetOptions::new().with_keys_only()),
                )
            })
            .collect();
        let txn = Txn::new().when(compares).or_else(reads);
        let answer = timeout_at(limit.into(), client.kv_client().txn(txn)).await;
        let Ok(Ok(answer)) = answer else {
            return;
        };
        if answer.succeeded() {
            continue;
        }
        for ((key, revision), read) in chunk.iter().zip(answer.op_responses()) {
            let found = match read {
                etcd_client::TxnOpResponse::Get(got) => {
                    got.kvs().first().map(|kv| kv.create_revision())
                }
                _ => continue,
            };
            if found != Some(*revision) {
                grant.lose_one(
                    key,
                    "its key was deleted on the server (by hand, or by another client)",
                );
            }
        }
    }
}
