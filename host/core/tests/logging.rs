//! Failure logging: off by default (zc.lockfile since 1.3), exclusive_control's
//! ERROR record when switched on.

use std::sync::Mutex;

use lockfile_core::{LockFile, LockOptions};

static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        RECORDS
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

#[test]
fn failures_are_logged_only_when_asked() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let _held = LockFile::lock(&path).unwrap();

    assert!(LockFile::lock(&path).is_err());
    assert!(RECORDS.lock().unwrap().is_empty(), "logged by default");

    assert!(LockOptions::new().log_failures(true).lock(&path).is_err());
    let records = RECORDS.lock().unwrap();
    assert_eq!(
        *records,
        [format!(
            "ERROR Error locking file {}; pid={}",
            path.display(),
            std::process::id()
        )]
    );
}
