//! A wait in the queue: each waiter watches the key created just before its
//! own, and looks again when that key is deleted (released, or ended with
//! its lease), so a release wakes exactly the next waiter, and nobody polls.

use std::time::Duration;

use etcd_client::{
    EventType, GetOptions, SortOrder, SortTarget, Txn, TxnOp, WatchFilterType, WatchOptions,
};

use crate::keys::Keys;
use crate::locker::{kv_of, revision};
use crate::{Error, EtcdLocker};

/// Returns once the queue key created at `created` is the first of `keys`'
/// queue; fails if the cluster does.
pub(crate) async fn wait_for_turn(
    locker: &EtcdLocker,
    name: &str,
    keys: &Keys,
    created: i64,
) -> Result<(), Error> {
    let inner = &locker.inner;
    loop {
        let before = GetOptions::new()
            .with_range(keys.queue_end())
            .with_max_create_revision(created - 1)
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_limit(1)
            .with_keys_only();
        let read = Txn::new().and_then([TxnOp::get(keys.queue.clone(), Some(before))]);
        let answer = locker.txn("lock", name, read).await?;
        let Some(ahead) = kv_of(answer.op_responses().first()) else {
            return Ok(());
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
                Ok(None) | Err(_) => {
                    // The stream broke (an endpoint went away): look again,
                    // after a pause that keeps a failing cluster from being
                    // asked in a loop.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    break;
                }
            }
        }
    }
}
