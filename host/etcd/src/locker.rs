use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use lockfile_core::lease::{self, Lease};

use crate::grant::{Grant, Timing};
use crate::keys::{self, Keys};
use crate::lock::EtcdLock;
use crate::url::{self, EtcdUrl};
use crate::wait::wait_for_turn;
use crate::{DEFAULT_NAMESPACE, Error};

/// Locks on one etcd cluster, under one namespace (a key prefix): connect
/// once per process and share it; it is cheap to clone.
///
/// Its locks' queue keys share one etcd lease, renewed by one stream; its
/// requests share one gRPC channel per endpoint.
#[derive(Clone)]
pub struct EtcdLocker {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub client: Client,
    pub url: EtcdUrl,
    pub namespace: String,
    pub timing: Timing,
    /// The lease new locks go on; a new one once it is lost.
    grant: tokio::sync::Mutex<Option<Arc<Grant>>>,
    /// Tells apart two queue keys of one lease.
    entries: AtomicU64,
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for EtcdLocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLocker")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// Settings for [`EtcdLocker::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    url: String,
    namespace: String,
    timing: Timing,
}

/// What [`EtcdLocker::inspect`] finds about a lock, without taking it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// What the last holder recorded (the holder's, if it is held).
    pub content: Option<String>,
    /// Whether a queue key holds the lock now.
    pub locked: bool,
    /// The etcd lease of the holder's key.
    pub holder_lease: Option<i64>,
    /// The fencing token of the last acquisition; `None` if never taken.
    pub token: Option<u64>,
    /// What is left of the holder's lease by the server's clock (to the
    /// second): `None` if nobody holds the lock.
    pub lease_left: Option<Duration>,
}

impl Builder {
    /// The namespace: the key prefix of the lock names (the lock `job.lock`
    /// in namespace `/locks/app` is the key `/locks/app/job.lock`). Default:
    /// `"default"`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How often the lease is renewed (default 1 s), and how long an answer
    /// may take (default 5 s): it bounds every request.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.timing.heartbeat = interval;
        self.timing.answer_within = timeout;
        self
    }

    /// How long a holder that vanished may still be running (default 15 s,
    /// etcd's TTL rounded up to whole seconds), and how long before it ends,
    /// by its own clock, a holder that cannot renew it is told the lock is
    /// lost (default 5 s). [`connect`](Self::connect) refuses settings where
    /// the heartbeat, its timeout, the notice and the clocks' margin do not
    /// fit in the lease.
    pub fn lease(mut self, lease: Duration, notice: Duration) -> Self {
        self.timing.lease = Lease {
            length: lease,
            notice,
        };
        self
    }

    /// Connects and checks that the cluster answers. Needs a tokio runtime
    /// with I/O and time enabled, which must keep running while the locker
    /// is used.
    ///
    /// Errors: [`Error::InvalidUrl`] (an unreadable CA file included),
    /// [`Error::InvalidNamespace`], [`Error::InvalidSettings`], and
    /// [`lockfile_core::Error::Io`] (`couldn't connect to '<url>': <why>`)
    /// when no endpoint answers or the login is refused.
    pub async fn connect(self) -> Result<EtcdLocker, Error> {
        let url = url::parse(&self.url)?;
        keys::check_namespace(&self.namespace)?;
        let timing = self.timing;
        lease::check(&timing.lease, timing.heartbeat, timing.answer_within)
            .map_err(|reason| Error::InvalidSettings { reason })?;
        let options = options(&url, &timing)?;
        let connecting = Client::connect(&url.endpoints, Some(options));
        let connected = tokio::time::timeout(timing.answer_within, async {
            let client = connecting.await?;
            // The channel connects lazily: one read proves the cluster
            // answers (with a leader) and accepts the login.
            let mut kv = client.kv_client();
            kv.get(
                self.namespace.as_bytes(),
                Some(GetOptions::new().with_count_only()),
            )
            .await?;
            Ok::<_, etcd_client::Error>(client)
        })
        .await;
        let client = match connected {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(Error::etcd("connect to", &url.shown, &url.shown, error)),
            Err(_) => {
                return Err(Error::no_answer(
                    "connect to",
                    &url.shown,
                    &url.shown,
                    timing.answer_within,
                ));
            }
        };
        Ok(EtcdLocker {
            inner: Arc::new(Inner {
                client,
                url,
                namespace: self.namespace,
                timing,
                grant: tokio::sync::Mutex::new(None),
                entries: AtomicU64::new(0),
                runtime: tokio::runtime::Handle::current(),
            }),
        })
    }
}

/// etcd-client's options for `url`: its user, TLS, and time limits from
/// `timing` (a request's answer; HTTP/2 pings each heartbeat, so that a
/// silent connection is dropped and another endpoint tried).
fn options(url: &EtcdUrl, timing: &Timing) -> Result<ConnectOptions, Error> {
    let mut options = ConnectOptions::new()
        .with_timeout(timing.answer_within)
        .with_connect_timeout(timing.answer_within)
        .with_keep_alive(timing.heartbeat, timing.answer_within)
        .with_keep_alive_while_idle(true)
        .with_tcp_keepalive(timing.heartbeat)
        .with_require_leader(true);
    if let Some((user, password)) = &url.user {
        // etcd's simple tokens expire (5 minutes by default): a held lock's
        // renewals and checks outlive them.
        options = options
            .with_user(user, password)
            .with_auto_token_refresh(true);
    }
    if url.tls {
        let tls = match &url.ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|error| Error::InvalidUrl {
                    url: url.shown.clone(),
                    reason: format!("cacert {}: {error}", path.display()),
                })?;
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(pem))
            }
            None => etcd_client::TlsOptions::new().with_native_roots(),
        };
        options = options.with_tls(tls);
    }
    Ok(options)
}

impl EtcdLocker {
    /// Connects to `url` with the default settings; see [`Builder::connect`].
    pub async fn connect(url: &str, namespace: &str) -> Result<EtcdLocker, Error> {
        Self::builder(url).namespace(namespace).connect().await
    }

    /// Settings beyond the URL and the namespace.
    pub fn builder(url: &str) -> Builder {
        Builder {
            url: url.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            timing: Timing {
                lease: Lease {
                    length: Duration::from_secs(15),
                    notice: Duration::from_secs(5),
                },
                heartbeat: Duration::from_secs(1),
                answer_within: Duration::from_secs(5),
            },
        }
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.inner.url.shown
    }

    /// Takes the lock `name`, recording `content` (`None` keeps the last
    /// holder's record), with one try if `wait` is zero, else queueing on
    /// the server for at most `wait`: [`lockfile_core::Error::Locked`] or
    /// [`TimedOut`](lockfile_core::Error::TimedOut) with the holder's record
    /// if it stays held. A lock that this locker holds already counts as
    /// held by someone else.
    pub async fn acquire(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> Result<EtcdLock, Error> {
        let keys = Keys::new(&self.inner.namespace, name)?;
        if let Some(content) = &content {
            keys::check_content(content)?;
        }
        let grant = self.grant(name).await?;
        let n = self.inner.entries.fetch_add(1, Ordering::Relaxed);
        let entry = keys.entry(grant.id, n);
        let on_lease = || Some(PutOptions::new().with_lease(grant.id));
        let started = Instant::now();
        // One round trip when the lock is free: the queue is empty, so the
        // new key is first, and the record is written beside it.
        let try_once = Txn::new()
            .when([
                Compare::create_revision(keys.queue.clone(), CompareOp::Equal, 0)
                    .with_range(keys.queue_end()),
            ])
            .and_then([
                TxnOp::put(entry.clone(), "", on_lease()),
                record(&keys, content.as_deref()),
            ])
            .or_else([TxnOp::get(keys.record.clone(), None)]);
        let tried = self.txn("lock", name, try_once).await?;
        if tried.succeeded() {
            let revision = revision(&tried);
            return self.held(&grant, name, entry, revision, revision, content);
        }
        if wait.is_zero() {
            return Err(lockfile_core::Error::Locked {
                path: name.into(),
                holder: record_of(&tried),
            }
            .into());
        }
        // Queue behind the holder and whoever waits already.
        let queued = self
            .txn(
                "lock",
                name,
                Txn::new().and_then([TxnOp::put(entry.clone(), "", on_lease())]),
            )
            .await?;
        let created = revision(&queued);
        let mut queued = Queued {
            locker: self,
            entry: Some(entry),
        };
        let until = started + wait;
        let turn = tokio::select! {
            taken = async {
                wait_for_turn(self, name, &keys, created).await;
                // First in the queue: record, if the key is still there.
                let take = Txn::new()
                    .when([Compare::create_revision(
                        queued.entry.clone().expect("queued"),
                        CompareOp::Equal,
                        created,
                    )])
                    .and_then([record(&keys, content.as_deref())]);
                self.txn_retried(name, take).await
            } => Some(Ok(taken)),
            () = tokio::time::sleep_until(until.into()) => None,
            reason = grant.lost() => Some(Err(Error::Lost { name: name.to_owned(), reason })),
        };
        match turn {
            None => {
                queued.leave().await;
                let holder = self.read_content(name).await.ok().flatten();
                Err(lockfile_core::Error::TimedOut {
                    path: name.into(),
                    holder,
                    waited: wait,
                }
                .into())
            }
            Some(Err(error)) => {
                queued.leave().await;
                Err(error)
            }
            Some(Ok(taken)) => {
                let entry = queued.entry.clone().expect("queued");
                if !taken.succeeded() {
                    return Err(Error::Lost {
                        name: name.to_owned(),
                        reason: grant.lost_reason().unwrap_or_else(|| {
                            "its queue key was deleted on the server while it waited".into()
                        }),
                    });
                }
                queued.entry = None;
                self.held(&grant, name, entry, created, revision(&taken), content)
            }
        }
    }

    /// The lock taken: held on `grant` by `entry`, created at `created`,
    /// recorded at revision `token`.
    fn held(
        &self,
        grant: &Arc<Grant>,
        name: &str,
        entry: Vec<u8>,
        created: i64,
        token: i64,
        content: Option<String>,
    ) -> Result<EtcdLock, Error> {
        let lost = grant
            .hold(entry.clone(), created)
            .ok_or_else(|| Error::Lost {
                name: name.to_owned(),
                reason: grant.lost_reason().unwrap_or_default(),
            })?;
        Ok(EtcdLock::new(
            self.inner.clone(),
            grant.clone(),
            lost,
            name.to_owned(),
            entry,
            created,
            u64::try_from(token).unwrap_or_default(),
            content,
        ))
    }

    /// The lease new locks go on: the current one, or a new one if there is
    /// none yet or it was lost.
    async fn grant(&self, name: &str) -> Result<Arc<Grant>, Error> {
        let mut current = self.inner.grant.lock().await;
        if let Some(grant) = &*current
            && grant.lost_reason().is_none()
        {
            return Ok(grant.clone());
        }
        let limit = self.inner.timing.answer_within;
        let grant =
            match tokio::time::timeout(limit, Grant::new(&self.inner.client, self.inner.timing))
                .await
            {
                Ok(Ok(grant)) => grant,
                Ok(Err(error)) => {
                    return Err(Error::etcd("lock", name, &self.inner.url.shown, error));
                }
                Err(_) => return Err(Error::no_answer("lock", name, &self.inner.url.shown, limit)),
            };
        *current = Some(grant.clone());
        Ok(grant)
    }

    /// Runs `txn` for `operation` on `name`, within the answer timeout.
    pub(crate) async fn txn(
        &self,
        operation: &'static str,
        name: &str,
        txn: Txn,
    ) -> Result<TxnResponse, Error> {
        let limit = self.inner.timing.answer_within;
        let mut kv = self.inner.client.kv_client();
        match tokio::time::timeout(limit, kv.txn(txn)).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(Error::etcd(operation, name, &self.inner.url.shown, error)),
            Err(_) => Err(Error::no_answer(
                operation,
                name,
                &self.inner.url.shown,
                limit,
            )),
        }
    }

    /// Runs `txn` on `name` until the cluster answers: for a waiter, whose
    /// caller bounds the time.
    async fn txn_retried(&self, name: &str, txn: Txn) -> TxnResponse {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.txn("lock", name, txn.clone()).await {
                Ok(answer) => return answer,
                Err(error) => {
                    log::info!("taking '{name}': {error}; trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// What the holder of `name` recorded (or the last holder), without
    /// taking the lock.
    pub async fn read_content(&self, name: &str) -> Result<Option<String>, Error> {
        let keys = Keys::new(&self.inner.namespace, name)?;
        let read = Txn::new().and_then([TxnOp::get(keys.record, None)]);
        Ok(record_of(&self.txn("read", name, read).await?))
    }

    /// The record, whether the lock is held now (and on which lease), the
    /// last fencing token and what is left of the holder's lease, without
    /// taking the lock.
    pub async fn inspect(&self, name: &str) -> Result<Inspection, Error> {
        let keys = Keys::new(&self.inner.namespace, name)?;
        let read = Txn::new().and_then([
            TxnOp::get(keys.record.clone(), None),
            TxnOp::get(keys.queue.clone(), Some(first_in(&keys))),
        ]);
        let answer = self.txn("inspect", name, read).await?;
        let reads = answer.op_responses();
        let record = kv_of(reads.first());
        let holder = kv_of(reads.get(1));
        let mut found = Inspection {
            content: record.as_ref().and_then(content_of),
            locked: holder.is_some(),
            holder_lease: holder.as_ref().map(KeyValue::lease).filter(|&id| id != 0),
            token: record
                .as_ref()
                .map(|kv| u64::try_from(kv.mod_revision()).unwrap_or_default()),
            lease_left: None,
        };
        if let Some(id) = found.holder_lease {
            let limit = self.inner.timing.answer_within;
            let mut leases = self.inner.client.lease_client();
            let left = tokio::time::timeout(limit, leases.time_to_live(id, None)).await;
            if let Ok(Ok(left)) = left {
                found.lease_left = Some(Duration::from_secs(left.ttl().max(0).unsigned_abs()));
            }
        }
        Ok(found)
    }

    /// Whether `name` was ever locked: its record key exists (kept for good,
    /// as lock files are).
    pub async fn exists(&self, name: &str) -> Result<bool, Error> {
        let keys = Keys::new(&self.inner.namespace, name)?;
        let read = Txn::new().and_then([TxnOp::get(
            keys.record,
            Some(GetOptions::new().with_count_only()),
        )]);
        let answer = self.txn("read", name, read).await?;
        Ok(match answer.op_responses().first() {
            Some(TxnOpResponse::Get(got)) => got.count() > 0,
            _ => false,
        })
    }

    /// Deletes a queue key this locker no longer wants, in the background
    /// (a wait that ended without the lock): if it cannot, the key ends with
    /// the lease.
    pub(crate) fn abandon(&self, entry: Vec<u8>) {
        self.inner.runtime.spawn(self.delete_entry(entry));
    }

    /// The bounded deletion of a queue key (within the answer timeout; an
    /// error or no answer leaves the key to end with the lease), owning what
    /// it needs, so that it can be awaited or spawned.
    fn delete_entry(&self, entry: Vec<u8>) -> impl Future<Output = ()> + Send + 'static {
        let mut kv = self.inner.client.kv_client();
        let limit = self.inner.timing.answer_within;
        async move {
            let _ = tokio::time::timeout(limit, kv.delete(entry, None)).await;
        }
    }
}

/// A queue key that is deleted unless the lock is taken: a wait that times
/// out, fails or is cancelled leaves nothing behind.
struct Queued<'a> {
    locker: &'a EtcdLocker,
    entry: Option<Vec<u8>>,
}

impl Queued<'_> {
    /// Deletes the queue key now and waits for the answer (within the answer
    /// timeout): a process that ends right after a wait ran out, as `lockfile
    /// exec` does, would otherwise end before a deletion in the background
    /// was sent, leaving its key ahead of every later taker until its lease
    /// ended.
    async fn leave(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.locker.delete_entry(entry).await;
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.locker.abandon(entry);
        }
    }
}

/// The write of a holder's record: `content`, or for `None`, the last
/// holder's kept (an empty record if there was none). Either way the key's
/// revision moves on, and is the acquisition's fencing token.
fn record(keys: &Keys, content: Option<&str>) -> TxnOp {
    match content {
        Some(content) => TxnOp::put(keys.record.clone(), content, None),
        None => TxnOp::txn(
            Txn::new()
                .when([Compare::version(keys.record.clone(), CompareOp::Greater, 0)])
                .and_then([TxnOp::put(
                    keys.record.clone(),
                    "",
                    Some(PutOptions::new().with_ignore_value()),
                )])
                .or_else([TxnOp::put(keys.record.clone(), "", None)]),
        ),
    }
}

/// The read of the queue's first key.
pub(crate) fn first_in(keys: &Keys) -> GetOptions {
    GetOptions::new()
        .with_range(keys.queue_end())
        .with_sort(SortTarget::Create, SortOrder::Ascend)
        .with_limit(1)
}

/// The revision a transaction was applied at.
pub(crate) fn revision(answer: &TxnResponse) -> i64 {
    answer.header().map_or(0, |header| header.revision())
}

/// The key a transaction's read found, if any.
pub(crate) fn kv_of(read: Option<&TxnOpResponse>) -> Option<KeyValue> {
    match read {
        Some(TxnOpResponse::Get(got)) => got.kvs().first().cloned(),
        _ => None,
    }
}

fn content_of(kv: &KeyValue) -> Option<String> {
    Some(String::from_utf8_lossy(kv.value()).into_owned()).filter(|content| !content.is_empty())
}

/// The record a transaction's first read found.
fn record_of(answer: &TxnResponse) -> Option<String> {
    kv_of(answer.op_responses().first()).and_then(|kv| content_of(&kv))
}

#[cfg(feature = "testing")]
impl EtcdLocker {
    /// `count` cycles of etcd's own lock service (`Lock` on a lease granted
    /// once, then `Unlock`) on this locker's client and channel: the floor
    /// the benchmarks hold an acquire + release against.
    pub async fn bare_cycles(&self, name: &str, count: u32) -> Result<Duration, Error> {
        let failed = |error| Error::etcd("lock", name, &self.inner.url.shown, error);
        let mut client = self.inner.client.clone();
        let lease = client
            .lease_grant(self.inner.timing.ttl(), None)
            .await
            .map_err(failed)?
            .id();
        let options = etcd_client::LockOptions::new().with_lease(lease);
        let start = Instant::now();
        for _ in 0..count {
            let locked = client
                .lock(name, Some(options.clone()))
                .await
                .map_err(failed)?;
            client.unlock(locked.key()).await.map_err(failed)?;
        }
        let took = start.elapsed();
        client.lease_revoke(lease).await.map_err(failed)?;
        Ok(took)
    }
}
