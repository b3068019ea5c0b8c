//! `lockfile inspect`: who holds a lock file, without taking the lock.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::exit;

/// Print the holder's content and whether the file is locked right now.
///
/// Takes no lock, so it never makes a concurrent taker fail. Whether the file
/// is locked is read from /proc/locks on Linux; elsewhere it says `unknown`.
/// Prints two lines, `content: <content or (none)>` and `locked: yes (pid N)`,
/// `no` or `unknown`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The lock file.
    path: PathBuf,
}

pub fn run(args: InspectArgs) -> ExitCode {
    let content = match lockfile_core::read_content(&args.path) {
        Ok(content) => content,
        Err(error) => return exit::lock_error(&error),
    };
    println!("content: {}", content.as_deref().unwrap_or("(none)"));
    match lock_holder(&args.path) {
        Some(Some(pid)) => println!("locked: yes (pid {pid})"),
        Some(None) => println!("locked: no"),
        None => println!("locked: unknown"),
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
