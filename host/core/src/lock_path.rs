//! The rules for lock paths given by someone the host does not trust (a
//! plugin): relative, beneath the lock directory, bounded in length.
//!
//! These are checked on the text alone, before the file system is touched, so
//! a refused path never creates or opens anything and every backend (a lock
//! directory, a lock server's namespace) applies the same rules. A lock
//! directory additionally resolves accepted paths with cap-std, which stops
//! symbolic links that lead outside.

/// The longest lock path accepted, in bytes: enough for any sensible name, and
/// a bound on what one plugin call can make the host store or log.
pub const MAX_LOCK_PATH: usize = 512;

/// The longest single component (file or directory name), in bytes: the
/// common `NAME_MAX` of Unix file systems.
pub const MAX_LOCK_PATH_COMPONENT: usize = 255;

/// Checks the namespace of a lock server's names (a PostgreSQL namespace,
/// an etcd key prefix): any text but empty, with a NUL, or longer than a
/// path component. `Err` says what is wrong.
pub fn check_namespace(namespace: &str) -> Result<(), &'static str> {
    if namespace.is_empty() {
        Err("it is empty")
    } else if namespace.len() > MAX_LOCK_PATH_COMPONENT {
        Err("it is longer than 255 bytes")
    } else if namespace.contains('\0') {
        Err("it holds a NUL byte")
    } else {
        Ok(())
    }
}

/// Why a lock path was refused. The message names the path (or its start,
/// when it is long) and says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockPathError {
    /// The path is empty.
    #[error("empty lock path: name a file in the lock directory, e.g. 'job.lock'")]
    Empty,
    /// The path contains a NUL character.
    #[error("lock path {0:?} contains NUL")]
    Nul(String),
    /// The path is absolute.
    #[error(
        "'{path}' is absolute: lock paths are relative to the lock directory (try '{suggestion}')"
    )]
    Absolute {
        /// The path.
        path: String,
        /// The same path made relative.
        suggestion: String,
    },
    /// A `..` climbs out of the lock directory.
    #[error("'{0}' leads outside the lock directory: its '..' climbs above it")]
    Escapes(String),
    /// The path resolves to the lock directory itself (`.`, `a/..`), which
    /// is no lock ([`LockName`]).
    #[error("'{0}' names the lock directory itself: name a file in it, e.g. 'job.lock'")]
    Directory(String),
    /// The path, or one of its components, is too long.
    #[error(
        "lock path '{start}...' is too long: {len} bytes (at most {MAX_LOCK_PATH}, and {MAX_LOCK_PATH_COMPONENT} per name)"
    )]
    TooLong {
        /// The path's first bytes.
        start: String,
        /// Its length in bytes.
        len: usize,
    },
}

/// Checks `path` against the rules, on its text alone.
///
/// Accepted paths are relative, at most [`MAX_LOCK_PATH`] bytes, free of NUL,
/// and never climb above their starting directory through `..`, however
/// they are resolved afterwards (`a/../b` is accepted, `a/../../b` is not).
/// On a Windows host, whose file system reads them so, `\` separates
/// components too and a leading `C:` (a drive) makes a path absolute.
///
/// ```
/// use lockfile_core::{LockPathError, check_lock_path};
///
/// assert!(check_lock_path("jobs/nightly.lock").is_ok());
/// assert!(matches!(check_lock_path("a/../../x.lock"), Err(LockPathError::Escapes(_))));
/// assert!(matches!(check_lock_path("/locks/x.lock"), Err(LockPathError::Absolute { .. })));
/// ```
pub fn check_lock_path(path: &str) -> Result<(), LockPathError> {
    if path.is_empty() {
        return Err(LockPathError::Empty);
    }
    if path.len() > MAX_LOCK_PATH
        || path
            .split(SEPARATORS)
            .any(|component| component.len() > MAX_LOCK_PATH_COMPONENT)
    {
        let end = (0..=32).rev().find(|&i| path.is_char_boundary(i));
        return Err(LockPathError::TooLong {
            start: path[..end.unwrap_or(0)].to_owned(),
            len: path.len(),
        });
    }
    if path.contains('\0') {
        return Err(LockPathError::Nul(path.to_owned()));
    }
    if path.starts_with(SEPARATORS) || has_drive(path) {
        return Err(LockPathError::Absolute {
            path: path.to_owned(),
            suggestion: relative_suggestion(path),
        });
    }
    let mut depth = 0usize;
    for component in path.split(SEPARATORS) {
        match component {
            "" | "." => {}
            ".." => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| LockPathError::Escapes(path.to_owned()))?;
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

/// A lock's name: a path under the lock path rules ([`check_lock_path`])
/// that names something beneath the lock directory, not the directory
/// itself. Every backend and lockfile-host's sandbox take names through it,
/// so the rules are written once: lock files resolve [`as_str`](Self::as_str)
/// beneath their directory, a database keys its locks by
/// [`canonical`](Self::canonical).
///
/// ```
/// use lockfile_core::{LockName, LockPathError};
///
/// let name = LockName::new("./jobs//b/../nightly.lock")?;
/// assert_eq!(name.as_str(), "./jobs//b/../nightly.lock");
/// assert_eq!(name.canonical(), "jobs/nightly.lock");
/// assert!(matches!(LockName::new("a/.."), Err(LockPathError::Directory(_))));
/// # Ok::<_, LockPathError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockName<'a> {
    text: &'a str,
}

impl<'a> LockName<'a> {
    /// Checks `text` against the rules, on its text alone.
    pub fn new(text: &'a str) -> Result<Self, LockPathError> {
        check_lock_path(text)?;
        let depth = text
            .split(SEPARATORS)
            .fold(0usize, |depth, component| match component {
                "" | "." => depth,
                // check_lock_path refuses a `..` that climbs out.
                ".." => depth - 1,
                _ => depth + 1,
            });
        if depth == 0 {
            return Err(LockPathError::Directory(text.to_owned()));
        }
        Ok(Self { text })
    }

    /// The name as it was given.
    pub fn as_str(&self) -> &'a str {
        self.text
    }

    /// The name with `.`, empty components and `..` resolved on the text, so
    /// `./job.lock`, `a//job.lock` and `b/../a/job.lock` give the names that
    /// `job.lock` and `a/job.lock` give, as they name the same file in a lock
    /// directory. Only `/` separates here, on every system, so that machines
    /// sharing a lock server share names.
    pub fn canonical(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        for part in self.text.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                part => parts.push(part),
            }
        }
        parts.join("/")
    }
}

impl std::fmt::Display for LockName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.text)
    }
}

/// What separates components: `/`, as in WASI; on a Windows host also `\`,
/// which its file system (and cap-std there) reads as a separator too, so
/// `..\..\x` is refused on the text as `../../x` is.
#[cfg(not(windows))]
const SEPARATORS: &[char] = &['/'];
#[cfg(windows)]
const SEPARATORS: &[char] = &['/', '\\'];

/// A Windows drive, `C:`, which makes `C:x` mean a path outside the
/// directory; only on a Windows host, where `C:` means that.
fn has_drive(path: &str) -> bool {
    cfg!(windows) && matches!(path.as_bytes(), [letter, b':', ..] if letter.is_ascii_alphabetic())
}

/// `/locks/a.lock` -> `a.lock`: plugins see their lock directory at `/locks`,
/// and that prefix is the usual mistake.
fn relative_suggestion(path: &str) -> String {
    let relative = if has_drive(path) { &path[2..] } else { path };
    let relative = relative.trim_start_matches(SEPARATORS);
    let relative = relative
        .strip_prefix("locks/")
        .or_else(|| relative.strip_prefix("locks\\").filter(|_| cfg!(windows)))
        .unwrap_or(relative);
    if relative.is_empty() {
        "job.lock".to_owned()
    } else {
        relative.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_relative_paths_beneath_the_directory() {
        for ok in [
            "a.lock",
            "a/b.lock",
            "./a.lock",
            "a/../b.lock",
            "a//b",
            "a/./b/..",
        ] {
            assert_eq!(check_lock_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_paths_that_climb_out_lexically() {
        for bad in ["..", "../a", "a/../../x.lock", "./../a", "a/b/../../../c"] {
            assert_eq!(
                check_lock_path(bad),
                Err(LockPathError::Escapes(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn absolute_paths_get_a_relative_suggestion() {
        let error = check_lock_path("/locks/my.lock").unwrap_err();
        assert_eq!(
            error.to_string(),
            "'/locks/my.lock' is absolute: lock paths are relative to the lock directory (try 'my.lock')"
        );
        assert!(matches!(
            check_lock_path("/etc/passwd"),
            Err(LockPathError::Absolute { suggestion, .. }) if suggestion == "etc/passwd"
        ));
    }

    #[cfg(windows)]
    #[test]
    fn backslashes_and_drives_are_read_as_windows_reads_them() {
        for bad in ["..\\a", "a\\..\\..\\x.lock", "a/..\\.."] {
            assert_eq!(
                check_lock_path(bad),
                Err(LockPathError::Escapes(bad.into())),
                "{bad}"
            );
        }
        for (bad, suggestion) in [
            ("\\", "job.lock"),
            ("\\locks\\a.lock", "a.lock"),
            ("C:x.lock", "x.lock"),
            ("c:\\x.lock", "x.lock"),
        ] {
            assert_eq!(
                check_lock_path(bad),
                Err(LockPathError::Absolute {
                    path: bad.into(),
                    suggestion: suggestion.into()
                }),
                "{bad}"
            );
        }
        assert_eq!(check_lock_path("a\\b.lock"), Ok(()));
    }

    #[test]
    fn bounds_the_length() {
        assert!(check_lock_path(&"a".repeat(MAX_LOCK_PATH_COMPONENT)).is_ok());
        let long_name = "a".repeat(MAX_LOCK_PATH_COMPONENT + 1);
        assert!(matches!(
            check_lock_path(&long_name),
            Err(LockPathError::TooLong { len: 256, .. })
        ));
        let deep = "abc/".repeat(MAX_LOCK_PATH / 4) + "x";
        let message = check_lock_path(&deep).unwrap_err().to_string();
        assert!(message.contains("is too long: 513 bytes"), "{message}");
        assert!(message.len() < 200, "the message quotes only the start");
        assert_eq!(check_lock_path(""), Err(LockPathError::Empty));
        assert_eq!(
            check_lock_path("a\0b"),
            Err(LockPathError::Nul("a\0b".into()))
        );
    }
}
