//! zc.lockfile's locks on PostgreSQL advisory locks: the same lock names and
//! holder records as lock files, shared by every machine that reaches the
//! database.
//!
//! ```no_run
//! use std::time::Duration;
//! use lockfile_postgres::PgLocker;
//!
//! # async fn demo() -> Result<(), lockfile_postgres::Error> {
//! let locker = PgLocker::connect("postgres://app:secret@db.internal/app", "nightly").await?;
//! let lock = locker
//!     .acquire("jobs/report.lock", Some(format!("{};worker-3", std::process::id())), Duration::ZERO)
//!     .await?;
//! // Elsewhere: Couldn't lock 'jobs/report.lock': held by 4242;worker-3
//! println!("fencing token {}", lock.token());
//! tokio::select! {
//!     reason = lock.lost_notify() => eprintln!("lock lost: {reason}"),
//!     () = tokio::time::sleep(Duration::from_secs(10)) => {}
//! }
//! lock.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # What holds
//!
//! - **Exclusion**: a lock is a session-level advisory lock
//!   (`pg_try_advisory_lock`, or `pg_advisory_lock` under `lock_timeout` for a
//!   wait: the server's own queue, no polling). It is held until released or
//!   until its session ends: a killed process's socket closes and the server
//!   frees its locks at once.
//! - **Names**: a lock name is a lock path, under the same rules as in a lock
//!   directory ([`lockfile_core::LockName`]), resolved on the text
//!   (`./a//b.lock` is `a/b.lock`), under a namespace: the same name in the
//!   same namespace is the same lock on every machine.
//! - **Records**: the holder's record (one line, at most
//!   [`lockfile_core::MAX_RECORD`] bytes with zc.lockfile's space and newline)
//!   is written in the statement that takes the lock, and anyone reads it
//!   without the lock ([`PgLocker::read_content`], [`PgLocker::inspect`], the
//!   `Locked` error).
//! - **Same name twice in one locker fails**, as with zc.lockfile: the
//!   locker's own table refuses it before the server is asked (advisory
//!   locks are re-entrant within a session, and sessions are shared), and a
//!   wait for it polls until the first is released.
//! - **Many locks, few connections**: a locker's held locks share at most
//!   [`Builder::max_sessions`] lock sessions (8 by default), beside one it
//!   reads with; one session holds any number of locks, and one heartbeat
//!   statement renews every lease on it. A session that ends loses exactly
//!   its locks, each reported. A wait that blocks in the server's queue takes
//!   a session of its own while it waits (if that leaves one for the rest;
//!   otherwise it polls with tries).
//! - **Fencing tokens**: each acquisition gets a token larger than every
//!   earlier one for the name ([`PgLock::token`]), issued in the statement
//!   that takes the lock (committed to disk first with
//!   [`Builder::durable_tokens`]).
//! - **Leases: a lost holder has stopped before the next one starts.** Each
//!   held lock has a lease in its row, on the server's clock (15 s by
//!   default, [`Builder::lease`]): taken with the lock, renewed by every
//!   heartbeat (each second), ended by a clean release. A crash may lose
//!   the last of those writes: until a lease has passed since the server
//!   started, every taker waits until then. The holder counts its own deadline on its monotonic clock from
//!   the last renewal the server confirmed (when it was sent, plus the lease,
//!   less a margin of [`RATE_MARGIN_PERCENT`] for the clocks' rates), and
//!   declares the lock lost a notice (5 s) before that deadline whatever the
//!   network does, so that what it protects can be stopped by then
//!   ([`PgLock::deadline`]). A new holder that takes the advisory lock while
//!   the last holder's lease runs unreleased (it vanished: a crash, a
//!   partition, a server restart) waits that lease out before
//!   [`PgLocker::acquire`] returns. Assumed: the holder's and the server's
//!   clocks run at rates within [`RATE_MARGIN_PERCENT`] of each other, and
//!   the holders of a name use the same lease; a
//!   holder paused for longer than its lease (SIGSTOP, a frozen virtual
//!   machine) is beyond any lease, and only the fencing token turns it away;
//!   so is a failover to a replica that lacks the last renewals
//!   (asynchronous replication).
//!
//! # What does not
//!
//! - **A lock can be lost.** When the session ends (server restart or
//!   failover, network loss, a server that stops answering) the lock is free
//!   for others once the lease ends. The holder learns it at once when the
//!   server closes the connection (a restart, `pg_terminate_backend`), and
//!   within about 6 s when it goes silent: each held lock's session is
//!   checked every second and given 5 s to answer, over TCP keepalives and
//!   `tcp_user_timeout` ([`PgLock::held`], [`PgLock::lost_notify`]). Each
//!   check asks whether the session still holds the advisory lock
//!   (`pg_locks`) and the name's row still carries this holder's fencing
//!   token, so a session a pooler moved, or a token issued to someone else,
//!   is a loss within one check. The server sets the same keepalives on its
//!   end of a lock's session, so a client that vanished loses its advisory
//!   locks within about 5 s, and its lease ends after the lease's length.
//!   Whatever the lock guards should check the fencing token.
//! - **Connection poolers in transaction mode** (PgBouncer's
//!   `pool_mode = transaction`) hand a session to other clients between
//!   transactions, which breaks session locks: connect to the server, or to a
//!   pooler in session mode.
//! - `PG*` environment variables are not read, nor `~/.postgresql/`.
//!
//! # TLS
//!
//! On the platform's own TLS (native-tls: OpenSSL on Linux, SChannel on
//! Windows, Security.framework on macOS), with libpq's `sslmode`:
//!
//! | `sslmode` | TLS | the server's certificate |
//! | --- | --- | --- |
//! | `disable` | never | |
//! | `prefer` (the default) | if the server offers it | not checked |
//! | `require` | always | not checked |
//! | `verify-ca` | always | signed by a trusted root |
//! | `verify-full` | always | signed by a trusted root, for the host name in the URL |
//!
//! The trusted roots are those in `sslrootcert=PATH` (a PEM file) alone, or
//! else the system's (libpq's default, `~/.postgresql/root.crt`, is not
//! read; `sslrootcert=system` names the system's explicitly). As in libpq,
//! `prefer` and `require` check the chain too when `sslrootcert` names a
//! file, and `sslmode` does nothing on a Unix socket; unlike libpq, a failed
//! handshake under `prefer` is an error, not a retry without TLS. A refused
//! certificate fails the connection with one line saying why and what the
//! mode asked for. Client certificates (`sslcert`, `sslkey`) are not
//! supported.
//!
//! # Keys
//!
//! Advisory keys are 64-bit, names are not: hashing them would let two
//! names collide and silently exclude each other. Instead the table
//! `lockfile_locks` (created on first use, in the first schema of the
//! `search_path`) gives each (namespace, name) a key from an identity
//! sequence, starting at [`ADVISORY_KEY_BASE`] + 1, so no two names ever share
//! one. The statement that takes a key's lock checks, in the same statement,
//! that the name still maps to that key before it counts as taken. Rows are
//! never deleted (a trigger refuses it): a name keeps its key for good.
//!
//! Needs PostgreSQL 12 or later, and a role that may create the table on first
//! use (or a table created beforehand by one that may).
//!
//! # The public API
//!
//! - [`PgLocker`] (from [`PgLocker::connect`] or its [`Builder`]): acquire,
//!   read, inspect ([`Inspection`]); it is a [`lockfile_core::LockBackend`].
//! - [`PgLock`]: a held lock, its fencing token, whether it is still held,
//!   the notice of its loss, its deadline, its release.
//! - [`Error`], whose database failures keep the server's answer as their
//!   source ([`DbFailure`], with its SQLSTATE); [`redact_url`] for logging a
//!   URL; [`DEFAULT_NAMESPACE`], [`ADVISORY_KEY_BASE`] and
//!   [`RATE_MARGIN_PERCENT`].
//! - With the feature `testing`, helpers for this repository's tests and
//!   benchmarks (a bare floor cycle, the lock session's TLS, a count of
//!   connections): not a stable API.

#![deny(missing_docs)]

mod backend;
mod error;
mod lock;
mod locker;
mod pool;
mod record;
mod session;
mod shared;
mod sql;
mod tls;
mod url;

pub use error::{DbFailure, Error};
pub use lock::PgLock;
pub use locker::{Builder, Inspection, PgLocker};
pub use lockfile_core::lease::RATE_MARGIN_PERCENT;
pub use sql::ADVISORY_KEY_BASE;

/// The namespace when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The URL without its password: `postgres://user:secret@host/db` is shown
/// as `postgres://user@host/db`, and a `password=` parameter is left out.
/// Every message of this crate shows URLs this way.
pub fn redact_url(url: &str) -> String {
    url::redact(url)
}
