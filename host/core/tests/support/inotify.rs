//! This process's inotify instances, as /proc shows them: for the release
//! watch tests, each in a test binary of its own so that the counts are its
//! own watches'.

use std::ffi::OsString;
use std::path::Path;

/// The descriptor numbers of this process's inotify instances.
fn inotify_fds() -> Vec<OsString> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            (target.as_os_str() == "anon_inode:inotify").then_some(entry.file_name())
        })
        .collect()
}

/// How many inotify instances this process has open.
pub fn inotify_instances() -> usize {
    inotify_fds().len()
}

/// How many watches this process's inotify instances have, as
/// /proc/self/fdinfo lists them (a line `inotify wd:...` each).
// Not every test binary that counts instances counts watches.
#[allow(dead_code)]
pub fn watches_in_inotify_instances() -> usize {
    inotify_fds()
        .into_iter()
        .filter_map(|fd| std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd)).ok())
        .map(|info| {
            info.lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count()
        })
        .sum()
}
