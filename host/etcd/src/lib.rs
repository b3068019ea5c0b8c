//! zc.lockfile's locks on etcd: the same lock names and holder records as
//! lock files, shared by every machine that reaches the cluster, with the
//! same lease discipline as `lockfile-postgres`.
//!
//! ```no_run
//! use std::time::Duration;
//! use lockfile_etcd::EtcdLocker;
//!
//! # async fn demo() -> Result<(), lockfile_etcd::Error> {
//! let locker = EtcdLocker::connect("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379", "nightly").await?;
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
//! - **Exclusion**: each acquisition puts a key in its name's queue, on its
//!   process's lease; the key created first holds the lock (etcd's own
//!   recipe, as its `concurrency.Mutex` and `etcdctl lock` use). A free lock
//!   is taken in one transaction, with its record. A wait watches the key
//!   created just before its own and is woken by its deletion: queued on the
//!   server, in order, never polled. A wait that times out or is cancelled
//!   deletes its key.
//! - **Names**: a lock name is a lock path under the lock path rules
//!   ([`lockfile_core::LockName`]), resolved on the text; the namespace is a
//!   key prefix: `job.lock` in namespace `/locks/app` is the key
//!   `/locks/app/job.lock`, which holds the record.
//! - **Records**: the holder's record (one line, at most
//!   [`lockfile_core::MAX_RECORD`] bytes with zc.lockfile's space and
//!   newline) is the value of the name's key, written with the acquisition;
//!   anyone reads it without the lock ([`EtcdLocker::read_content`],
//!   `etcdctl get`). It stays after a release, as a lock file's does.
//! - **Fencing tokens**: the revision at which an acquisition wrote its
//!   record ([`EtcdLock::token`]): larger than every earlier token of the
//!   name, across crashes and restarts of the cluster (revisions never go
//!   back).
//! - **Leases: a lost holder has stopped before the next one starts.** A
//!   locker's queue keys live on one etcd lease (its TTL: 15 s by default,
//!   [`Builder::lease`]), renewed every second over one stream. The holder
//!   counts its deadline on its monotonic clock from the last renewal the
//!   server confirmed (when it was sent, plus the lease, less
//!   [`RATE_MARGIN_PERCENT`]) and declares its locks lost a notice (5 s)
//!   before it whatever the network does, so that what they protect can be
//!   stopped by then ([`EtcdLock::deadline`]). A lost lease is never revoked
//!   by its holder: the cluster ends it at its TTL, and deletes its keys, and
//!   only then does the next waiter get the lock. etcd only ever lengthens a
//!   lease (a new leader renews every lease in full), never shortens one.
//!   Assumed: the clocks run at rates within [`RATE_MARGIN_PERCENT`] of each
//!   other; a holder paused for longer than its lease (SIGSTOP, a frozen
//!   virtual machine) is beyond any lease, and only the fencing token turns
//!   it away.
//! - **Ownership**: each renewal is followed by one transaction that checks
//!   every held lock's key is still there with its revision: a key deleted
//!   by hand is a lost lock within a heartbeat.
//! - **Few connections**: a locker uses one gRPC channel to each endpoint
//!   (HTTP/2 carries every request, renewal and watch), whatever it holds.
//!
//! # What does not
//!
//! - **A lock can be lost**, when its lease cannot be renewed in time (a
//!   partition, a cluster without a quorum): the holder is told a notice
//!   before its deadline. Whatever the lock guards should check the fencing
//!   token.
//! - Two acquisitions of one name by one locker exclude each other, as two
//!   lock files do: the second is `Locked` by the first's record.
//!
//! # TLS and users
//!
//! `etcds://` connects over TLS (rustls), trusting the roots in
//! `cacert=PATH` (a PEM file), else the system's; a user and password in the
//! URL log in (etcd's simple tokens, refreshed when they expire). Client
//! certificates are not supported.
//!
//! # The public API
//!
//! - [`EtcdLocker`] (from [`EtcdLocker::connect`] or its [`Builder`]):
//!   acquire, read, inspect ([`Inspection`]); it is a
//!   [`lockfile_core::LockBackend`].
//! - [`EtcdLock`]: a held lock, its fencing token, whether it is still
//!   held, the notice of its loss, its deadline, its release.
//! - [`Error`], whose cluster failures keep etcd-client's error as their
//!   source ([`EtcdFailure`]); [`redact_url`]; [`DEFAULT_NAMESPACE`] and
//!   [`RATE_MARGIN_PERCENT`].

#![deny(missing_docs)]

mod backend;
mod error;
mod grant;
mod keys;
mod lock;
mod locker;
mod url;
mod wait;

pub use error::{Error, EtcdFailure};
pub use lock::EtcdLock;
pub use locker::{Builder, EtcdLocker, Inspection};
pub use lockfile_core::lease::RATE_MARGIN_PERCENT;

/// The namespace when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The URL without its password: `etcd://user:secret@host:2379` is shown as
/// `etcd://user@host:2379`. Every message of this crate shows URLs this way.
pub fn redact_url(url: &str) -> String {
    url::redact(url)
}
