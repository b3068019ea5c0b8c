//! Failed attempts leak no descriptor. Alone in its own test binary: the
//! descriptor count is per process, and other tests running in parallel
//! threads would open and close files while it counts.

use lockfile_core::{Error, LockFile, LockOptions};

#[cfg(not(windows))]
fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The process's handles: files, and everything else (threads, events).
#[cfg(windows)]
fn open_descriptors() -> usize {
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessHandleCount};
    let mut count = 0;
    // SAFETY: the pseudo-handle of this process and a place for the count.
    assert_ne!(
        unsafe { GetProcessHandleCount(GetCurrentProcess(), &mut count) },
        0
    );
    count as usize
}

#[test]
fn ten_thousand_failed_attempts_leak_no_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let held = LockFile::lock(&path).unwrap();
    let before = open_descriptors();
    for _ in 0..10_000 {
        assert!(matches!(LockFile::lock(&path), Err(Error::Locked { .. })));
    }
    for _ in 0..100 {
        let bad = LockOptions::new().content_template("{x}").lock(&path);
        assert!(matches!(bad, Err(Error::InvalidTemplate(_))));
    }
    assert_eq!(open_descriptors(), before);
    drop(held);
}
