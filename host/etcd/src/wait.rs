//! A wait in the queue: each waiter watches the key created just before its
//! own, and looks again when that key is deleted (released, or ended with
//! its lease), so a release wakes exactly the next waiter, and nobody polls.
//!
//! A wait outlives a cluster's failures (an election, an endpoint that goes
//! away): its key stays in the queue on the lease, which its process renews
//! through them, so a request that fails is tried again after a pause, for
//! as long as the caller waits.

use std::time::Duration;

use etcd_client::{
    EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp, WatchFilterType, WatchOptions,
};

use crate::keys::Keys;
use crate::locker::{kv_of, revision};
use crate::{Error, EtcdLocker};

/// The pause after a failed request, doubled at each failure in a row up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// Returns once the queue key created at `created` is the first of `keys`'
/// queue; the caller bounds the wait.
pub(crate) async fn wait_for_turn(locker: &EtcdLocker, name: &str, keys: &Keys, created: i64) {
    let mut pause = FIRST_PAUSE;
    loop {
        match look_and_watch(locker, name, keys, created).await {
            Ok(true) => return,
            Ok(false) => pause = FIRST_PAUSE,
            Err(error) => {
                log::info!("waiting for '{name}': {error}; trying again in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
        }
    }
}

/// Whether the key created at `created` is first; if not, waits until the
/// key just before it is deleted (or its watch ends) and says `false`.
async fn look_and_watch(
    locker: &EtcdLocker,
    name: &str,
    keys: &Keys,
    created: i64,
) -> Result<bool, Error> {
    let inner = &locker.inner;
    {
        let before = GetOptions::new()
            .with_range(keys.queue_end())
            .with_max_create_revision(created - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let read = Txn::new().and_then([TxnOp::get(keys.queue.clone(), Some(before))]);
        let answer = locker.txn("lock", name, read).await?;
        let Some(ahead) = kv_of(answer.op_responses().first()) else {
            return Ok(true);
        };
        // From the revision read, so that a deletion since is not missed.
        let options = WatchOptions::new()
            .with_start_revision(revision(&answer) + 1)
            .with_filters([WatchFilterType::NoPut]);
        let mut watches = inner.client.watch_client();
        let limit = inner.timing.answer_within;
        let mut watch =
            match tokio::time::timeout(limit, watches.watch(ahead.key(), Some(options))).await {
                Ok(Ok(watch)) => watch,
                Ok(Err(error)) => return Err(Error::etcd("lock", name, &inner.url.shown, error)),
                Err(_) => return Err(Error::no_answer("lock", name, &inner.url.shown, limit)),
            };
        loop {
            match watch.message().await {
                Ok(Some(answer)) => {
                    let deleted = answer
                        .events()
                        .iter()
                        .any(|event| event.event_type() == EventType::Delete);
                    if deleted || answer.canceled() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => return Err(Error::etcd("lock", name, &inner.url.shown, error)),
            }
        }
        Ok(false)
    }
}
