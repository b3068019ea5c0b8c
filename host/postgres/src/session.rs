//! One database session: a tokio-postgres client, the task that drives its
//! connection, and the statements prepared on it.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Statement};

use crate::error::describe;
use crate::sql;
use crate::url::DbUrl;

/// The statements every session prepares once, so each use is one round trip.
pub(crate) struct Statements {
    pub try_lock: Statement,
    pub wait_lock: Statement,
    pub unlock: Statement,
    pub release: Statement,
    pub clear: Statement,
    pub find_key: Statement,
    pub create_key: Statement,
    pub read: Statement,
    pub inspect: Statement,
}

/// A lock session's settings. The server checks a silent client with TCP
/// keepalives after 2 s and drops it after 3 unanswered probes, or when what
/// it sent stays unacknowledged for 5 s (Linux): a client that vanished
/// without closing its socket (host down, network gone) loses its locks
/// within seconds, not after the kernel's default two hours. On a Unix
/// socket these settings do nothing.
const LOCK_SESSION: &str = "SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 5000";

/// [`LOCK_SESSION`], committing without waiting for the disk: the fencing
/// token's safety across a crash comes from its clock floor, the leases'
/// from the wait after a restart (see `sql::TRY_LOCK`), instead (see
/// `Builder::durable_tokens`).
const LOCK_SESSION_ASYNC_COMMIT: &str = "SET tcp_keepalives_idle = 2; SET tcp_keepalives_interval = 1; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 5000; SET synchronous_commit = off";

/// What a session is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Reads and key look-ups; creates the table if it is missing.
    Reader,
    /// Holds locks.
    Lock {
        /// Commit each acquisition synchronously (see `Builder::durable_tokens`).
        durable: bool,
    },
}

pub(crate) struct Session {
    pub client: Arc<Client>,
    pub stmts: Arc<Statements>,
    /// The connection task; dropping the session aborts it, which closes the
    /// socket at once.
    conn: ConnTask,
    /// Why the connection ended, once it has.
    pub ended: watch::Receiver<Option<String>>,
}

/// Why opening a session failed.
pub(crate) enum OpenError {
    /// The connection, the login or a statement failed.
    Db(tokio_postgres::Error),
    /// The server's version (`server_version_num`) is too old.
    Old(i32),
    /// The server did not answer in time.
    NoAnswer,
}

impl From<tokio_postgres::Error> for OpenError {
    fn from(error: tokio_postgres::Error) -> Self {
        Self::Db(error)
    }
}

impl Session {
    pub async fn open(url: &DbUrl, role: Role) -> Result<Session, OpenError> {
        let (mut client, connection) = url.config.connect(url.tls.connector.clone()).await?;
        let (ended_tx, ended) = watch::channel(None);
        let conn = tokio::spawn(async move {
            let reason = match connection.await {
                Ok(()) => "the server closed the session".to_owned(),
                Err(error) => describe(&error),
            };
            ended_tx.send_replace(Some(reason));
        });
        // From here on, returning early closes the connection.
        let conn = ConnTask(Some(conn));
        let stmts = match role {
            Role::Reader => {
                ensure_schema(&mut client).await?;
                prepare(&client).await?
            }
            Role::Lock { durable } => {
                // Sent together with the statements: one round trip.
                let settings = client.batch_execute(if durable {
                    LOCK_SESSION
                } else {
                    LOCK_SESSION_ASYNC_COMMIT
                });
                // PostgreSQL 14+: a wait notices a closed client within 1 s.
                // Older servers lack the setting; the wait's own timeout and
                // the cancel request still end it.
                let check = client.batch_execute("SET client_connection_check_interval = 1000");
                let (settings, _, stmts) = tokio::join!(settings, check, prepare(&client));
                settings?;
                stmts?
            }
        };
        Ok(Session {
            client: Arc::new(client),
            stmts: Arc::new(stmts),
            conn,
            ended,
        })
    }

    /// Whether the connection still runs, as far as this process knows.
    pub fn alive(&self) -> bool {
        !self.client.is_closed() && self.ended.borrow().is_none()
    }

    /// Why the connection ended, if it has.
    pub fn end_reason(&self) -> Option<String> {
        self.ended.borrow().clone()
    }

    /// A handle that closes the connection at once when aborted.
    pub fn abort_handle(&self) -> Option<tokio::task::AbortHandle> {
        self.conn.0.as_ref().map(JoinHandle::abort_handle)
    }
}

/// The task driving a session's connection.
struct ConnTask(Option<JoinHandle<()>>);

impl Drop for ConnTask {
    /// Closes the socket at once, without waiting for pending replies: the
    /// server ends the session, and frees its locks, as soon as it reads the
    /// end of the stream.
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.abort();
        }
    }
}

async fn prepare(client: &Client) -> Result<Statements, tokio_postgres::Error> {
    // Sent together: one round trip.
    let (try_lock, wait_lock, unlock, release, clear, find_key, create_key, read, inspect) = tokio::try_join!(
        client.prepare(sql::TRY_LOCK),
        client.prepare(sql::WAIT_LOCK),
        client.prepare(sql::UNLOCK),
        client.prepare(sql::RELEASE),
        client.prepare(sql::CLEAR),
        client.prepare(sql::FIND_KEY),
        client.prepare(sql::CREATE_KEY),
        client.prepare(sql::READ),
        client.prepare(sql::INSPECT),
    )?;
    Ok(Statements {
        try_lock,
        wait_lock,
        unlock,
        release,
        clear,
        find_key,
        create_key,
        read,
        inspect,
    })
}

/// Creates the table on first use, or gives a table made before leases
/// their columns. Concurrent first users serialise on a transaction-level
/// advisory lock, so none sees a half-made table.
async fn ensure_schema(client: &mut Client) -> Result<(), OpenError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await?
        .get(0);
    if version < sql::MIN_SERVER_VERSION {
        return Err(OpenError::Old(version));
    }
    let state = client.query_one(sql::TABLE_STATE, &[&sql::TABLE]).await?;
    if state.get::<_, bool>(1) {
        return Ok(());
    }
    let transaction = client.transaction().await?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock($1)",
            &[&sql::ADVISORY_KEY_BASE],
        )
        .await?;
    let row = transaction
        .query_one(sql::TABLE_STATE, &[&sql::TABLE])
        .await?;
    if row.get::<_, bool>(0) && !row.get::<_, bool>(1) {
        transaction.batch_execute(sql::ADD_LEASES).await?;
    } else if !row.get::<_, bool>(0) {
        match transaction.batch_execute(&sql::schema()).await {
            Ok(()) => {}
            // The advisory lock does not refresh this session's catalog
            // snapshot, so a table another session created and committed
            // while we waited for it can still look missing above: then the
            // creation finds it. Dropping the transaction rolls ours back.
            Err(error) if made_meanwhile(&error) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
    }
    transaction.commit().await?;
    Ok(())
}

/// Whether creating the schema failed because another session made it.
fn made_meanwhile(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    error.code().is_some_and(|code| {
        [
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_FUNCTION,
            SqlState::DUPLICATE_OBJECT,
            SqlState::UNIQUE_VIOLATION,
        ]
        .contains(code)
    })
}
