use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lockfile_core::WaitSchedule;
use tokio::sync::oneshot;
use tokio::time::timeout;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Row, Statement};

use crate::error::{DbFailure, describe};
use crate::lock::PgLock;
use crate::pool::{Inner, Reservation, Settings, TryTicket, open_timeout};
use crate::record;
use crate::session::{OpenError, Role, Session, Statements};
use crate::shared::LockSession;
use crate::url::{self, DbUrl};
use crate::{DEFAULT_NAMESPACE, Error};
use lockfile_core::lease::{self, Lease};

/// Locks on one database, under one namespace: connect once per process
/// (or per namespace) and share it; it is cheap to clone.
///
/// Reads (holder records, key look-ups) share one session. Each held lock
/// has a session of its own; released locks give theirs back to a small
/// pool for the next acquisition.
#[derive(Clone)]
pub struct PgLocker {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for PgLocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLocker")
            .field("url", &self.inner.url)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// Settings for [`PgLocker::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    url: String,
    namespace: String,
    settings: Settings,
}

/// What [`PgLocker::inspect`] finds about a lock, without taking it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// What the last holder recorded (the holder's, if it is held).
    pub content: Option<String>,
    /// Whether a session holds the lock now.
    pub locked: bool,
    /// The server process (`pg_stat_activity.pid`) of the session holding it.
    pub holder_pid: Option<i32>,
    /// The fencing token of the last acquisition; `None` if never taken.
    pub token: Option<u64>,
    /// The advisory key of the name; `None` if the name was never used.
    pub key: Option<i64>,
    /// What is left of the last holder's lease by the server's clock: `None`
    /// once it released the lock (or never took it), zero once the lease has
    /// ended. A lease left on a lock nobody holds is a holder that vanished
    /// and may still be running: the next holder waits it out.
    pub lease_left: Option<Duration>,
}

impl Builder {
    /// The namespace of the lock names: the same name under two namespaces
    /// is two locks. Default: `"default"`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How often a held lock's session is checked (that it still owns the
    /// lock: its advisory lock, and the row's token; default 1 s), and how long an answer may take before the lock counts as lost
    /// (default 5 s). The same timeout bounds every other statement's answer,
    /// beyond the wait it asks for.
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.settings.heartbeat_interval = interval;
        self.settings.heartbeat_timeout = timeout;
        self
    }

    /// How long a holder whose session ended may still be running (default
    /// 15 s): each heartbeat renews the lock's lease to this from now, by
    /// the server's clock, and a holder that cannot renew it is told the lock
    /// is lost `notice` before the lease ends by its own clock (default 5 s:
    /// what a command gets between SIGTERM and SIGKILL), and must have
    /// stopped at its end, whatever the network does. The next holder of a
    /// lock whose last holder vanished without releasing it waits out that
    /// holder's lease before it gets the lock.
    ///
    /// [`connect`](Builder::connect) refuses settings where the heartbeat
    /// interval, its timeout, the notice and the clocks' margin
    /// ([`RATE_MARGIN_PERCENT`](crate::RATE_MARGIN_PERCENT) of the lease) do
    /// not fit in the lease.
    pub fn lease(mut self, lease: Duration, notice: Duration) -> Self {
        self.settings.lease = Lease {
            length: lease,
            notice,
        };
        self
    }

    /// Commits every acquisition synchronously (`synchronous_commit` as the
    /// server has it, normally `on`), so its fencing token is on disk before
    /// the holder learns it; that costs a WAL flush per acquisition.
    ///
    /// Off by default. Tokens then still never repeat after a crash that
    /// loses the last commits, because each token is at least the server's
    /// clock in microseconds (`GREATEST(token + 1, now)`): only a server
    /// clock set back across such a crash, or a failover to a replica whose
    /// clock lags by more than the failover takes, could repeat one. Leases
    /// need no flush either way: after a restart, which may have lost their
    /// last renewals, every taker waits a lease from the server's start.
    pub fn durable_tokens(mut self, durable: bool) -> Self {
        self.settings.durable_tokens = durable;
        self
    }

    /// The most lock sessions (server connections) this locker opens
    /// (default 8), beside the one it reads with. Held locks share them:
    /// one session holds any number of locks, and one heartbeat statement
    /// renews every lease on it. A wait that blocks in the server's queue
    /// takes a session of its own while it waits, if that leaves one for the
    /// rest; otherwise it waits by trying again and again.
    pub fn max_sessions(mut self, sessions: usize) -> Self {
        self.settings.max_sessions = sessions;
        self
    }

    /// Lock sessions that hold nothing kept open for reuse (default 8);
    /// beyond, they are closed.
    pub fn max_idle_sessions(mut self, sessions: usize) -> Self {
        self.settings.max_idle_sessions = sessions;
        self
    }

    /// Connects, creating the `lockfile_locks` table if the database has
    /// none. Needs a tokio runtime with I/O and time enabled.
    ///
    /// Errors: [`Error::InvalidUrl`] (an unknown `sslmode` or an unreadable
    /// `sslrootcert` file included), [`Error::InvalidNamespace`],
    /// [`Error::InvalidSettings`] (see [`lease`](Self::lease)), and
    /// [`lockfile_core::Error::Io`] (`couldn't connect to '<url>': <why>`)
    /// when the server cannot be reached, refuses the login, lacks the
    /// database, or shows a certificate the `sslmode` refuses.
    pub async fn connect(self) -> Result<PgLocker, Error> {
        let url = url::parse(&self.url)?;
        record::check_namespace(&self.namespace)?;
        let settings = &self.settings;
        lease::check(
            &settings.lease,
            settings.heartbeat_interval,
            settings.heartbeat_timeout,
        )
        .map_err(|reason| Error::InvalidSettings { reason })?;
        if settings.max_sessions == 0 {
            return Err(Error::InvalidSettings {
                reason: "max_sessions is 0: a lock needs a session".into(),
            });
        }
        let open = Session::open(&url, Role::Reader);
        let reader = match timeout(open_timeout(&url, &self.settings), open).await {
            Ok(Ok(reader)) => reader,
            Ok(Err(error)) => return Err(open_error("connect to", &url.shown, &url, error)),
            Err(_) => {
                return Err(Error::io(
                    "connect to",
                    &url.shown,
                    io::Error::new(io::ErrorKind::TimedOut, "no answer from the server"),
                ));
            }
        };
        Ok(PgLocker {
            inner: Inner::new(url, self.namespace, self.settings, reader),
        })
    }
}

impl PgLocker {
    /// Connects to `url` (`postgres://` or `postgresql://`, as libpq accepts
    /// it) with the default settings; see [`Builder::connect`].
    pub async fn connect(url: &str, namespace: &str) -> Result<PgLocker, Error> {
        Self::builder(url).namespace(namespace).connect().await
    }

    /// Settings beyond the URL and the namespace.
    pub fn builder(url: &str) -> Builder {
        Builder {
            url: url.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            settings: Settings {
                heartbeat_interval: Duration::from_secs(1),
                heartbeat_timeout: Duration::from_secs(5),
                lease: Lease {
                    length: Duration::from_secs(15),
                    notice: Duration::from_secs(5),
                },
                durable_tokens: false,
                max_sessions: 8,
                max_idle_sessions: 8,
            },
        }
    }

    /// The URL without its password.
    pub fn url(&self) -> &str {
        &self.inner.url.shown
    }

    /// The namespace of the lock names.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Takes the lock `name` (a relative lock path, as a plugin gives it) and
    /// records `content` as its holder, readable by anyone through
    /// [`read_content`](Self::read_content) (`None` keeps the last holder's
    /// record, as a lock file without content keeps its bytes).
    ///
    /// With a zero `wait`, one try: [`lockfile_core::Error::Locked`] if
    /// another session holds it, with the holder's record. Otherwise the
    /// server queues the request and grants it the moment the lock is free,
    /// without polling, for at most `wait` ([`lockfile_core::Error::TimedOut`]).
    ///
    /// A second acquisition of a name this process holds fails like any other
    /// (each lock has a session of its own, and sessions exclude each other).
    ///
    /// When the last holder vanished without releasing the lock (its session
    /// ended: a crash, a lost network), it may still be running until its
    /// lease ends (see [`Builder::lease`]): the lock is taken, then that
    /// lease waited out before this returns, with one try as with a wait.
    ///
    /// Cancel-safe: dropping the future before it completes cancels the
    /// server-side wait (a cancel request, then `pg_advisory_unlock_all` on
    /// its session), so a waiter that gives up never ends up holding the lock.
    pub async fn acquire(
        &self,
        name: &str,
        content: Option<String>,
        wait: Duration,
    ) -> Result<PgLock, Error> {
        let lock_name = record::lock_name(name)?;
        if let Some(content) = &content {
            record::check_content(name, content)?;
        }
        let request = Request {
            name,
            lock_name: &lock_name,
            content: &content,
            wait,
        };
        let mut stale_retries = 0;
        let mut remaps = 0;
        // For the waits that poll: on a name this locker holds, or with no
        // session of their own to wait on.
        let mut schedule = WaitSchedule::new(wait);
        loop {
            match self.attempt(&request).await? {
                Attempt::Taken(lock, prior_left) => {
                    lock.wait_out_prior(prior_left).await?;
                    return Ok(lock);
                }
                Attempt::Held(holder) => match schedule.next_sleep() {
                    Some(sleep) => tokio::time::sleep(sleep).await,
                    None if wait.is_zero() => {
                        return Err(lockfile_core::Error::Locked {
                            path: name.into(),
                            holder: nonempty(holder),
                        }
                        .into());
                    }
                    None => {
                        return Err(lockfile_core::Error::TimedOut {
                            path: name.into(),
                            holder: nonempty(holder),
                            waited: wait,
                        }
                        .into());
                    }
                },
                // A pooled session the server had ended (a restart): nothing
                // was taken; try once on a new one.
                Attempt::StaleSession(_) if stale_retries == 0 => stale_retries += 1,
                Attempt::StaleSession(error) => return Err(error),
                Attempt::Remapped if remaps < 2 => remaps += 1,
                Attempt::Remapped => {
                    return Err(Error::io(
                        "lock",
                        name,
                        io::Error::other(format!(
                            "the row of this lock in {} keeps changing",
                            crate::sql::TABLE
                        )),
                    ));
                }
            }
        }
    }

    /// One attempt of [`acquire`](Self::acquire): the key, this locker's
    /// own table, a session, one lock statement (a try on a shared session,
    /// or a wait in the server's queue on a session of its own).
    async fn attempt(&self, request: &Request<'_>) -> Result<Attempt, Error> {
        let inner = &self.inner;
        let name = request.name;
        let key = self.key(name, request.lock_name).await?;
        let reservation = match inner.reserve(key, request.content) {
            Ok(reservation) => reservation,
            Err(holder) => return Ok(Attempt::Held(holder)),
        };
        let opened = |error| open_error("lock", name, &inner.url, error);
        if !request.wait.is_zero()
            && let Some(home) = inner.session_for_wait().await.map_err(opened)?
        {
            return self.wait_on(home, key, reservation, request).await;
        }
        let (ticket, new) = inner.session_for_try().await.map_err(opened)?;
        self.try_on(ticket, new, key, reservation, request).await
    }

    /// One try on a shared session. The statement runs in a task of its own,
    /// to its end: if the caller gives up meanwhile, what it took is given
    /// back there, so that no lock is left held by nobody on a session that
    /// others' locks keep open.
    async fn try_on(
        &self,
        ticket: TryTicket,
        new: bool,
        key: i64,
        reservation: Reservation<'_>,
        request: &Request<'_>,
    ) -> Result<Attempt, Error> {
        let inner = &self.inner;
        let home = ticket.0.clone();
        let limit = inner.settings.heartbeat_timeout;
        let (answer, reply) = oneshot::channel();
        let statement = {
            let running = ticket.again();
            let session = &home.session;
            let client = session.client.clone();
            let stmts = session.stmts.clone();
            let namespace = inner.namespace.clone();
            let lock_name = request.lock_name.to_owned();
            let content = request.content.clone();
            let lease = inner.settings.lease.micros();
            async move {
                let params: [&(dyn ToSql + Sync); 5] =
                    [&key, &namespace, &lock_name, &content, &lease];
                let reply = timeout(limit, client.query_one(&stmts.try_lock, &params)).await;
                if let Err(Ok(Ok(row))) = answer.send(reply)
                    && row.get::<_, bool>(0)
                {
                    // Nobody waits for it any more: give it back.
                    let token = row.get::<_, Option<i64>>(1).unwrap_or(0);
                    let _ = client.query_one(&stmts.release, &[&key, &token]).await;
                }
                drop(running);
            }
        };
        // The lease starts on the server after this: the holder's deadline
        // counts from here.
        let sent = Instant::now();
        inner.runtime.spawn(statement);
        let reply = reply.await.map_err(|_| {
            Error::io(
                "lock",
                request.name,
                io::Error::other("the lock statement's task ended without an answer"),
            )
        })?;
        let row = match reply {
            Ok(Ok(row)) => row,
            Ok(Err(error)) => {
                let stale = error.is_closed() || !home.session.alive();
                let error = Error::db("lock", request.name, &inner.url.shown, error);
                if stale {
                    home.lose(&error.to_string());
                    inner.forget_session(&home);
                    if !new {
                        // A session the server had ended (a restart):
                        // nothing was taken; try once on a new one.
                        return Ok(Attempt::StaleSession(error));
                    }
                }
                return Err(error);
            }
            Err(_) => {
                let reason = format!(
                    "lock database {}: no answer within {limit:?}",
                    inner.url.shown
                );
                // It cannot be trusted to let go of what it may take late.
                home.lose(&reason);
                inner.forget_session(&home);
                return Err(Error::io(
                    "lock",
                    request.name,
                    io::Error::new(io::ErrorKind::TimedOut, reason),
                ));
            }
        };
        let taken = self
            .taken(row, &home, key, sent, reservation, request)
            .await;
        drop(ticket);
        taken
    }

    /// A wait in the server's queue on `home`, a session of its own (marked
    /// waiting), at most the request's wait.
    async fn wait_on(
        &self,
        home: Arc<LockSession>,
        key: i64,
        reservation: Reservation<'_>,
        request: &Request<'_>,
    ) -> Result<Attempt, Error> {
        let inner = &self.inner;
        let mut flight = InFlight {
            home: Some(home.clone()),
            inner: inner.clone(),
        };
        let session = &home.session;
        // The server answers within the wait; beyond it and the heartbeat
        // timeout, it is not answering.
        let limit = request.wait.checked_add(inner.settings.heartbeat_timeout);
        let lease = inner.settings.lease.micros();
        let lock_timeout = lock_timeout(request.wait);
        let params: [&(dyn ToSql + Sync); 6] = [
            &key,
            &inner.namespace,
            &request.lock_name,
            request.content,
            &lease,
            &lock_timeout,
        ];
        let sent = Instant::now();
        let query = session.client.query_one(&session.stmts.wait_lock, &params);
        let reply = match limit {
            Some(limit) => timeout(limit, query).await,
            None => Ok(query.await),
        };
        let row = match reply {
            Ok(Ok(row)) => row,
            Ok(Err(error))
                if error.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) =>
            {
                flight.land();
                return Err(self.timed_out(&home, request).await);
            }
            Ok(Err(error)) => {
                flight.land();
                let error = Error::db("lock", request.name, &inner.url.shown, error);
                // Closing the session frees anything it held.
                home.lose(&error.to_string());
                inner.forget_session(&home);
                return Err(error);
            }
            Err(_) => {
                // No answer: `flight` cancels the statement as it drops.
                return Err(Error::io(
                    "lock",
                    request.name,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "lock database {}: no answer within {:?}",
                            inner.url.shown,
                            limit.unwrap_or(Duration::MAX)
                        ),
                    ),
                ));
            }
        };
        flight.land();
        let taken = self
            .taken(row, &home, key, sent, reservation, request)
            .await;
        inner.wait_ended(&home);
        taken
    }

    /// The wait ran out on the server. It may have granted the lock in that
    /// same instant (PostgreSQL then reports the timeout and keeps the lock):
    /// clears the session, which holds nothing else, before saying so.
    async fn timed_out(&self, home: &Arc<LockSession>, request: &Request<'_>) -> Error {
        let inner = &self.inner;
        let session = &home.session;
        let params: [&(dyn ToSql + Sync); 2] = [&inner.namespace, &request.lock_name];
        let cleared = timeout(
            inner.settings.heartbeat_timeout,
            session.client.query_one(&session.stmts.clear, &params),
        )
        .await;
        let holder = match cleared {
            Ok(Ok(row)) => {
                inner.wait_ended(home);
                row.get::<_, Option<String>>(1)
            }
            _ => {
                // Closing the session frees whatever it held.
                home.lose("the wait could not be cleared");
                inner.forget_session(home);
                None
            }
        };
        lockfile_core::Error::TimedOut {
            path: request.name.into(),
            holder: nonempty(holder),
            waited: request.wait,
        }
        .into()
    }

    /// What a lock statement's `row` says: taken (with its token), held by
    /// another (with its record), or taken under a key the name no longer
    /// maps to.
    async fn taken(
        &self,
        row: Row,
        home: &Arc<LockSession>,
        key: i64,
        sent: Instant,
        reservation: Reservation<'_>,
        request: &Request<'_>,
    ) -> Result<Attempt, Error> {
        let inner = &self.inner;
        let taken: bool = row.get(0);
        let token: Option<i64> = row.get(1);
        if !taken {
            return Ok(Attempt::Held(row.get(2)));
        }
        if let Some(token) = token {
            let times = ServerTimes::from(&row, inner.settings.lease.length);
            // The lease started no earlier than this.
            let started = sent + Lease::slower(times.waited);
            let watch = home.add(key, token as u64, inner.settings.lease.deadline(started));
            reservation.keep();
            let lock = PgLock::new(
                inner.clone(),
                home.clone(),
                watch,
                request.name.to_owned(),
                key,
                token as u64,
                request.content.clone(),
            );
            return Ok(Attempt::Taken(lock, times.prior_left));
        }
        // The key was taken but the name no longer maps to it: the row was
        // replaced by hand. Let go, forget the key and ask again.
        let session = &home.session;
        let unlocked = timeout(
            inner.settings.heartbeat_timeout,
            session.client.query_one(&session.stmts.unlock, &[&key]),
        )
        .await;
        if !matches!(unlocked, Ok(Ok(_))) {
            home.lose("the unlock of a remapped key failed");
            inner.forget_session(home);
        }
        (inner.keys.lock().expect("not poisoned")).remove(request.lock_name);
        Ok(Attempt::Remapped)
    }

    /// What the holder of `name` recorded (or the last holder, once it is
    /// free), without taking the lock: `None` if nothing was recorded or the
    /// name was never locked.
    pub async fn read_content(&self, name: &str) -> Result<Option<String>, Error> {
        let lock_name = record::lock_name(name)?;
        let rows = self
            .read(
                "read",
                name,
                |s| &s.read,
                &[&self.inner.namespace, &lock_name],
            )
            .await?;
        Ok(nonempty(rows.first().and_then(|row| row.get(0))))
    }

    /// Whether the row of `name` exists: whether [`acquire`](Self::acquire)
    /// would find it rather than create it. Known names are answered from
    /// this locker's key cache, without a round trip.
    pub async fn exists(&self, name: &str) -> Result<bool, Error> {
        let lock_name = record::lock_name(name)?;
        if self.cached_key(&lock_name).is_some() {
            return Ok(true);
        }
        let params: [&(dyn ToSql + Sync); 2] = [&self.inner.namespace, &lock_name];
        let rows = self.read("look up", name, |s| &s.find_key, &params).await?;
        let Some(row) = rows.first() else {
            return Ok(false);
        };
        self.cache_key(&lock_name, row.get(0));
        Ok(true)
    }

    /// Whether `name` is held now, by which server process, with which record,
    /// token and lease, without taking it.
    pub async fn inspect(&self, name: &str) -> Result<Inspection, Error> {
        let lock_name = record::lock_name(name)?;
        let rows = self
            .read(
                "inspect",
                name,
                |s| &s.inspect,
                &[&self.inner.namespace, &lock_name],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Inspection::default());
        };
        let token: i64 = row.get(1);
        let holder_pid: Option<i32> = row.get(3);
        let lease_left: Option<i64> = row.get(4);
        Ok(Inspection {
            content: nonempty(row.get(0)),
            locked: holder_pid.is_some(),
            holder_pid,
            token: (token > 0).then_some(token as u64),
            key: Some(row.get(2)),
            lease_left: lease_left.map(|us| Duration::from_micros(us.max(0) as u64)),
        })
    }

    /// The advisory key of a name: from this process's cache, else from the
    /// table, creating the row of a new name.
    fn cached_key(&self, lock_name: &str) -> Option<i64> {
        let keys = self.inner.keys.lock().expect("not poisoned");
        keys.get(lock_name).copied()
    }

    fn cache_key(&self, lock_name: &str, key: i64) {
        let mut keys = self.inner.keys.lock().expect("not poisoned");
        keys.insert(lock_name.to_owned(), key);
    }

    async fn key(&self, name: &str, lock_name: &str) -> Result<i64, Error> {
        if let Some(key) = self.cached_key(lock_name) {
            return Ok(key);
        }
        let params: [&(dyn ToSql + Sync); 2] = [&self.inner.namespace, &lock_name];
        for _ in 0..3 {
            let mut rows = self.read("look up", name, |s| &s.find_key, &params).await?;
            if rows.is_empty() {
                // Concurrent creators: one inserts, the others wait for it and
                // find the row on their next look.
                rows = self
                    .read("create", name, |s| &s.create_key, &params)
                    .await?;
            }
            if let Some(row) = rows.first() {
                let key: i64 = row.get(0);
                self.cache_key(lock_name, key);
                return Ok(key);
            }
        }
        Err(Error::io(
            "create",
            name,
            io::Error::other("its row was never visible after creation"),
        ))
    }

    /// Runs a read on the shared session, reconnecting once if the server had
    /// ended it.
    async fn read(
        &self,
        operation: &'static str,
        name: &str,
        statement: fn(&Statements) -> &Statement,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, Error> {
        let inner = &self.inner;
        let mut retried = false;
        loop {
            let session = inner
                .reader()
                .await
                .map_err(|error| open_error(operation, name, &inner.url, error))?;
            let query = session.client.query(statement(&session.stmts), params);
            match timeout(inner.settings.heartbeat_timeout, query).await {
                Ok(Ok(rows)) => return Ok(rows),
                Ok(Err(error)) if !retried && (error.is_closed() || !session.alive()) => {
                    retried = true;
                    inner.forget_reader(&session).await;
                }
                Ok(Err(error)) => {
                    return Err(Error::db(operation, name, &inner.url.shown, error));
                }
                Err(_) => {
                    inner.forget_reader(&session).await;
                    return Err(Error::io(
                        operation,
                        name,
                        io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!(
                                "lock database {}: no answer within {:?}",
                                inner.url.shown, inner.settings.heartbeat_timeout
                            ),
                        ),
                    ));
                }
            }
        }
    }

    /// The floor of the benchmarks: `iterations` bare `pg_try_advisory_lock`
    /// (followed by `pg_advisory_unlock` when `unlock`) round trips on
    /// `key`, on the session the next acquisition will use, so the floor and
    /// the lock share the client, the connection and the server process.
    #[cfg(feature = "testing")]
    pub async fn bare_cycles(
        &self,
        key: i64,
        iterations: u32,
        unlock: bool,
    ) -> Result<Duration, Error> {
        let inner = &self.inner;
        let fail = |error: tokio_postgres::Error| Error::db("bench", "", &inner.url.shown, error);
        let (ticket, _) = inner
            .session_for_try()
            .await
            .map_err(|error| open_error("bench", "", &inner.url, error))?;
        let session = &ticket.0.session;
        let try_lock = session
            .client
            .prepare("SELECT pg_try_advisory_lock($1)")
            .await
            .map_err(fail)?;
        let start = std::time::Instant::now();
        for _ in 0..iterations {
            let row = session
                .client
                .query_one(&try_lock, &[&key])
                .await
                .map_err(fail)?;
            if unlock && !row.get::<_, bool>(0) {
                return Err(Error::io(
                    "bench",
                    "",
                    io::Error::other("the floor's key is held"),
                ));
            }
            if unlock {
                session
                    .client
                    .query_one(&session.stmts.unlock, &[&key])
                    .await
                    .map_err(fail)?;
            }
        }
        Ok(start.elapsed())
    }

    /// How many server connections carry `application_name` (from
    /// `pg_stat_activity`): for the benchmarks.
    #[cfg(feature = "testing")]
    pub async fn connections_named(&self, application_name: &str) -> Result<i64, Error> {
        let session = self
            .inner
            .reader()
            .await
            .map_err(|error| open_error("count connections on", "", &self.inner.url, error))?;
        let row = session
            .client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&application_name],
            )
            .await
            .map_err(|error| Error::db("count connections on", "", &self.inner.url.shown, error))?;
        Ok(row.get(0))
    }

    /// Whether the session the next acquisition will use runs over TLS, as
    /// the server sees it (`pg_stat_ssl`): for the tests and benchmarks.
    #[cfg(feature = "testing")]
    pub async fn lock_session_encrypted(&self) -> Result<bool, Error> {
        let inner = &self.inner;
        let (ticket, _) = inner
            .session_for_try()
            .await
            .map_err(|error| open_error("check TLS on", "", &inner.url, error))?;
        let session = &ticket.0.session;
        let row = session
            .client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|error| Error::db("check TLS on", "", &inner.url.shown, error))?;
        Ok(row.get(0))
    }
}

/// A lock session while a wait that may take the lock runs on it. If the
/// acquiring future is dropped mid-wait, the server may still be waiting in
/// the lock's queue for it: dropping this cancels that wait and clears the
/// session (which holds nothing else), so the lock is never taken late and
/// kept.
struct InFlight {
    home: Option<Arc<LockSession>>,
    inner: Arc<Inner>,
}

impl InFlight {
    /// The statement has answered: the session is the caller's again.
    fn land(&mut self) {
        self.home.take();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(home) = self.home.take() else {
            return;
        };
        let inner = self.inner.clone();
        let runtime =
            tokio::runtime::Handle::try_current().unwrap_or_else(|_| inner.runtime.clone());
        let cancel = home.session.client.cancel_token();
        let cleanup = async move {
            let _ = cancel.cancel_query(inner.url.tls.connector.clone()).await;
            // Runs after the cancelled statement on the same session, so
            // whatever it took is given back before the session is reused.
            let cleared = timeout(
                inner.settings.heartbeat_timeout,
                home.session
                    .client
                    .simple_query("SELECT pg_advisory_unlock_all()"),
            )
            .await;
            if let Ok(Ok(_)) = cleared {
                inner.wait_ended(&home);
            } else {
                // Closing the session frees what it holds; the server's
                // client_connection_check_interval ends a wait still running.
                home.lose("a cancelled wait could not be cleared");
                inner.forget_session(&home);
            }
        };
        runtime.spawn(cleanup);
    }
}

/// `lock_timeout` for a wait: whole milliseconds, at least 1 (0 would mean
/// forever), and 0 (forever) beyond what the setting holds (24 days).
/// What [`PgLocker::acquire`] was asked, checked.
#[derive(Clone, Copy)]
struct Request<'a> {
    name: &'a str,
    lock_name: &'a str,
    content: &'a Option<String>,
    wait: Duration,
}

/// How one attempt of [`PgLocker::acquire`] ended, when it did not fail.
enum Attempt {
    /// Taken; the last holder's lease still runs this long by the server's
    /// clock (zero if it released the lock, or its lease has ended).
    Taken(PgLock, Duration),
    /// Held by another session (with its record), or by this locker: a try
    /// fails with `Locked`, a wait polls.
    Held(Option<String>),
    /// A pooled session had been ended by the server: nothing was taken.
    StaleSession(Error),
    /// The name's row no longer maps to the key that was locked.
    Remapped,
}

/// What the server's clock said of a lock it gave (a lock statement's row,
/// `take_and_record!`), as durations, so that no clock is compared with
/// another's.
struct ServerTimes {
    /// How long the last holder's lease still ran (zero if released, ended).
    prior_left: Duration,
    /// How long the statement waited before the new lease started.
    waited: Duration,
}

impl ServerTimes {
    fn from(row: &Row, lease: Duration) -> Self {
        let time = |i: usize| row.get::<_, Option<SystemTime>>(i);
        let since = |later: Option<SystemTime>, earlier: Option<SystemTime>| {
            later
                .zip(earlier)
                .and_then(|(later, earlier)| later.duration_since(earlier).ok())
                .unwrap_or_default()
        };
        let (prior_ends, lease_ends, began, answered) = (time(3), time(4), time(5), time(6));
        ServerTimes {
            prior_left: since(prior_ends, answered),
            waited: since(lease_ends, began).saturating_sub(lease),
        }
    }
}

fn lock_timeout(wait: Duration) -> String {
    let ms = wait.as_millis().max(1);
    if ms > i32::MAX as u128 {
        "0".to_owned()
    } else {
        format!("{ms}ms")
    }
}

fn open_error(operation: &'static str, name: &str, url: &DbUrl, error: OpenError) -> Error {
    let said = |detail: String| {
        if operation == "connect to" {
            detail
        } else {
            format!("lock database {}: {detail}", url.shown)
        }
    };
    let source = match error {
        OpenError::Db(error) => {
            let why = crate::tls::explain(&error, &url.tls).unwrap_or_else(|| describe(&error));
            DbFailure::into_io(said(why), error)
        }
        OpenError::Old(version) => io::Error::new(
            io::ErrorKind::Unsupported,
            said(format!(
                "PostgreSQL {} is too old: lockfile-postgres needs {} or later",
                version / 10000,
                crate::sql::MIN_SERVER_VERSION / 10000
            )),
        ),
        OpenError::NoAnswer => io::Error::new(
            io::ErrorKind::TimedOut,
            said("no answer from the server".into()),
        ),
    };
    Error::io(operation, name, source)
}

/// An empty record reads as none, as an empty lock file does.
fn nonempty(content: Option<String>) -> Option<String> {
    content.filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_timeouts_never_mean_forever_by_accident() {
        assert_eq!(lock_timeout(Duration::from_micros(1)), "1ms");
        assert_eq!(lock_timeout(Duration::from_millis(1500)), "1500ms");
        assert_eq!(lock_timeout(Duration::MAX), "0");
    }
}
