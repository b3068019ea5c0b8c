//! Opening lock files by path, and what a lock path may be.
//!
//! The last component of a lock path is opened without following a symbolic
//! link (`O_NOFOLLOW`; on Windows a reparse point is opened as itself and
//! refused), and a lock file with more than one hard link is refused before
//! anything is written. Either link, made by another user in a directory both
//! can write (`/tmp`, a group's directory), would otherwise aim the holder's
//! record at a file of whoever takes the lock, root's included: the record is
//! written over its start and the rest cut off. Directories along the path may
//! still be links, as `/var/lock` often is. zc.lockfile follows links; on the
//! files both accept, the lock and the bytes are the same.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

use crate::sys;

/// Opens a lock file as [`LockOptions::lock`](crate::LockOptions::lock) does,
/// for [`LockOptions::lock_with`](crate::LockOptions::lock_with) callers that
/// only want another name in errors.
///
/// zc.lockfile opens with `'r+'` and falls back to `'a+'`; read-write-create
/// without truncation is the same minus the append mode that let it write a
/// second record. std sets close-on-exec, so children never inherit the lock;
/// the open never blocks, so a FIFO in the file's place is an error, not a
/// hang. On Windows std's handles are not inheritable either, and share read,
/// write and delete, so others can open, read and lock the file meanwhile.
///
/// A symbolic link in the file's place is an error naming it (see the
/// module's docs); a file with several hard links is refused before its
/// lock is used ([`check_links`]), as it is for files opened any other way.
pub fn open_for_locking(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    sys::no_follow(&mut options);
    options.open(path).map_err(|error| explain(path, error))
}

/// Opens a lock file for reading its record, with the same rules as
/// [`open_for_locking`], the link count included: a read must not show
/// another file's first line either.
pub(crate) fn open_for_reading(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true);
    sys::no_follow(&mut options);
    let file = options.open(path).map_err(|error| explain(path, error))?;
    check_links(&file)?;
    Ok(file)
}

/// Refuses an open lock file that is reached through a link: one with more
/// than one hard link, or (on Windows, where the open does not refuse it) a
/// symbolic link or other reparse point. Every lock is checked so before
/// anything is written into its file or read from it (the holder's record of
/// a failed try), whoever opened the file: hosts that open lock files their
/// own way (beneath a cap-std directory) get the same rule.
pub fn check_links(file: &File) -> io::Result<()> {
    refuse_links(&sys::links(file)?)
}

/// [`check_links`] on what [`sys::links`] said.
pub(crate) fn refuse_links(links: &sys::Links) -> io::Result<()> {
    if links.reparse_point {
        return Err(symbolic_link());
    }
    if links.names > 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "it has {} hard links, and a lock file may have only one: the holder's record \
                 would be written into the file the other names share; remove the other links \
                 or give another path",
                links.names
            ),
        ));
    }
    Ok(())
}

/// Says why an open failed when the last component is a symbolic link: it
/// is never followed, so the link is the reason, whatever the system's word
/// for it (ELOOP; EACCES where `fs.protected_regular` checks a sticky
/// directory first). Only called on a failure, so success pays nothing.
fn explain(path: &Path, error: io::Error) -> io::Error {
    match path.symlink_metadata() {
        Ok(meta) if meta.file_type().is_symlink() => symbolic_link(),
        _ => error,
    }
}

fn symbolic_link() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "it is a symbolic link, and lock files are opened without following one (a link in a \
         shared directory could aim the holder's record at any file): give the real file's path",
    )
}
