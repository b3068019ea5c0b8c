//! The locker's shared state: its settings, the URL, its sessions (the lock
//! sessions its locks share, at most `max_sessions`, and the one it reads
//! with), and the keys it holds, which `PgLocker` and every `PgLock` it
//! hands out hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::timeout;

use crate::session::{OpenError, Role, Session};
use crate::shared::LockSession;
use crate::url::{self, DbUrl};
use lockfile_core::lease::Lease;

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub lease: Lease,
    pub durable_tokens: bool,
    pub max_sessions: usize,
    pub max_idle_sessions: usize,
}

/// What a locker and its locks share.
pub(crate) struct Inner {
    pub url: DbUrl,
    pub namespace: String,
    pub settings: Settings,
    sessions: Mutex<Registry>,
    /// A session stopped waiting, was opened, or was forgotten.
    freed: Notify,
    /// The keys this locker holds (or is taking), with their records:
    /// advisory locks are re-entrant within a session, so the same name
    /// twice is refused here, before the server is asked.
    held: Mutex<HashMap<i64, Option<String>>>,
    pub(crate) reader: tokio::sync::Mutex<Option<Arc<Session>>>,
    pub(crate) keys: Mutex<HashMap<String, i64>>,
    pub runtime: tokio::runtime::Handle,
}

/// The lock sessions open, and those being opened.
#[derive(Default)]
struct Registry {
    open: Vec<Arc<LockSession>>,
    opening: usize,
}

impl Registry {
    fn waiting(&self) -> usize {
        self.open.iter().filter(|s| s.waiting()).count()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A session a try runs on: while it lives, no wait takes the session.
pub(crate) struct TryTicket(pub Arc<LockSession>);

impl TryTicket {
    /// A second ticket on the same session, for the task running the try.
    pub fn again(&self) -> TryTicket {
        self.0.begin_try();
        TryTicket(self.0.clone())
    }
}

impl Drop for TryTicket {
    fn drop(&mut self) {
        self.0.end_try();
    }
}

/// A key reserved in the locker's table while it is taken; given back when
/// dropped, unless [`keep`](Self::keep)t for a lock that now holds it.
pub(crate) struct Reservation<'a> {
    inner: &'a Inner,
    key: Option<i64>,
}

impl Reservation<'_> {
    pub fn keep(mut self) {
        self.key = None;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.inner.unhold(key);
        }
    }
}

/// What a pick found: a session, room to open one (counted as opening), or
/// neither.
enum Pick {
    Found(Arc<LockSession>),
    Open,
    None,
}

/// An opening counted in the registry until it ends, however it ends.
struct Opening<'a>(&'a Inner);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        lock(&self.0.sessions).opening -= 1;
        self.0.freed.notify_waiters();
    }
}

impl Inner {
    pub(crate) fn new(
        url: DbUrl,
        namespace: String,
        settings: Settings,
        reader: Session,
    ) -> Arc<Self> {
        Arc::new(Inner {
            url,
            namespace,
            settings,
            sessions: Mutex::new(Registry::default()),
            freed: Notify::new(),
            held: Mutex::new(HashMap::new()),
            reader: tokio::sync::Mutex::new(Some(Arc::new(reader))),
            keys: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
        })
    }

    pub(crate) async fn reader(&self) -> Result<Arc<Session>, OpenError> {
        let mut reader = self.reader.lock().await;
        if let Some(session) = &*reader
            && session.alive()
        {
            return Ok(session.clone());
        }
        *reader = None;
        let open = Session::open(&self.url, Role::Reader);
        let session = match timeout(open_timeout(&self.url, &self.settings), open).await {
            Ok(session) => Arc::new(session?),
            Err(_) => return Err(OpenError::NoAnswer),
        };
        *reader = Some(session.clone());
        Ok(session)
    }

    pub(crate) async fn forget_reader(&self, session: &Arc<Session>) {
        let mut reader = self.reader.lock().await;
        if reader.as_ref().is_some_and(|r| Arc::ptr_eq(r, session)) {
            *reader = None;
        }
    }

    /// Reserves `key` for a lock about to be taken, or says what this
    /// locker's own holder of it recorded.
    pub(crate) fn reserve(
        &self,
        key: i64,
        content: &Option<String>,
    ) -> Result<Reservation<'_>, Option<String>> {
        let mut held = lock(&self.held);
        if let Some(record) = held.get(&key) {
            return Err(record.clone());
        }
        held.insert(key, content.clone());
        Ok(Reservation {
            inner: self,
            key: Some(key),
        })
    }

    /// Gives back a key a lock held.
    pub(crate) fn unhold(&self, key: i64) {
        lock(&self.held).remove(&key);
    }

    /// A session for a try: the live one with the fewest locks that no wait
    /// blocks, else a new one while fewer than `max_sessions` are open
    /// (`true`: new), else the first to come free.
    pub(crate) async fn session_for_try(self: &Arc<Self>) -> Result<(TryTicket, bool), OpenError> {
        loop {
            let freed = self.freed.notified();
            match self.pick_for_try() {
                Pick::Found(session) => return Ok((TryTicket(session), false)),
                Pick::Open => {
                    let session = self.open_session(false).await?;
                    session.begin_try();
                    return Ok((TryTicket(session), true));
                }
                Pick::None => freed.await,
            }
        }
    }

    fn pick_for_try(&self) -> Pick {
        let mut registry = lock(&self.sessions);
        registry.open.retain(|s| s.alive());
        let best = registry
            .open
            .iter()
            .filter(|s| !s.waiting())
            .min_by_key(|s| s.held())
            .cloned();
        if let Some(session) = best {
            session.begin_try();
            return Pick::Found(session);
        }
        if registry.open.len() + registry.opening < self.settings.max_sessions {
            registry.opening += 1;
            return Pick::Open;
        }
        Pick::None
    }

    /// A session of its own for a wait that blocks on the server: one that
    /// holds nothing, or a new one, marked waiting. `None` when that would
    /// leave no session for tries and renewals (all but one of
    /// `max_sessions` wait already, or all are open and hold locks): the
    /// wait then polls with tries.
    pub(crate) async fn session_for_wait(
        self: &Arc<Self>,
    ) -> Result<Option<Arc<LockSession>>, OpenError> {
        match self.pick_for_wait() {
            Pick::Found(session) => Ok(Some(session)),
            Pick::Open => self.open_session(true).await.map(Some),
            Pick::None => Ok(None),
        }
    }

    fn pick_for_wait(&self) -> Pick {
        let mut registry = lock(&self.sessions);
        registry.open.retain(|s| s.alive());
        if registry.waiting() + 1 >= self.settings.max_sessions {
            return Pick::None;
        }
        if let Some(session) = registry.open.iter().find(|s| s.take_for_wait()) {
            return Pick::Found(session.clone());
        }
        if registry.open.len() + registry.opening >= self.settings.max_sessions {
            return Pick::None;
        }
        registry.opening += 1;
        Pick::Open
    }

    /// Opens a lock session (counted as opening in the registry).
    async fn open_session(self: &Arc<Self>, waiting: bool) -> Result<Arc<LockSession>, OpenError> {
        let _opening = Opening(self);
        let opened = timeout(
            open_timeout(&self.url, &self.settings),
            Session::open(
                &self.url,
                Role::Lock {
                    durable: self.settings.durable_tokens,
                },
            ),
        )
        .await;
        let session = match opened {
            Ok(session) => LockSession::start(session?, self, waiting),
            Err(_) => return Err(OpenError::NoAnswer),
        };
        lock(&self.sessions).open.push(session.clone());
        Ok(session)
    }

    /// A wait on `session` ended; it holds what the wait took, if anything.
    pub(crate) fn wait_ended(&self, session: &LockSession) {
        session.set_waiting(false);
        self.freed.notify_waiters();
    }

    /// A lock on `session` was released: closes it if it now holds nothing
    /// and more than `max_idle_sessions` hold nothing.
    pub(crate) fn released(&self, session: &Arc<LockSession>) {
        let mut registry = lock(&self.sessions);
        let idle = registry.open.iter().filter(|s| s.idle()).count();
        if idle > self.settings.max_idle_sessions && session.idle() {
            registry.open.retain(|s| !Arc::ptr_eq(s, session));
            session.close();
        }
    }

    /// Forgets a session that ended or was lost.
    pub(crate) fn forget_session(&self, session: &Arc<LockSession>) {
        lock(&self.sessions)
            .open
            .retain(|s| !Arc::ptr_eq(s, session));
        self.freed.notify_waiters();
    }
}

/// How long opening a session may take: connecting, logging in, preparing.
pub(crate) fn open_timeout(url: &DbUrl, settings: &Settings) -> Duration {
    url.config
        .get_connect_timeout()
        .copied()
        .unwrap_or(url::CONNECT_TIMEOUT)
        .saturating_add(settings.heartbeat_timeout)
}
