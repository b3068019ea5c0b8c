//! What a lock path may be: a link in the lock file's place, made by someone
//! who can write the directory, never gets the file it points at written,
//! truncated or read; directories along the path may be links.

use std::fs;
use std::path::Path;

use lockfile_core::{Error, LockFile, LockOptions, read_content};

const PRECIOUS: &[u8] = b"another file's first line\nand the rest of it\n";

/// Asserts that `error` is an I/O error naming `path` that says `what`.
fn assert_refused(error: Error, path: &Path, what: &str) {
    let message = error.to_string();
    assert!(
        matches!(error, Error::Io { .. }),
        "not an I/O error: {message}"
    );
    assert!(
        message.starts_with(&format!("couldn't open '{}': ", path.display())),
        "{message}"
    );
    assert!(message.contains(what), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

#[cfg(unix)]
#[test]
fn a_symbolic_link_in_place_of_the_lock_file_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    fs::write(&target, PRECIOUS).unwrap();
    let path = dir.path().join("job.lock");
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let refused = LockFile::lock(&path).unwrap_err();
    assert_refused(refused, &path, "is a symbolic link");
    let refused = LockOptions::new().no_content().lock(&path).unwrap_err();
    assert_refused(refused, &path, "is a symbolic link");
    let refused = read_content(&path).unwrap_err();
    assert_refused(refused, &path, "is a symbolic link");

    assert_eq!(fs::read(&target).unwrap(), PRECIOUS);
    assert!(fs::symlink_metadata(&path).unwrap().is_symlink());
}

#[cfg(unix)]
#[test]
fn a_dangling_symbolic_link_creates_nothing_where_it_points() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("made-by-the-lock");
    let path = dir.path().join("job.lock");
    std::os::unix::fs::symlink(&target, &path).unwrap();

    let refused = LockFile::lock(&path).unwrap_err();
    assert_refused(refused, &path, "give the real file's path");
    assert!(!target.exists(), "the link's target was created");
}

#[test]
fn a_lock_file_with_another_hard_link_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("precious");
    fs::write(&target, PRECIOUS).unwrap();
    let path = dir.path().join("job.lock");
    fs::hard_link(&target, &path).unwrap();

    let refused = LockFile::lock(&path).unwrap_err();
    assert_refused(refused, &path, "it has 2 hard links");
    let refused = LockOptions::new().no_content().lock(&path).unwrap_err();
    assert_refused(refused, &path, "2 hard links");
    let refused = read_content(&path).unwrap_err();
    assert_refused(refused, &path, "2 hard links");
    assert_eq!(fs::read(&target).unwrap(), PRECIOUS);

    // Once the other name is gone, it is an ordinary lock file again.
    fs::remove_file(&target).unwrap();
    let lock = LockFile::lock(&path).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        format!(" {}\n", std::process::id()).into_bytes()
    );
    drop(lock);
}

#[cfg(unix)]
#[test]
fn directories_along_the_path_may_be_symbolic_links() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("real")).unwrap();
    let linked = dir.path().join("var-lock");
    std::os::unix::fs::symlink(dir.path().join("real"), &linked).unwrap();

    let lock = LockFile::lock(linked.join("job.lock")).unwrap();
    assert_eq!(
        read_content(dir.path().join("real/job.lock")).unwrap(),
        Some(std::process::id().to_string())
    );
    drop(lock);
}
