//! Confining plugin paths to the lock directory, and bounding what a plugin
//! can create there.
//!
//! A path is first checked on its text ([`lockfile_core::LockName`]:
//! relative, bounded, no `..` above the directory), then resolved by cap-std
//! (openat2 with RESOLVE_BENEATH on Linux, checked component by component
//! elsewhere), which also stops symbolic links that lead outside. Both happen
//! before anything is created.

use std::collections::HashSet;
use std::fs::File;
use std::io;

use cap_std::fs::{Dir, OpenOptions};

/// Why a plugin's path was refused before reaching any backend.
pub(crate) fn refuse(path: &str) -> Option<String> {
    lockfile_core::LockName::new(path)
        .err()
        .map(|error| error.to_string())
}

/// Whether cap-std refused `error` because the path leads outside the
/// directory: it reports that as PermissionDenied without an OS error code,
/// unlike a real EACCES.
pub(crate) fn is_cap_std_escape(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied && error.raw_os_error().is_none()
}

/// A path refused for leading outside the lock directory: the source of the
/// [`io::Error`] [`crate::DirBackend`] reports, so that the interface can
/// tell it from other errors and answer `not-permitted`.
#[derive(Debug)]
pub(crate) struct Escape(pub(crate) String);

impl std::fmt::Display for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'{}' leads outside the lock directory (through a symbolic link)",
            self.0
        )
    }
}

impl std::error::Error for Escape {}

/// The escape `error` reports, if it is one.
pub(crate) fn escape(error: &io::Error) -> Option<&Escape> {
    error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<Escape>())
}

/// How many lock files a plugin instance may still create: it bounds what a
/// plugin can leave on the host's disk (each file holds at most one record of
/// `lockfile_core::MAX_RECORD` bytes), or in a backend's store of names (a
/// database row per name, with its record).
#[derive(Debug, Clone)]
pub(crate) struct FileBudget {
    pub(crate) created: u32,
    pub(crate) max: u32,
    /// Backend names this plugin has seen exist (names are never removed),
    /// so that it asks the backend once per name; at most [`KNOWN_NAMES`].
    pub(crate) known: HashSet<String>,
}

/// How many existing backend names a plugin instance remembers; beyond it,
/// the backend is asked again (a round trip) for names not remembered.
const KNOWN_NAMES: usize = 4096;

impl FileBudget {
    pub(crate) fn new(max: u32) -> Self {
        Self {
            created: 0,
            max,
            known: HashSet::new(),
        }
    }

    /// Whether `name` is known to exist in the backend.
    pub(crate) fn is_known(&self, name: &str) -> bool {
        self.known.contains(name)
    }

    /// Lets the plugin acquire the backend name `name`, which `existed`
    /// before or not: a new name is counted, and refused once the budget is
    /// spent. Counted even if the acquire then fails or another process
    /// creates it meanwhile: the limit errs on the safe side.
    pub(crate) fn admit_name(&mut self, name: &str, existed: bool) -> Result<(), CreationLimit> {
        if !existed {
            if self.created >= self.max {
                return Err(CreationLimit(self.max));
            }
            self.created += 1;
        }
        if self.known.len() < KNOWN_NAMES {
            self.known.insert(name.to_owned());
        }
        Ok(())
    }
}

/// A spent [`FileBudget`], as the plugin is told.
#[derive(Debug)]
pub(crate) struct CreationLimit(u32);

impl std::fmt::Display for CreationLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this plugin may create at most {} lock files and has created them all: reuse existing lock names",
            self.0
        )
    }
}

/// Opens `path` beneath `dir` for locking: read-write, created if missing,
/// never truncated, close-on-exec, never blocking (a FIFO in its place is an
/// error, not a hang).
pub(crate) fn open_for_locking(dir: &Dir, path: &str) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    nonblocking(&mut options);
    dir.open_with(path, &options)
        .map(cap_std::fs::File::into_std)
}

/// Opens `path` beneath `dir` for reading, without blocking.
pub(crate) fn open_for_reading(dir: &Dir, path: &str) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    nonblocking(&mut options);
    dir.open_with(path, &options)
        .map(cap_std::fs::File::into_std)
}

/// Opens the lock file at `path` beneath `dir` for reading its record, with
/// the link rule of lock files opened by path (one name only), so a hard
/// link in the directory cannot show another file's first line.
pub(crate) fn open_record(dir: &Dir, path: &str) -> Result<File, lockfile_core::Error> {
    open_for_reading(dir, path)
        .and_then(|file| lockfile_core::check_links(&file).map(|()| file))
        .map_err(|source| lockfile_core::Error::Io {
            operation: "open",
            path: path.into(),
            source,
        })
}

/// What the holder of the lock file at `path` beneath `dir` recorded, read
/// without taking the lock.
pub(crate) fn read_record(dir: &Dir, path: &str) -> Result<Option<String>, lockfile_core::Error> {
    let file = open_record(dir, path)?;
    lockfile_core::read_content_from(&file).map_err(|source| lockfile_core::Error::Io {
        operation: "read",
        path: path.into(),
        source,
    })
}

fn nonblocking(options: &mut OpenOptions) {
    #[cfg(unix)]
    cap_std::fs::OpenOptionsExt::custom_flags(options, libc::O_NONBLOCK);
    #[cfg(not(unix))]
    let _ = options;
}
