//! Input that must be refused whole, and files that are not lock files: one
//! clear error each, nothing created or held, nothing blocks.

#[cfg(unix)]
use std::time::Duration;

use lockfile_core::{Error, LockFile, LockOptions, MAX_RECORD, TemplateError, read_content};

#[test]
fn a_record_over_the_cap_is_refused_before_the_file_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.lock");
    // The template itself over the cap: refused before rendering.
    let huge = "x".repeat(50_000_000);
    let error = LockOptions::new()
        .content_template(huge)
        .lock(&path)
        .unwrap_err();
    let Error::InvalidTemplate(TemplateError::TooLong { len, .. }) = &error else {
        panic!("{error}")
    };
    assert_eq!(*len, 50_000_000);
    let message = error.to_string();
    assert!(message.len() < 300, "the message quotes only the start");
    assert!(
        message.contains("at most 1024") || message.contains("the most is 1024"),
        "{message}"
    );
    assert!(!path.exists(), "nothing was created");

    // A short template whose field renders past the cap.
    let error = LockOptions::new()
        .content_template("{plugin}")
        .field("plugin", "p".repeat(MAX_RECORD))
        .lock(&path)
        .unwrap_err();
    assert!(
        matches!(error, Error::InvalidTemplate(TemplateError::TooLong { len, .. }) if len == MAX_RECORD + 2),
        "{error}"
    );
    assert!(!path.exists());

    // Exactly at the cap is fine: space + 1022 bytes + newline.
    let lock = LockOptions::new()
        .content_template("x".repeat(MAX_RECORD - 2))
        .lock(&path)
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap().len(), MAX_RECORD);
    assert_eq!(read_content(&path).unwrap().unwrap().len(), MAX_RECORD - 2);
    drop(lock);
}

#[test]
fn a_record_of_more_than_one_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lines.lock");
    for (template, plugin) in [("a\nb", ""), ("{plugin}", "x\ny"), ("a\rb", "")] {
        let error = LockOptions::new()
            .content_template(template)
            .field("plugin", plugin)
            .lock(&path)
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::InvalidTemplate(TemplateError::MultiLine { .. })
            ),
            "{template:?}: {error}"
        );
        assert!(!path.exists());
    }
}

/// Runs `f` on a thread and fails if it has not returned within 10 s: a lock
/// file replaced by a FIFO must never make a reader or taker block.
#[cfg(unix)]
fn within_10s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(f()).unwrap());
    result
        .recv_timeout(Duration::from_secs(10))
        .expect("blocked on a FIFO")
}

// FIFOs and /dev/null are Unix's: Windows has neither in its file system.
#[cfg(unix)]
#[test]
fn a_fifo_in_place_of_a_lock_file_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifo.lock");
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);

    let read_path = path.clone();
    let error = within_10s(move || read_content(&read_path)).unwrap_err();
    assert!(
        error.to_string().contains("not a regular file but a FIFO"),
        "{error}"
    );
    let lock_path = path.clone();
    let error = within_10s(move || LockFile::lock(&lock_path)).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(
        error.to_string().contains("not a regular file but a FIFO"),
        "{error}"
    );
    // Without a record to write, nothing else would refuse it.
    let lock_path = path.clone();
    let error = within_10s(move || LockOptions::new().no_content().lock(&lock_path)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "couldn't lock '{}': not a regular file but a FIFO: lock files must be plain files",
            path.display()
        )
    );
}

#[cfg(unix)]
#[test]
fn a_device_is_no_lock_file_either() {
    let error = LockOptions::new()
        .no_content()
        .lock("/dev/null")
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not a regular file but a device"),
        "{error}"
    );
    let error = read_content("/dev/null").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("not a regular file but a device"),
        "{error}"
    );
}

#[test]
fn a_directory_in_place_of_a_lock_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dir.lock");
    std::fs::create_dir(&path).unwrap();
    let error = LockFile::lock(&path).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(error.to_string().contains("dir.lock"), "{error}");
}
