//! The operating system's calls, one module per platform as fd-lock does:
//! `unix.rs` (flock(2) on the whole file, inotify on Linux) and `windows.rs`
//! (LockFileEx on byte 0 only, as zc.lockfile does). What is common to both
//! is here.
//!
//! Each platform provides `try_lock`, `unlock`, `write_at_start`,
//! `read_at_start`, the open flags `no_follow`, `links`,
//! and a `watch` module (release notifications, or none); Unix also
//! `inherit_in_child`.

use std::fs::File;
use std::io;

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub(crate) use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub(crate) use windows::*;

#[cfg(not(any(unix, windows)))]
compile_error!(
    "lockfile-core has Unix and Windows backends only: a new one goes beside them in src/sys/"
);

/// How an open file is reached: what [`crate::check_links`] refuses.
pub(crate) struct Links {
    /// A symbolic link or another reparse point, opened as itself (Windows).
    pub(crate) reparse_point: bool,
    /// How many names (hard links) a regular file has; 1 for anything else.
    pub(crate) names: u64,
    /// Whether it is a regular file.
    pub(crate) regular: bool,
    /// Its size in bytes.
    pub(crate) len: u64,
}

/// Says what is wrong when a lock file turns out not to be a regular file (a
/// FIFO, a socket, a device): the system's own word for it, such as "Illegal
/// seek", does not. Only called on a failure, so success pays nothing.
pub(crate) fn explain(file: &File, error: io::Error) -> io::Error {
    match file.metadata() {
        Ok(meta) if !meta.is_file() => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "not a regular file but {}: lock files must be plain files",
                file_kind(&meta.file_type())
            ),
        ),
        _ => error,
    }
}

/// Refuses a file that is not a regular file, with [`explain`]'s message: for
/// the paths where nothing else would fail on one (a lock that writes no
/// record, a read that finds nothing).
pub(crate) fn ensure_regular(file: &File) -> io::Result<()> {
    let meta = file.metadata()?;
    if meta.is_file() {
        return Ok(());
    }
    Err(explain(file, io::Error::other("not a regular file")))
}

fn file_kind(kind: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if kind.is_fifo() {
            return "a FIFO";
        }
        if kind.is_socket() {
            return "a socket";
        }
        if kind.is_char_device() || kind.is_block_device() {
            return "a device";
        }
    }
    if kind.is_dir() {
        "a directory"
    } else {
        "something else"
    }
}

/// No release notifications here: no watch can be made, so the functions that
/// take one are never reached.
#[cfg(not(target_os = "linux"))]
pub(crate) mod watch {
    use std::fs::File;
    use std::io;
    use std::time::Duration;

    /// No watch can exist.
    pub(crate) type Watch = std::convert::Infallible;

    pub(crate) fn watch_closes(_: &File) -> io::Result<Watch> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no release notifications on this system: waits poll",
        ))
    }

    pub(crate) fn wait_readable(watch: &Watch, _: Duration) -> io::Result<bool> {
        match *watch {}
    }

    pub(crate) fn drain(watch: &Watch) -> io::Result<usize> {
        match *watch {}
    }
}
