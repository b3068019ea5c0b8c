//! Confining plugin paths to the lock directory.
//!
//! Resolution is cap-std's (openat2 with RESOLVE_BENEATH on Linux, checked
//! component by component elsewhere): `..`, absolute paths and symbolic links
//! that leave the directory fail there, before anything is created.

use std::fs::File;
use std::io;

use cap_std::fs::{Dir, OpenOptions};

/// Why a plugin's path was refused before reaching the file system.
pub(crate) fn refuse(path: &str) -> Option<String> {
    if path.is_empty() {
        Some("empty path".to_owned())
    } else if path.contains('\0') {
        Some(format!("path {path:?} contains NUL"))
    } else {
        None
    }
}

/// Whether cap-std refused `error` because the path leads outside the
/// directory: it reports that as PermissionDenied without an OS error code,
/// unlike a real EACCES.
pub(crate) fn is_escape(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::PermissionDenied && error.raw_os_error().is_none()
}

pub(crate) fn escape_message(path: &str) -> String {
    format!("'{path}' leads outside the lock directory")
}

/// Opens `path` beneath `dir` for locking: read-write, created if missing,
/// never truncated, close-on-exec.
pub(crate) fn open_for_locking(dir: &Dir, path: &str) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true);
    dir.open_with(path, &options)
        .map(cap_std::fs::File::into_std)
}

/// Opens `path` beneath `dir` for reading.
pub(crate) fn open_for_reading(dir: &Dir, path: &str) -> io::Result<File> {
    dir.open(path).map(cap_std::fs::File::into_std)
}
