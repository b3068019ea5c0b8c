//! zc.lockfile's own tests (tests.py and the README doctest), ported, plus the
//! defects of zc.lockfile 4.0 that this crate fixes.

use std::fs;
use std::path::Path;
#[cfg(unix)]
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use lockfile_core::{Error, LockFile, LockOptions, TemplateError, read_content};

fn pid() -> String {
    std::process::id().to_string()
}

/// The lock file's bytes as another reader sees them while the lock is held:
/// all of them on Unix. On Windows byte 0 is locked, and unreadable (except
/// under Wine): the bytes from 1 on, behind the space the holder wrote at 0,
/// as zc.lockfile's own tests read them (from offset 1).
fn held_record(path: &Path) -> Vec<u8> {
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileExt;
        let file = fs::File::open(path).unwrap();
        let mut bytes = vec![0; 4096];
        let read = file.seek_read(&mut bytes[1..], 1).unwrap();
        bytes[0] = b' ';
        bytes.truncate(read + 1);
        bytes
    }
    #[cfg(not(windows))]
    fs::read(path).unwrap()
}

#[test]
fn a_second_lock_fails_even_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let lock = LockFile::lock(&path).unwrap();
    let error = LockFile::lock(&path).unwrap_err();
    assert!(
        matches!(&error, Error::Locked { holder: Some(h), .. } if *h == pid()),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!("Couldn't lock '{}': held by {}", path.display(), pid())
    );
    drop(lock);
}

#[test]
fn the_file_is_left_behind_and_can_be_locked_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    LockFile::lock(&path).unwrap().release();
    assert!(path.exists());
    let again = LockFile::lock(&path).unwrap();
    assert_eq!(again.content(), Some(pid().as_str()));
}

#[test]
fn writes_the_pid_from_offset_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let _lock = LockFile::lock(&path).unwrap();
    assert_eq!(held_record(&path), format!(" {}\n", pid()).into_bytes());
    assert_eq!(read_content(&path).unwrap(), Some(pid()));
}

#[test]
fn writes_the_hostname_template() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let lock = LockOptions::new()
        .content_template("{hostname}")
        .lock(&path)
        .unwrap();
    let hostname = hostname::get().unwrap().into_string().unwrap();
    assert_eq!(held_record(&path), format!(" {hostname}\n").into_bytes());
    assert_eq!(lock.content(), Some(hostname.as_str()));
}

#[test]
fn writes_pid_slash_hostname_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let _lock = LockOptions::new()
        .content_template("{pid}/{hostname}")
        .hostname("myhostname")
        .lock(&path)
        .unwrap();
    assert_eq!(
        held_record(&path),
        format!(" {}/myhostname\n", pid()).into_bytes()
    );
}

#[test]
fn an_empty_template_writes_a_space_and_a_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let lock = LockOptions::new().content_template("").lock(&path).unwrap();
    assert_eq!(held_record(&path), b" \n");
    assert_eq!(lock.content(), Some(""));
    assert_eq!(read_content(&path).unwrap(), None);
}

#[test]
fn no_content_mode_locks_and_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    fs::write(&path, "whatever was here\n").unwrap();
    let lock = LockOptions::new().no_content().lock(&path).unwrap();
    assert_eq!(lock.content(), None);
    assert!(matches!(LockFile::lock(&path), Err(Error::Locked { .. })));
    assert!(matches!(
        LockOptions::new().no_content().lock(&path),
        Err(Error::Locked { .. })
    ));
    lock.release();
    assert_eq!(fs::read_to_string(&path).unwrap(), "whatever was here\n");
}

/// zc.lockfile's 50-thread test: every thread spins until it holds the lock,
/// then does a non-atomic read-increment-write of a counter.
#[test]
fn fifty_threads_increment_a_counter_under_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let counter = dir.path().join("counter");
    fs::write(&counter, "0").unwrap();
    let start = Barrier::new(50);
    std::thread::scope(|scope| {
        for _ in 0..50 {
            scope.spawn(|| {
                start.wait();
                let lock = loop {
                    match LockFile::lock(&path) {
                        Ok(lock) => break lock,
                        Err(Error::Locked { .. }) => std::thread::yield_now(),
                        Err(other) => panic!("{other}"),
                    }
                };
                let n: u32 = fs::read_to_string(&counter).unwrap().parse().unwrap();
                std::thread::sleep(Duration::from_micros(100));
                fs::write(&counter, (n + 1).to_string()).unwrap();
                lock.release();
            });
        }
    });
    assert_eq!(fs::read_to_string(&counter).unwrap(), "50");
    let record = fs::read_to_string(&path).unwrap();
    assert_eq!(record, format!(" {}\n", pid()), "exactly one token");
}

// Unix: runs sleep(1); tests/processes.rs does the same on every platform.
#[cfg(unix)]
#[test]
fn a_child_process_does_not_keep_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let lock = LockFile::lock(&path).unwrap();
    let mut child = Command::new("sleep").arg("30").spawn().unwrap();
    lock.release();
    let relocked = LockFile::lock(&path);
    child.kill().unwrap();
    child.wait().unwrap();
    relocked.unwrap();
}

// The defects of zc.lockfile 4.0, fixed.

#[test]
fn a_bad_template_leaves_no_file_and_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    for bad in ["{foo}", "{pid", "pid}", "{pid:>8}"] {
        let error = LockOptions::new()
            .content_template(bad)
            .lock(&path)
            .unwrap_err();
        assert!(
            matches!(error, Error::InvalidTemplate(_)),
            "{bad}: {error:?}"
        );
        assert!(!path.exists(), "{bad} created the file");
    }
    let error = LockOptions::new()
        .content_template("{foo}")
        .lock(&path)
        .unwrap_err();
    assert!(
        matches!(error, Error::InvalidTemplate(TemplateError::UnknownField { ref field, .. }) if field == "foo")
    );
    // Nothing is locked either.
    fs::write(&path, "").unwrap();
    assert!(
        LockOptions::new()
            .content_template("{nope}")
            .lock(&path)
            .is_err()
    );
    LockFile::lock(&path).unwrap();
}

#[test]
fn older_longer_content_ends_as_exactly_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    fs::write(&path, " 1234567890;a-much-longer-previous-holder\n 111\n").unwrap();
    let _lock = LockFile::lock(&path).unwrap();
    assert_eq!(held_record(&path), format!(" {}\n", pid()).into_bytes());
}

// Waiting, as yg.lockfile does.

#[test]
fn a_wait_times_out_with_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let _held = LockFile::lock(&path).unwrap();
    let wait = Duration::from_millis(50);
    let start = Instant::now();
    let error = LockOptions::new().wait(wait).lock(&path).unwrap_err();
    assert!(start.elapsed() >= wait);
    match &error {
        Error::TimedOut { holder, waited, .. } => {
            assert_eq!(holder.as_deref(), Some(pid().as_str()));
            assert_eq!(*waited, wait);
        }
        other => panic!("{other:?}"),
    }
    assert!(error.to_string().starts_with("Couldn't lock '"), "{error}");
}

#[test]
fn a_waiter_gets_the_lock_when_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let held = LockFile::lock(&path).unwrap();
    std::thread::scope(|scope| {
        let waiter = scope.spawn(|| {
            LockOptions::new()
                .content_template("waiter")
                .wait(Duration::from_secs(30))
                .lock(&path)
        });
        std::thread::sleep(Duration::from_millis(20));
        held.release();
        let lock = waiter.join().unwrap().unwrap();
        assert_eq!(lock.content(), Some("waiter"));
    });
    assert_eq!(fs::read_to_string(&path).unwrap(), " waiter\n");
}

// Operating-system errors name the path and leave nothing locked.

fn assert_io_error(path: &Path, operation: &str) {
    let error = LockFile::lock(path).unwrap_err();
    match &error {
        Error::Io {
            operation: op,
            path: p,
            ..
        } => {
            assert_eq!(*op, operation);
            assert_eq!(p, path);
        }
        other => panic!("{path:?}: {other:?}"),
    }
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_missing_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_io_error(&dir.path().join("missing/lock"), "open");
    assert!(!dir.path().join("missing").exists());
}

#[test]
fn a_directory_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_io_error(dir.path(), "open");
}

// Linux: /sys and /dev/full are what make these errors here.
#[cfg(target_os = "linux")]
#[test]
fn a_read_only_file_is_an_io_error() {
    // Tests run as root here, which bypasses file modes; sysfs refuses to open
    // this read-only file for writing even to root (EACCES).
    let path = Path::new("/sys/kernel/notes");
    assert_io_error(path, "open");
    let error = LockFile::lock(path).unwrap_err();
    let source = std::error::Error::source(&error).unwrap();
    assert!(source.to_string().contains("Permission denied"), "{source}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_releases_the_half_made_lock() {
    // Writes to /dev/full fail with ENOSPC, exactly as on a full disk.
    let path = Path::new("/dev/full");
    assert_io_error(path, "write the holder into");
    // Not Locked: the failed attempt released what it took.
    assert_io_error(path, "write the holder into");
}

#[test]
fn reading_content_takes_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    fs::write(&path, " 42;box\n").unwrap();
    assert_eq!(read_content(&path).unwrap().as_deref(), Some("42;box"));
    let lock = LockFile::lock(&path).unwrap();
    assert_eq!(read_content(&path).unwrap(), Some(pid()));
    drop(lock);
    assert!(matches!(
        read_content(dir.path().join("absent")),
        Err(Error::Io { .. })
    ));
}
