//! `lockfile inspect`: who holds a lock file, without taking the lock.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::exit;

/// Print the holder's content and whether the file is locked right now.
///
/// Takes no lock, so it never makes a concurrent taker fail. Whether the file
/// is locked is read from /proc/locks on Linux; on Windows, by trying to read
/// byte 0, which a holder's lock makes unreadable (no pid); elsewhere it says
/// `unknown`. Prints two lines, `content: <content or (none)>` and
/// `locked: yes (pid N)`, `yes`, `no` or `unknown`. With --lock-db: the
/// record, `locked: yes (backend pid N)` or `no`, and `token: N`, the last
/// fencing token, once the name has been locked.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The lock file (with --lock-db: the lock's name).
    path: PathBuf,

    #[command(flatten)]
    db: crate::db::DbArgs,
}

pub fn run(args: InspectArgs) -> ExitCode {
    if let Some(url) = args.db.url() {
        return crate::db::inspect(&args.db, &url, &args.path);
    }
    let content = match lockfile_core::read_content(&args.path) {
        Ok(content) => content,
        Err(error) => return exit::lock_error(&error),
    };
    println!("content: {}", content.as_deref().unwrap_or("(none)"));
    match lock_holder(&args.path) {
        Some(Some(pid)) => println!("locked: yes (pid {pid})"),
        Some(None) => println!("locked: no"),
        None => match locked_without_pid(&args.path) {
            Some(true) => println!("locked: yes"),
            Some(false) => println!("locked: no"),
            None => println!("locked: unknown"),
        },
    }
    ExitCode::SUCCESS
}

/// `Some(Some(pid))` when /proc/locks lists a lock on the file, `Some(None)`
/// when it lists none, `None` when there is no way to tell.
#[cfg(target_os = "linux")]
fn lock_holder(path: &Path) -> Option<Option<u32>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let file_id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    Some(proc_locks_holder(&locks, &file_id))
}

#[cfg(not(target_os = "linux"))]
fn lock_holder(_path: &Path) -> Option<Option<u32>> {
    None
}

/// Whether the file is locked, where the holder's pid cannot be known: on
/// Windows, where locks on byte 0 are mandatory, a read of byte 0 fails with
/// ERROR_LOCK_VIOLATION while someone holds it. A read takes no lock, so it
/// cannot make a concurrent taker fail. `None` when that cannot tell: an
/// empty file (byte 0 does not exist), an error, or Wine, which does not
/// enforce locks on reads (byte 0 reads the same, held or not).
#[cfg(windows)]
fn locked_without_pid(path: &Path) -> Option<bool> {
    use std::os::windows::fs::FileExt;
    const ERROR_LOCK_VIOLATION: i32 = 33;
    if under_wine() {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    match file.seek_read(&mut [0], 0) {
        Ok(1) => Some(false),
        Ok(_) => None,
        Err(error) if error.raw_os_error() == Some(ERROR_LOCK_VIOLATION) => Some(true),
        Err(_) => None,
    }
}

/// Wine's ntdll exports `wine_get_version`; Windows' does not.
#[cfg(windows)]
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

#[cfg(not(windows))]
fn locked_without_pid(_path: &Path) -> Option<bool> {
    None
}

/// Finds the holder of `file_id` (`MAJOR:MINOR:INODE`, hex device numbers) in
/// /proc/locks. Lines with `->` are waiters, not holders.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn proc_locks_holder(locks: &str, file_id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, kind, _, _, pid, id, ..] if *kind != "->" && *id == file_id => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::proc_locks_holder;

    #[test]
    fn finds_the_holder_and_skips_waiters() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 fe:00:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 5018 fe:00:10010786 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 6000 fe:00:10010786 0 EOF\n";
        assert_eq!(proc_locks_holder(locks, "fe:00:10010786"), Some(5018));
        assert_eq!(proc_locks_holder(locks, "fe:00:1"), None);
        let waiting_only = "2: -> FLOCK  ADVISORY  WRITE 6000 fe:00:5 0 EOF\n";
        assert_eq!(proc_locks_holder(waiting_only, "fe:00:5"), None);
    }
}
