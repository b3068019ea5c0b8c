//! Windows: LockFileEx on byte 0 only, as zc.lockfile does
//! (`msvcrt.locking(fd, LK_NBLCK, 1)`), and the record read from byte 1.
//!
//! Windows range locks are mandatory: while a process holds byte 0, nobody
//! else can read it. std's `File::try_lock` locks the whole file, which would
//! hide the holder's record from everyone; locking byte 0 alone leaves the
//! record, which starts at byte 1 after zc.lockfile's leading space, readable
//! by everyone, and is the same lock as zc.lockfile's.
//!
//! What std already gives, checked by the tests below: files are opened with
//! `FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE`, so others can
//! open, read and lock them while they are held; and their handles are not
//! inheritable, so no child process gets one. LockFileEx locks belong to the
//! handle: a second open of the same path, even in the same process, cannot
//! take the lock, as with flock(2) on Unix.

use std::fs::File;
use std::io;
use std::os::windows::fs::FileExt;
use std::os::windows::io::AsRawHandle;

use windows_sys::Win32::Foundation::ERROR_LOCK_VIOLATION;
use windows_sys::Win32::Storage::FileSystem::{
    BY_HANDLE_FILE_INFORMATION, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_FLAG_OPEN_REPARSE_POINT, GetFileInformationByHandle, LOCKFILE_EXCLUSIVE_LOCK,
    LOCKFILE_FAIL_IMMEDIATELY, LockFileEx, UnlockFileEx,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

/// An OVERLAPPED naming offset 0, the start of the one locked byte. The
/// handle is synchronous, so the calls complete before returning and the
/// structure only carries the offset.
fn byte_zero() -> OVERLAPPED {
    // SAFETY: plain data; all zeros is offset 0 and no event.
    unsafe { std::mem::zeroed() }
}

/// Takes the exclusive lock on byte 0 without waiting. `Ok(false)`: someone
/// else holds it (ERROR_LOCK_VIOLATION), through another handle, in this
/// process or another.
pub(crate) fn try_lock(file: &File) -> io::Result<bool> {
    let mut overlapped = byte_zero();
    // SAFETY: a valid handle, and an OVERLAPPED that outlives the call.
    let locked = unsafe {
        LockFileEx(
            file.as_raw_handle(),
            LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
            0,
            1,
            0,
            &mut overlapped,
        )
    };
    if locked != 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// Unlocks byte 0 explicitly, as zc.lockfile's `close()` does: the system
/// also unlocks when the handle is closed, but says that may happen later.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    let mut overlapped = byte_zero();
    // SAFETY: as in `try_lock`.
    let unlocked = unsafe { UnlockFileEx(file.as_raw_handle(), 0, 1, 0, &mut overlapped) };
    if unlocked == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `bytes` at offset 0 whatever the file position. Only the holder
/// writes, and its own handle holds byte 0, so the lock does not refuse it.
pub(crate) fn write_at_start(file: &File, mut bytes: &[u8]) -> io::Result<()> {
    let mut offset = 0;
    while !bytes.is_empty() {
        match file.seek_write(bytes, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                bytes = &bytes[written..];
                offset += written as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the record into `buf` as it was written, returning its length:
/// byte 0, zc.lockfile's leading space, cannot be read while someone holds
/// the lock, so the read starts at byte 1 and the space is put back in
/// `buf[0]`. A file whose byte 0 is something else (not a record of ours
/// or zc.lockfile's) reads as if it were a space, held or not, which is how
/// zc.lockfile reads a holder on Windows too (from offset 1). One read, as on
/// Unix.
pub(crate) fn read_at_start(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let Some((space, rest)) = buf.split_first_mut() else {
        return Ok(0);
    };
    let read = file.seek_read(rest, 1)?;
    if read == 0 {
        return Ok(0);
    }
    *space = b' ';
    Ok(read + 1)
}

/// Sets the flags of every open of a lock file by path:
/// `FILE_FLAG_OPEN_REPARSE_POINT`, so a symbolic link (or junction) in the
/// file's place is opened as itself rather than followed, and [`links`] then
/// refuses it before anything is written.
pub(crate) fn no_follow(options: &mut std::fs::OpenOptions) {
    use std::os::windows::fs::OpenOptionsExt;
    options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT);
}

/// How an open file is linked, from one call: whether it is a reparse point
/// (a symbolic link opened as itself), how many names it has, its kind and
/// its size.
pub(crate) fn links(file: &File) -> io::Result<super::Links> {
    // SAFETY: plain data; zeros are a valid value to be overwritten.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: a valid handle and a structure that outlives the call.
    if unsafe { GetFileInformationByHandle(file.as_raw_handle(), &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let directory = info.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY != 0;
    let reparse_point = info.dwFileAttributes & FILE_ATTRIBUTE_REPARSE_POINT != 0;
    Ok(super::Links {
        reparse_point,
        names: if directory {
            1
        } else {
            info.nNumberOfLinks.into()
        },
        regular: !directory && !reparse_point,
        len: (u64::from(info.nFileSizeHigh) << 32) | u64::from(info.nFileSizeLow),
    })
}

/// Whether someone holds the lock on `file` now, without taking it: a read
/// of byte 0, which a holder's lock makes fail with ERROR_LOCK_VIOLATION (a
/// read takes no lock, so it cannot make a concurrent taker fail). Which
/// process holds it cannot be known. `Unknown` for an empty file (byte 0
/// does not exist), an error, and Wine, which does not enforce locks on
/// reads (byte 0 reads the same, held or not).
pub(crate) fn lock_state(file: &File) -> crate::Locked {
    if under_wine() {
        return crate::Locked::Unknown;
    }
    match file.seek_read(&mut [0], 0) {
        Ok(1) => crate::Locked::No,
        Err(error) if error.raw_os_error() == Some(ERROR_LOCK_VIOLATION as i32) => {
            crate::Locked::Yes(None)
        }
        _ => crate::Locked::Unknown,
    }
}

/// Wine's ntdll exports `wine_get_version`; Windows' does not.
fn under_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    let ntdll: Vec<u16> = "ntdll.dll\0".encode_utf16().collect();
    // SAFETY: NUL-terminated names; ntdll is loaded in every process and
    // the handle is not to be closed.
    unsafe {
        let module = GetModuleHandleW(ntdll.as_ptr());
        !module.is_null() && GetProcAddress(module, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::windows::fs::FileExt;
    use std::os::windows::io::AsRawHandle;

    use windows_sys::Win32::Foundation::{GetHandleInformation, HANDLE_FLAG_INHERIT};
    use windows_sys::Win32::Storage::FileSystem::{
        LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY, LockFileEx,
    };
    use windows_sys::Win32::System::IO::OVERLAPPED;

    use super::*;
    use crate::{Error, LockFile, LockOptions, open_for_locking, read_content};

    fn lock_path() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.lock");
        (dir, path)
    }

    #[test]
    fn lock_files_are_not_inherited_by_child_processes() {
        let (_dir, path) = lock_path();
        let file = open_for_locking(&path).unwrap();
        let mut flags = 0;
        // SAFETY: a valid handle and a place for the flags.
        assert_ne!(
            unsafe { GetHandleInformation(file.as_raw_handle(), &mut flags) },
            0
        );
        assert_eq!(flags & HANDLE_FLAG_INHERIT, 0);
    }

    #[test]
    fn a_second_handle_in_this_process_cannot_take_the_lock() {
        let (_dir, path) = lock_path();
        let first = open_for_locking(&path).unwrap();
        let second = open_for_locking(&path).unwrap();
        assert!(try_lock(&first).unwrap());
        assert!(!try_lock(&second).unwrap());
        unlock(&first).unwrap();
        assert!(try_lock(&second).unwrap());
        assert!(!try_lock(&first).unwrap());
    }

    /// Byte 0 alone is locked: another handle can still lock byte 1 on (so
    /// nothing beyond byte 0 is held), and read the record from byte 1.
    #[test]
    fn only_byte_0_is_locked_and_the_record_reads_from_byte_1() {
        let (_dir, path) = lock_path();
        let lock = LockOptions::new()
            .content_template("holder {pid}")
            .lock(&path)
            .unwrap();
        let other = open_for_locking(&path).unwrap();
        let mut rest = [0; 64];
        let read = other.seek_read(&mut rest, 1).unwrap();
        let record = format!("holder {}\n", std::process::id());
        assert_eq!(&rest[..read], record.as_bytes());
        assert_eq!(
            read_content(&path).unwrap(),
            Some(format!("holder {}", std::process::id()))
        );
        // SAFETY: plain data; then offset 1 for the range 1..2^32.
        let mut from_one: OVERLAPPED = unsafe { std::mem::zeroed() };
        from_one.Anonymous.Anonymous.Offset = 1;
        // SAFETY: a valid handle, and an OVERLAPPED that outlives the call.
        let locked = unsafe {
            LockFileEx(
                other.as_raw_handle(),
                LOCKFILE_EXCLUSIVE_LOCK | LOCKFILE_FAIL_IMMEDIATELY,
                0,
                u32::MAX,
                0,
                &mut from_one,
            )
        };
        assert_ne!(locked, 0, "{}", io::Error::last_os_error());
        drop(lock);
    }

    /// What makes the byte-1 reads necessary: on Windows a read of the locked
    /// byte fails. Wine does not enforce locks on reads, so there the read
    /// succeeds and this is skipped, saying so.
    #[test]
    fn byte_0_cannot_be_read_while_held() {
        let (_dir, path) = lock_path();
        let _lock = LockFile::lock(&path).unwrap();
        let other = File::open(&path).unwrap();
        let read = other.seek_read(&mut [0; 8], 0);
        if under_wine() && read.is_ok() {
            eprintln!("skipped: Wine does not enforce byte-range locks on reads");
            return;
        }
        let error = read.unwrap_err();
        assert_eq!(error.raw_os_error(), Some(ERROR_LOCK_VIOLATION as i32));
    }

    #[test]
    fn a_record_starting_with_a_space_reads_as_on_unix() {
        let (_dir, path) = lock_path();
        let lock = LockOptions::new()
            .content_template("  two spaces")
            .lock(&path)
            .unwrap();
        let error = LockFile::lock(&path).unwrap_err();
        assert!(
            matches!(&error, Error::Locked { holder: Some(h), .. } if h == "  two spaces"),
            "{error:?}"
        );
        drop(lock);
        assert_eq!(std::fs::read(&path).unwrap(), b"   two spaces\n");
    }

    #[test]
    fn empty_and_one_byte_files_read_as_no_record() {
        let (_dir, path) = lock_path();
        std::fs::write(&path, "").unwrap();
        assert_eq!(read_content(&path).unwrap(), None);
        std::fs::write(&path, " ").unwrap();
        assert_eq!(read_content(&path).unwrap(), None);
        std::fs::write(&path, " \n").unwrap();
        assert_eq!(read_content(&path).unwrap(), None);
    }
}
