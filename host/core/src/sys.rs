//! The operating system's calls, kept in one place so another backend (Windows,
//! locking byte 0 only as zc.lockfile does) can be added beside this one.

use std::fs::{File, TryLockError};
use std::io;

/// Takes the exclusive lock without waiting. `Ok(false)`: someone else holds it.
///
/// On Unix std uses `flock(2)`, which locks the open file description: a second
/// open of the same path fails even in the same process, as zc.lockfile's own
/// tests require (fcntl record locks would not).
pub(crate) fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(error)) => Err(error),
    }
}

/// Drops the lock explicitly, as zc.lockfile's `close()` does.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    file.unlock()
}

/// Writes `bytes` at offset 0 whatever the file position.
#[cfg(unix)]
pub(crate) fn write_at_start(file: &File, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, 0)
}

/// Reads from offset 0 into `buf` with one pread, returning how many bytes
/// were read. Holder records are one short line: one read returns all of it,
/// and a failed try pays for no second call to find the end of the file.
#[cfg(unix)]
pub(crate) fn read_at_start(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(buf, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

#[cfg(not(unix))]
compile_error!(
    "lockfile-core has a Unix backend only; a Windows one must lock byte 0 (not the whole file, as std does) so others can still read the holder"
);
