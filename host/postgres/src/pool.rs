//! The locker's shared state: its settings, the URL, and its sessions (the
//! idle lock sessions it reuses and the one it reads with), which
//! `PgLocker` and every `PgLock` it hands out hold.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::timeout;

use crate::lease::Lease;
use crate::session::{OpenError, Role, Session};
use crate::url::{self, DbUrl};

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub lease: Lease,
    pub max_idle_sessions: usize,
}

/// What a locker and its locks share.
pub(crate) struct Inner {
    pub url: DbUrl,
    pub namespace: String,
    pub settings: Settings,
    pub(crate) idle: Mutex<Vec<Session>>,
    pub(crate) reader: tokio::sync::Mutex<Option<Arc<Session>>>,
    pub(crate) keys: Mutex<HashMap<String, i64>>,
    pub runtime: tokio::runtime::Handle,
}

impl Inner {
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

    /// An idle lock session (`true`: from the pool), or a new one.
    pub(crate) async fn take_session(&self) -> Result<(Session, bool), OpenError> {
        loop {
            let session = self.idle.lock().expect("not poisoned").pop();
            match session {
                Some(session) if session.alive() => return Ok((session, true)),
                Some(_dead) => {}
                None => break,
            }
        }
        match timeout(
            open_timeout(&self.url, &self.settings),
            Session::open(&self.url, Role::Lock),
        )
        .await
        {
            Ok(session) => Ok((session?, false)),
            Err(_) => Err(OpenError::NoAnswer),
        }
    }

    /// Gives back a lock session that holds nothing.
    pub(crate) fn put(&self, session: Session) {
        if session.alive() {
            let mut idle = self.idle.lock().expect("not poisoned");
            if idle.len() < self.settings.max_idle_sessions {
                idle.push(session);
                return;
            }
        }
        session.close();
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
