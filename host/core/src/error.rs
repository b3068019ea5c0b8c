use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::TemplateError;

/// Why a lock file could not be taken or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Someone else holds the lock; zc.lockfile's `LockError`.
    #[error("Couldn't lock '{}'{}", path.display(), HeldBy(holder))]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into it, if anything.
        holder: Option<String>,
    },
    /// The lock stayed held for the whole wait.
    #[error("Couldn't lock '{}' within {waited:?}{}", path.display(), HeldBy(holder))]
    TimedOut {
        /// The lock file.
        path: PathBuf,
        /// What the holder wrote into it when the wait ended, if anything.
        holder: Option<String>,
        /// How long the caller waited.
        waited: Duration,
    },
    /// A lock that can be lost (a database session's) was lost while held:
    /// another process may hold it now. Lock files are never lost.
    #[error("lost the lock on '{}': {reason}", path.display())]
    Lost {
        /// The lock's name.
        path: PathBuf,
        /// Why: the session ended, the server restarted, the network dropped.
        reason: String,
    },
    /// The content template is malformed; nothing was opened or created.
    #[error(transparent)]
    InvalidTemplate(#[from] TemplateError),
    /// The operating system refused: a missing directory, a directory in place
    /// of a file, no permission, a full disk. No lock is held afterwards.
    #[error("couldn't {operation} '{}': {source}", path.display())]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The lock file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// What the holder wrote, for [`Error::Locked`] and [`Error::TimedOut`].
    pub fn holder(&self) -> Option<&str> {
        match self {
            Self::Locked { holder, .. } | Self::TimedOut { holder, .. } => holder.as_deref(),
            _ => None,
        }
    }

    /// Logs this failure at ERROR as exclusive_control does, if it is
    /// contention: `Error locking file <path>; pid=<holder>` (`UNKNOWN`
    /// without a record). Every failure log line is this one.
    pub fn log_failure(&self) {
        if let Self::Locked { path, holder } | Self::TimedOut { path, holder, .. } = self {
            log::error!(
                target: "lockfile",
                "Error locking file {}; pid={}",
                path.display(),
                holder.as_deref().unwrap_or("UNKNOWN")
            );
        }
    }

    pub(crate) fn io(operation: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

struct HeldBy<'a>(&'a Option<String>);

impl fmt::Display for HeldBy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(holder) => write!(f, ": held by {holder}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_zc_lockfile() {
        let locked = Error::Locked {
            path: "var/job.lock".into(),
            holder: Some("123;box".into()),
        };
        assert_eq!(
            locked.to_string(),
            "Couldn't lock 'var/job.lock': held by 123;box"
        );
        let anonymous = Error::Locked {
            path: "job.lock".into(),
            holder: None,
        };
        assert_eq!(anonymous.to_string(), "Couldn't lock 'job.lock'");
        let timed_out = Error::TimedOut {
            path: "job.lock".into(),
            holder: Some("7".into()),
            waited: Duration::from_millis(1500),
        };
        assert_eq!(
            timed_out.to_string(),
            "Couldn't lock 'job.lock' within 1.5s: held by 7"
        );
    }
}
