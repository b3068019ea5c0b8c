use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::timeout;
use tokio_postgres::{Client, Statement};

use crate::Error;
use crate::error::describe;
use crate::lease::Lease;
use crate::pool::Inner;
use crate::session::Session;

/// A lock held on the database: a session-level advisory lock, bound to a
/// session of its own.
///
/// Released by [`release`](Self::release), or by dropping the value (which
/// closes the session: the server frees the lock as soon as it reads the end
/// of the connection), or when this process dies.
///
/// Unlike a lock file, it can be **lost** while held: when the session ends
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
    session: Option<Session>,
    heartbeat: Option<JoinHandle<()>>,
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
    pub(crate) fn new(
        inner: Arc<Inner>,
        session: Session,
        name: String,
        key: i64,
        token: u64,
        content: Option<String>,
        sent: Instant,
    ) -> Self {
        let (lost_tx, lost) = watch::channel(None);
        let lease = inner.settings.lease;
        let (deadline_tx, deadline) = watch::channel(lease.deadline(sent));
        let heartbeat = tokio::spawn(heartbeat(
            session.client.clone(),
            session.ended.clone(),
            session.abort_handle(),
            Told {
                lost: lost_tx,
                deadline: deadline_tx,
            },
            Owner { key, token },
            Beat {
                interval: inner.settings.heartbeat_interval,
                limit: inner.settings.heartbeat_timeout,
                lease,
            },
        ));
        PgLock {
            inner,
            session: Some(session),
            heartbeat: Some(heartbeat),
            lost,
            deadline,
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
        self.lost.borrow().is_none() && self.session.as_ref().is_some_and(Session::alive)
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
        self.session.as_ref().and_then(Session::end_reason)
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

    /// Unlocks, and keeps the session for the next acquisition. When this
    /// returns `Ok`, the lock is free on the server.
    ///
    /// [`Error::Lost`] if the lock had been lost meanwhile (its session
    /// ended): the lock is free too, but it was not held all along.
    pub async fn release(mut self) -> Result<(), Error> {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        let session = self.session.take().expect("held until released");
        let lost = |reason: String| Error::Lost {
            name: self.name.clone(),
            reason,
        };
        if let Some(reason) = self.lost.borrow().clone().or_else(|| session.end_reason()) {
            return Err(lost(reason));
        }
        let token = self.token as i64;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&self.key, &token];
        // One round trip: the lease ends, then the lock is unlocked, each
        // committed in the order sent.
        let end_lease = session.client.execute(&session.stmts.end_lease, &params);
        let unlock = session
            .client
            .query_one(&session.stmts.unlock, &params[..1]);
        let both = async {
            let (ended, unlocked) = tokio::join!(end_lease, unlock);
            ended?;
            unlocked
        };
        match timeout(self.inner.settings.heartbeat_timeout, both).await {
            Ok(Ok(row)) if row.get::<_, bool>(0) => {
                self.inner.put(session);
                Ok(())
            }
            Ok(Ok(_)) => Err(lost(
                "the server no longer counted it as held by this session".into(),
            )),
            Ok(Err(error)) => Err(lost(
                session.end_reason().unwrap_or_else(|| describe(&error)),
            )),
            Err(_) => Err(lost(format!(
                "no answer to the unlock within {:?}",
                self.inner.settings.heartbeat_timeout
            ))),
        }
    }
}

impl Drop for PgLock {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.heartbeat.take() {
            heartbeat.abort();
        }
        // Dropping the session closes its socket: the server ends the
        // session, and frees the lock, as soon as it reads that.
        self.session.take();
    }
}

/// What a held lock's heartbeat checks it still owns: the advisory lock on
/// `key`, and the name's row still carrying `token`.
#[derive(Clone, Copy)]
struct Owner {
    key: i64,
    token: u64,
}

impl Owner {
    /// Why the lock is not this holder's any more, from a row of
    /// [`sql::RENEW`](crate::sql::RENEW); `None` while it is (and the lease
    /// was renewed).
    fn lost(&self, row: &tokio_postgres::Row) -> Option<String> {
        let holds: bool = row.get(0);
        let token: Option<i64> = row.get(1);
        let renewed: bool = row.get(2);
        if !holds {
            return Some(
                "this session no longer holds the advisory lock (was the session moved by a pooler, or the lock unlocked?)"
                    .into(),
            );
        }
        if token != i64::try_from(self.token).ok() {
            return Some(format!(
                "the lock's row carries token {}, not this holder's {}: it was given to another holder",
                token.map_or_else(|| "none".to_owned(), |token| token.to_string()),
                self.token
            ));
        }
        if !renewed {
            return Some("the lease could not be renewed".into());
        }
        None
    }
}

/// How a heartbeat beats: every `interval`, each renewal answered within
/// `limit`, renewing `lease`.
#[derive(Clone, Copy)]
struct Beat {
    interval: Duration,
    limit: Duration,
    lease: Lease,
}

/// What a heartbeat tells the lock: the loss, and the deadline.
struct Told {
    lost: watch::Sender<Option<String>>,
    deadline: watch::Sender<Instant>,
}

/// Watches a held lock's session and renews its lease: ends when the
/// connection does, or renews every `interval` while the session still owns
/// the lock (its advisory lock, and the row's token, [`Owner`]), and declares
/// the lock lost if it does not, if a renewal fails or takes longer than
/// `limit`, or, whatever the network does, once the lease's notice before
/// the deadline has come without a confirmed renewal. A session declared
/// lost is closed, so it cannot come back holding the lock.
async fn heartbeat(
    client: Arc<Client>,
    mut ended: watch::Receiver<Option<String>>,
    connection: Option<AbortHandle>,
    told: Told,
    owner: Owner,
    beat: Beat,
) {
    let Beat {
        interval,
        limit,
        lease,
    } = beat;
    let key = owner.key;
    let token = owner.token as i64;
    let length = lease.micros();
    // Prepared at the first beat, not with the lock: a short hold pays for
    // no extra round trip.
    let mut renew: Option<Statement> = None;
    let unrenewed = || {
        format!(
            "no renewal of its lease was confirmed in time: it ends on the server within {:?}",
            lease.notice + lease.margin()
        )
    };
    let reason = loop {
        let stop_at = tokio::time::Instant::from_std(lease.stop_at(*told.deadline.borrow()));
        tokio::select! {
            biased;
            reason = ended.wait_for(Option::is_some) => {
                break reason.map(|r| r.clone().unwrap_or_default()).unwrap_or_default();
            }
            () = tokio::time::sleep_until(stop_at) => break unrenewed(),
            () = tokio::time::sleep(interval) => {}
        }
        let sent = Instant::now();
        let check = async {
            let statement = match &renew {
                Some(statement) => statement.clone(),
                None => client.prepare(crate::sql::RENEW).await?,
            };
            let row = client
                .query_one(&statement, &[&key, &token, &length])
                .await?;
            Ok::<_, tokio_postgres::Error>((statement, row))
        };
        let answer = tokio::select! {
            biased;
            answer = timeout(limit, check) => answer,
            () = tokio::time::sleep_until(stop_at) => break unrenewed(),
        };
        match answer {
            Ok(Ok((statement, row))) => {
                renew = Some(statement);
                if let Some(reason) = owner.lost(&row) {
                    break reason;
                }
                told.deadline.send_replace(lease.deadline(sent));
            }
            Ok(Err(error)) => {
                // The connection task knows best why the session ended.
                let ended = timeout(Duration::from_millis(100), ended.wait_for(Option::is_some))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .and_then(|reason| reason.clone());
                break ended.unwrap_or_else(|| describe(&error));
            }
            Err(_) => break format!("the server did not answer for {limit:?}"),
        }
    };
    if let Some(connection) = connection {
        connection.abort();
    }
    told.lost.send_replace(Some(reason));
}
