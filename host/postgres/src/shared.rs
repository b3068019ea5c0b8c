//! Lock sessions shared by the locks a process holds: a session holds any
//! number of advisory locks (one per key), one heartbeat statement renews
//! every lease on it, and a session that ends loses exactly its locks, each
//! reported to its holder. A wait that blocks in the server's queue has a
//! session to itself for as long as it waits, so that no heartbeat queues
//! behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::AbortHandle;
use tokio::time::timeout;
use tokio_postgres::{Row, Statement};

use crate::error::describe;
use crate::pool::Inner;
use crate::session::Session;
use lockfile_core::lease::Lease;

/// A lock session, and the locks it holds.
pub(crate) struct LockSession {
    pub session: Session,
    state: Mutex<State>,
    /// Wakes the heartbeat when a lock is added: its stop time may come
    /// before the one the heartbeat sleeps towards.
    added: Notify,
    heartbeat: Mutex<Option<AbortHandle>>,
}

#[derive(Default)]
struct State {
    locks: HashMap<i64, Slot>,
    /// A wait blocks on the session: nothing else may use it.
    waiting: bool,
    /// Tries running on it: no wait may take it meanwhile.
    tries: usize,
    /// Why the session was lost, once it was: no lock is added any more.
    lost: Option<String>,
}

/// A held lock, as its session's heartbeat sees it.
struct Slot {
    token: u64,
    /// Set once when the lock is lost.
    lost: watch::Sender<Option<String>>,
    /// The deadline after the last renewal the server confirmed.
    deadline: watch::Sender<Instant>,
}

/// What a held lock watches of its slot.
pub(crate) struct SlotWatch {
    pub lost: watch::Receiver<Option<String>>,
    pub deadline: watch::Receiver<Instant>,
}

impl LockSession {
    /// A session just opened, with its heartbeat started.
    pub fn start(session: Session, inner: &Arc<Inner>, waiting: bool) -> Arc<Self> {
        let this = Arc::new(LockSession {
            session,
            state: Mutex::new(State {
                waiting,
                ..State::default()
            }),
            added: Notify::new(),
            heartbeat: Mutex::new(None),
        });
        let beat = Beat {
            interval: inner.settings.heartbeat_interval,
            limit: inner.settings.heartbeat_timeout,
            lease: inner.settings.lease,
        };
        let task = tokio::spawn(heartbeat(this.clone(), Arc::downgrade(inner), beat));
        *lock(&this.heartbeat) = Some(task.abort_handle());
        this
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Whether the session still runs and was not declared lost.
    pub fn alive(&self) -> bool {
        self.session.alive() && self.state().lost.is_none()
    }

    /// Locks held on it now.
    pub fn held(&self) -> usize {
        self.state().locks.len()
    }

    pub fn waiting(&self) -> bool {
        self.state().waiting
    }

    pub fn set_waiting(&self, waiting: bool) {
        self.state().waiting = waiting;
    }

    /// Marks it waiting if it holds nothing and nothing runs on it.
    pub fn take_for_wait(&self) -> bool {
        let mut state = self.state();
        let free = state.locks.is_empty() && !state.waiting && state.tries == 0;
        if free {
            state.waiting = true;
        }
        free
    }

    /// Whether it holds nothing and nothing runs on it.
    pub fn idle(&self) -> bool {
        let state = self.state();
        state.locks.is_empty() && !state.waiting && state.tries == 0
    }

    pub fn begin_try(&self) {
        self.state().tries += 1;
    }

    pub fn end_try(&self) {
        let mut state = self.state();
        state.tries = state.tries.saturating_sub(1);
    }

    /// Records a lock taken on this session, its first deadline counted
    /// from `sent`.
    pub fn add(&self, key: i64, token: u64, deadline: Instant) -> SlotWatch {
        let (lost_tx, lost) = watch::channel(None);
        let (deadline_tx, deadline) = watch::channel(deadline);
        let mut state = self.state();
        if let Some(reason) = &state.lost {
            lost_tx.send_replace(Some(reason.clone()));
        }
        state.locks.insert(
            key,
            Slot {
                token,
                lost: lost_tx,
                deadline: deadline_tx,
            },
        );
        drop(state);
        self.added.notify_one();
        SlotWatch { lost, deadline }
    }

    /// Forgets the lock on `key` (released or dropped): the heartbeat renews
    /// it no more. Whether it had been lost.
    pub fn remove(&self, key: i64) -> Option<String> {
        let slot = self.state().locks.remove(&key)?;
        slot.lost.borrow().clone()
    }

    /// Declares the session lost, with every lock on it, and closes it so
    /// that it cannot come back holding them.
    pub fn lose(&self, reason: &str) {
        let mut state = self.state();
        if state.lost.is_none() {
            state.lost = Some(reason.to_owned());
        }
        for slot in state.locks.values() {
            lose_slot(slot, reason);
        }
        drop(state);
        if let Some(connection) = self.session.abort_handle() {
            connection.abort();
        }
    }

    /// Ends the heartbeat and closes the session, which holds nothing.
    pub fn close(&self) {
        if let Some(heartbeat) = lock(&self.heartbeat).take() {
            heartbeat.abort();
        }
        if let Some(connection) = self.session.abort_handle() {
            connection.abort();
        }
    }

    /// The live locks' keys and tokens, for a renewal.
    fn mine(&self) -> (Vec<i64>, Vec<i64>) {
        self.state()
            .locks
            .iter()
            .filter(|(_, slot)| slot.lost.borrow().is_none())
            .map(|(&key, slot)| (key, slot.token as i64))
            .unzip()
    }

    /// When the first live lock must be told it is lost, if no renewal
    /// comes before.
    fn next_stop(&self, lease: &Lease) -> Option<Instant> {
        self.state()
            .locks
            .values()
            .filter(|slot| slot.lost.borrow().is_none())
            .map(|slot| lease.stop_at(*slot.deadline.borrow()))
            .min()
    }

    /// Declares lost every live lock whose stop time has come.
    fn expire(&self, lease: &Lease) {
        let now = Instant::now();
        let reason = format!(
            "no renewal of its lease was confirmed in time: it ends on the server within {:?}",
            lease.notice + lease.margin()
        );
        for slot in self.state().locks.values() {
            if slot.lost.borrow().is_none() && lease.stop_at(*slot.deadline.borrow()) <= now {
                lose_slot(slot, &reason);
            }
        }
    }

    /// What a renewal `sent` at that instant answered, row by row
    /// ([`sql::RENEW`](crate::sql::RENEW)): each lock the session still owns
    /// gets its new deadline; each it does not is lost. Returns the keys
    /// this session still holds the advisory lock of, for a lost lock (its
    /// row given to another holder), to unlock.
    fn renewed(&self, rows: &[Row], sent: Instant, lease: &Lease) -> Vec<i64> {
        let mut unlock = Vec::new();
        let state = self.state();
        for row in rows {
            let key: i64 = row.get(0);
            let Some(slot) = state.locks.get(&key) else {
                // Released meanwhile.
                continue;
            };
            let holds: bool = row.get(1);
            let token: Option<i64> = row.get(2);
            let renewed: bool = row.get(3);
            let lost = if !holds {
                Some("this session no longer holds the advisory lock (was the session moved by a pooler, or the lock unlocked?)".to_owned())
            } else if token != i64::try_from(slot.token).ok() {
                unlock.push(key);
                Some(format!(
                    "the lock's row carries token {}, not this holder's {}: it was given to another holder",
                    token.map_or_else(|| "none".to_owned(), |token| token.to_string()),
                    slot.token
                ))
            } else if !renewed {
                unlock.push(key);
                Some("the lease could not be renewed".to_owned())
            } else {
                None
            };
            match lost {
                Some(reason) => lose_slot(slot, &reason),
                None => {
                    slot.deadline.send_replace(lease.deadline(sent));
                }
            }
        }
        unlock
    }
}

fn lose_slot(slot: &Slot, reason: &str) {
    if slot.lost.borrow().is_none() {
        slot.lost.send_replace(Some(reason.to_owned()));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a heartbeat beats: every `interval`, each renewal answered within
/// `limit`, renewing `lease`.
#[derive(Clone, Copy)]
struct Beat {
    interval: Duration,
    limit: Duration,
    lease: Lease,
}

/// Renews every lease on `home` each `interval` while it holds locks,
/// checking that it still owns each (its advisory lock, the row's token),
/// and declares lost, whatever the network does, each lock whose stop time
/// has come without a confirmed renewal. Ends when the session does, or a
/// renewal fails or takes longer than `limit`: the session is lost then,
/// with every lock on it, and closed.
async fn heartbeat(home: Arc<LockSession>, inner: Weak<Inner>, beat: Beat) {
    let Beat {
        interval,
        limit,
        lease,
    } = beat;
    let length = lease.micros();
    let mut ended = home.session.ended.clone();
    // Prepared at the first renewal: a short hold pays for no extra round
    // trip.
    let mut renew: Option<Statement> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    // Kept across the wake-ups a new lock makes: restarting the interval at
    // each one would starve the renewals of a session that takes locks more
    // often than it beats.
    let mut next_beat = tokio::time::Instant::now() + interval;
    let reason = loop {
        let stop_at = home
            .next_stop(&lease)
            .map_or_else(far, tokio::time::Instant::from_std);
        tokio::select! {
            biased;
            reason = ended.wait_for(Option::is_some) => {
                break reason.map(|r| r.clone().unwrap_or_default()).unwrap_or_default();
            }
            () = tokio::time::sleep_until(stop_at) => {
                home.expire(&lease);
                continue;
            }
            () = home.added.notified() => continue,
            () = tokio::time::sleep_until(next_beat) => {}
        }
        next_beat = tokio::time::Instant::now() + interval;
        let (keys, tokens) = home.mine();
        if keys.is_empty() {
            continue;
        }
        let sent = Instant::now();
        let client = home.session.client.clone();
        let check = async {
            let statement = match &renew {
                Some(statement) => statement.clone(),
                None => client.prepare(crate::sql::RENEW).await?,
            };
            let rows = client.query(&statement, &[&keys, &tokens, &length]).await?;
            Ok::<_, tokio_postgres::Error>((statement, rows))
        };
        let answer = tokio::select! {
            biased;
            answer = timeout(limit, check) => answer,
            () = tokio::time::sleep_until(stop_at) => {
                home.expire(&lease);
                continue;
            }
        };
        match answer {
            Ok(Ok((statement, rows))) => {
                renew = Some(statement);
                for key in home.renewed(&rows, sent, &lease) {
                    let unlock = &home.session.stmts.unlock;
                    let _ = timeout(limit, client.query_one(unlock, &[&key])).await;
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
    home.lose(&reason);
    if let Some(inner) = inner.upgrade() {
        inner.forget_session(&home);
    }
}
