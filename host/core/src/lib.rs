//! zc.lockfile's lock files in Rust.
//!
//! A [`LockFile`] is an exclusive, non-blocking OS lock on a file that writes
//! who holds it into the file: `" 1234\n"` by default, or a template such as
//! `{pid};{hostname}` for containers, where every pid is 1. The bytes and the
//! lock are those of Python's [zc.lockfile], so Rust and Python processes
//! exclude each other on the same files.
//!
//! ```
//! use lockfile_core::{Error, LockFile};
//!
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("job.lock");
//! let lock = LockFile::lock(&path)?;
//!
//! // A second lock fails at once, even in the same process, and says who holds it.
//! let Err(Error::Locked { holder, .. }) = LockFile::lock(&path) else { panic!() };
//! assert_eq!(holder, Some(std::process::id().to_string()));
//!
//! lock.release();
//! assert!(path.exists(), "the file is never deleted");
//! assert_eq!(std::fs::read(&path)?, format!(" {}\n", std::process::id()).into_bytes());
//! LockFile::lock(&path)?;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```
//!
//! What it does differently from zc.lockfile 4.0, on purpose:
//! - a bad template is an error before the file is opened, not a `KeyError`
//!   with the lock still held;
//! - the record is always written at offset 0, so a racing creator cannot
//!   leave two records in the file;
//! - files are opened close-on-exec, and only the process that took a lock
//!   unlocks it, so a forked child cannot release its parent's lock;
//! - a symbolic link or a second hard link in the lock file's place is
//!   refused, not followed ([`open_for_locking`], [`check_links`]), so no one
//!   who can write the directory can aim the record at another file;
//! - it can wait for the lock ([`LockOptions::wait`]), as yg.lockfile does,
//!   without ever deleting the file, and without polling it every few
//!   milliseconds: on Linux a waiter sleeps until the file is closed
//!   ([`ReleaseWatch`]), and polls only every [`FALLBACK_POLL`].
//!
//! Locks use std's `File::try_lock`: flock(2) on Unix. std adopted fs2's API in
//! Rust 1.89; fs2 itself is unmaintained and its `FileExt` methods are now
//! shadowed by std's of the same names.
//!
//! On Windows, std's `try_lock` would lock the whole file, and Windows locks
//! are mandatory: nobody could read the holder's record. So the lock is
//! zc.lockfile's there: `LockFileEx` on byte 0 only, and readers
//! ([`read_content`], [`Error::Locked`]'s holder) read the record from byte 1,
//! behind zc.lockfile's leading space. Waits poll every [`FALLBACK_POLL`].
//!
//! # The public API
//!
//! - Lock files: [`LockFile`], taken with [`LockOptions`] (or in steps, for
//!   hosts that open or wait their own way: [`PendingLock`], [`Attempt`],
//!   [`ReleaseWatch`], [`WaitSchedule`], [`sleep_or_watch`]); read without the
//!   lock with [`read_content`], [`read_content_from`], [`inspect_from`].
//! - What a lock path may be: [`LockName`] and [`check_lock_path`] (a path
//!   from someone the host does not trust: the one name every backend
//!   takes), [`open_for_locking`] and [`check_links`] (no link in the lock
//!   file's place).
//! - Every backend, lock files included ([`FileBackend`]), behind one
//!   boundary: [`LockBackend`], [`BackendLock`], [`Inspection`], [`Locked`],
//!   [`BackendFuture`], [`DeadlineReader`] and [`block_on`].
//! - Errors: [`Error`], [`TemplateError`], [`LockPathError`].
//!
//! [zc.lockfile]: https://pypi.org/project/zc.lockfile/

#![deny(missing_docs)]

mod backend;
mod content;
mod error;
mod file_backend;
mod inspect;
pub mod lease;
mod lock;
mod lock_path;
mod open;
mod sys;
mod template;
mod wait;
mod wait_thread;

pub use backend::{
    BackendFuture, BackendLock, DeadlineReader, Inspection, LockBackend, Locked, block_on,
};
pub use content::{read_content, read_content_from};
pub use error::Error;
pub use file_backend::FileBackend;
pub use inspect::inspect_from;
pub use lock::{Attempt, LockFile, LockOptions, PendingLock};
pub use lock_path::{
    LockName, LockPathError, MAX_LOCK_PATH, MAX_LOCK_PATH_COMPONENT, check_lock_path,
    check_namespace,
};
pub use open::{check_links, open_for_locking};
pub use template::{MAX_RECORD, TemplateError};
pub use wait::{FALLBACK_POLL, FALLBACK_POLL_MAX, ReleaseWatch, WaitSchedule, sleep_or_watch};
