//! The rules shared with lock files: lock names are lock paths, records are
//! one short line.

#[cfg(test)]
use lockfile_core::MAX_RECORD;
use lockfile_core::{LockName, LockPathError, TemplateError};

use crate::Error;

/// Checks `name` against the lock path rules and returns the name of its
/// lock ([`LockName::canonical`]): `./job.lock`, `a//job.lock` and
/// `b/../a/job.lock` name the lock that `job.lock` and `a/job.lock` name, as
/// they name the same file in a lock directory.
pub(crate) fn lock_name(name: &str) -> Result<String, LockPathError> {
    Ok(LockName::new(name)?.canonical())
}

/// Checks a holder's content (the record without zc.lockfile's leading space
/// and newline) against the record rules of lock files
/// ([`TemplateError::check_content`]), and refuses a NUL, which a lock file
/// holds but PostgreSQL text cannot.
pub(crate) fn check_content(name: &str, content: &str) -> Result<(), Error> {
    TemplateError::check_content(content, content).map_err(lockfile_core::Error::from)?;
    if content.contains('\0') {
        // A file holds a NUL, PostgreSQL text cannot.
        return Err(Error::io(
            "record the holder of",
            name,
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the record holds a NUL byte, which a PostgreSQL text column cannot store",
            ),
        ));
    }
    Ok(())
}

/// Checks a namespace ([`lockfile_core::check_namespace`]).
pub(crate) fn check_namespace(namespace: &str) -> Result<(), Error> {
    lockfile_core::check_namespace(namespace).map_err(|reason| Error::InvalidNamespace {
        namespace: namespace.chars().take(64).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_paths_resolved_on_the_text() {
        for (path, name) in [
            ("job.lock", "job.lock"),
            ("./job.lock", "job.lock"),
            ("a//b.lock", "a/b.lock"),
            ("b/../a/job.lock", "a/job.lock"),
            ("a/./b/", "a/b"),
        ] {
            assert_eq!(lock_name(path).unwrap(), name, "{path}");
        }
        assert!(matches!(
            lock_name("a/.."),
            Err(LockPathError::Directory(_))
        ));
        assert!(matches!(lock_name("../x"), Err(LockPathError::Escapes(_))));
        assert!(matches!(
            lock_name("/locks/x"),
            Err(LockPathError::Absolute { .. })
        ));
    }

    #[test]
    fn records_are_one_short_line() {
        assert!(check_content("n", "123;box").is_ok());
        assert!(check_content("n", &"x".repeat(MAX_RECORD - 2)).is_ok());
        assert!(check_content("n", &"x".repeat(MAX_RECORD - 1)).is_err());
        assert!(check_content("n", "a\nb").is_err());
        assert!(check_content("n", "a\0b").is_err());
    }
}
