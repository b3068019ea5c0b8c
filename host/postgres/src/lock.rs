use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::timeout;
use tokio_postgres::{Client, Statement};

use crate::Error;
use crate::error::describe;
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
/// a few seconds; guard what the lock protects with the
/// [`token`](Self::token).
pub struct PgLock {
    pub(crate) inner: Arc<Inner>,
    session: Option<Session>,
    heartbeat: Option<JoinHandle<()>>,
    lost: watch::Receiver<Option<String>>,
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
    ) -> Self {
        let (lost_tx, lost) = watch::channel(None);
        let heartbeat = tokio::spawn(heartbeat(
            session.client.clone(),
            session.ended.clone(),
            session.abort_handle(),
            lost_tx,
            Owner { key, token },
            inner.settings.heartbeat_interval,
            inner.settings.heartbeat_timeout,
        ));
        PgLock {
            inner,
            session: Some(session),
            heartbeat: Some(heartbeat),
            lost,
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
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.key];
        let unlock = session.client.query_one(&session.stmts.unlock, &params);
        match timeout(self.inner.settings.heartbeat_timeout, unlock).await {
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
    /// [`sql::OWNS`](crate::sql::OWNS); `None` while it is.
    fn lost(&self, row: &tokio_postgres::Row) -> Option<String> {
        let holds: bool = row.get(0);
        let token: Option<i64> = row.get(1);
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
        None
    }
}

/// Watches a held lock's session: ends when the connection does, or checks
/// every `interval` that the session still owns the lock (its advisory lock,
/// and the row's token, [`Owner`]), and declares the lock lost if it does not,
/// or if the check fails or takes longer than `limit`. A session declared
/// lost is closed, so it cannot come back holding the lock.
async fn heartbeat(
    client: Arc<Client>,
    mut ended: watch::Receiver<Option<String>>,
    connection: Option<AbortHandle>,
    lost: watch::Sender<Option<String>>,
    owner: Owner,
    interval: Duration,
    limit: Duration,
) {
    // Prepared at the first beat, not with the lock: a short hold pays for
    // no extra round trip.
    let mut owns: Option<Statement> = None;
    let reason = loop {
        tokio::select! {
            biased;
            reason = ended.wait_for(Option::is_some) => {
                break reason.map(|r| r.clone().unwrap_or_default()).unwrap_or_default();
            }
            () = tokio::time::sleep(interval) => {}
        }
        let check = async {
            let statement = match &owns {
                Some(statement) => statement.clone(),
                None => client.prepare(crate::sql::OWNS).await?,
            };
            let row = client.query_one(&statement, &[&owner.key]).await?;
            Ok::<_, tokio_postgres::Error>((statement, row))
        };
        match timeout(limit, check).await {
            Ok(Ok((statement, row))) => {
                owns = Some(statement);
                if let Some(reason) = owner.lost(&row) {
                    break reason;
                }
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
    lost.send_replace(Some(reason));
}
