//! Interop with the real zc.lockfile from PyPI: the same lock, the same bytes.
//!
//! Unix only: it runs zc.lockfile in the CPython of this machine (a virtualenv
//! under target/); the Windows tests run under Wine, which has no Windows
//! Python. On Windows both lock byte 0 (msvcrt.locking there, LockFileEx
//! here) and read the record from byte 1.
#![cfg(unix)]

#[path = "../../../tests/support/zc_python.rs"]
mod zc_python;

use std::fs;

use lockfile_core::{Error, LockFile, LockOptions};
use zc_python::{ZcHolder, python_output, zc_try_lock};

#[test]
fn zc_lockfile_fails_while_we_hold() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let lock = LockFile::lock(&path).unwrap();
    let message = zc_try_lock(&path).unwrap_err();
    assert_eq!(message, format!("Couldn't lock '{}'", path.display()));
    lock.release();
    zc_try_lock(&path).expect("free after release");
}

#[test]
fn we_fail_with_zc_lockfiles_pid_while_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let holder = ZcHolder::lock(&path, "{pid}");
    let error = LockFile::lock(&path).unwrap_err();
    assert!(
        matches!(&error, Error::Locked { holder: Some(h), .. } if *h == holder.pid.to_string()),
        "{error:?}"
    );
    holder.release();
    LockFile::lock(&path).unwrap();
}

#[test]
fn both_write_the_same_bytes_for_the_same_template() {
    let dir = tempfile::tempdir().unwrap();
    for template in [
        "{pid}",
        "{pid};{hostname}",
        "{hostname}",
        "",
        "x{{y}}z {pid}",
        "é {pid}",
    ] {
        let theirs_path = dir.path().join("theirs");
        let holder = ZcHolder::lock(&theirs_path, template);
        let theirs = fs::read(&theirs_path).unwrap();
        let pid = holder.pid;
        holder.release();

        let ours_path = dir.path().join("ours");
        let _lock = LockOptions::new()
            .content_template(template)
            .lock(&ours_path)
            .unwrap();
        let ours = fs::read(&ours_path).unwrap();
        let ours = String::from_utf8(ours)
            .unwrap()
            .replace(&std::process::id().to_string(), &pid.to_string());
        assert_eq!(ours.into_bytes(), theirs, "template {template:?}");
    }
}

#[test]
fn zc_lockfile_reads_our_pid_from_offset_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lock");
    let _lock = LockFile::lock(&path).unwrap();
    let read = python_output(
        "f = open(sys.argv[1]); f.seek(1); print(f.read().strip())",
        &[path.to_str().unwrap()],
    );
    assert_eq!(read.trim(), std::process::id().to_string());
}
