use std::io;

use lockfile_core::LockPathError;

/// Why a lock on etcd could not be taken, kept or read.
///
/// The outcomes a lock file has too are [`lockfile_core::Error`]s, worded the
/// same (`Couldn't lock 'job.lock': held by 123;box`): [`Locked`](lockfile_core::Error::Locked)
/// and [`TimedOut`](lockfile_core::Error::TimedOut) for contention,
/// [`InvalidTemplate`](lockfile_core::Error::InvalidTemplate) for a record
/// that breaks the record rules, [`Io`](lockfile_core::Error::Io) for a
/// cluster that cannot be reached or fails (its message names the URL, never
/// its password, and its source is an [`EtcdFailure`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An outcome shared with lock files.
    #[error(transparent)]
    Lock(#[from] lockfile_core::Error),
    /// The lock name breaks the lock path rules.
    #[error(transparent)]
    Name(#[from] LockPathError),
    /// The URL cannot be used; nothing was connected.
    #[error("invalid etcd URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL without its password.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The namespace is empty, too long, or holds a NUL.
    #[error("invalid lock namespace {namespace:?}: {reason}")]
    InvalidNamespace {
        /// The namespace as given.
        namespace: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The settings given to the builder do not fit together; nothing was
    /// connected.
    #[error("invalid lock database settings: {reason}")]
    InvalidSettings {
        /// Which settings, and why.
        reason: String,
    },
    /// The lease that kept the lock was lost (not renewed in time, or ended
    /// on the server), or its key was deleted: another process may hold the
    /// lock now.
    #[error("lost the lock on '{name}': {reason}")]
    Lost {
        /// The lock's name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// What the holder recorded, for `Locked` and `TimedOut`.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Self::Lock(error) => error.holder(),
            _ => None,
        }
    }

    /// A cluster failure during `operation` on the lock `name` (or on the
    /// cluster itself, when `name` is its URL); the etcd-client error stays
    /// the cause.
    pub(crate) fn etcd(
        operation: &'static str,
        name: &str,
        url: &str,
        error: etcd_client::Error,
    ) -> Self {
        let kind = kind(&error);
        let failure = EtcdFailure {
            message: about(name, url, &describe(&error)),
            error,
        };
        Self::io(operation, name, io::Error::new(kind, failure))
    }

    /// No answer within `limit`.
    pub(crate) fn no_answer(
        operation: &'static str,
        name: &str,
        url: &str,
        limit: std::time::Duration,
    ) -> Self {
        Self::io(
            operation,
            name,
            io::Error::new(
                io::ErrorKind::TimedOut,
                about(name, url, &format!("no answer within {limit:?}")),
            ),
        )
    }

    pub(crate) fn io(operation: &'static str, name: &str, source: io::Error) -> Self {
        Self::Lock(lockfile_core::Error::Io {
            operation,
            path: name.into(),
            source,
        })
    }

    /// This error as a lock file's: the outcomes they share as they are, a
    /// lost lock as [`lockfile_core::Error::Lost`], the rest as
    /// [`lockfile_core::Error::Io`] on `name`.
    pub fn into_core(self, name: &str) -> lockfile_core::Error {
        let (kind, message) = match self {
            Error::Lock(error) => return error,
            Error::Lost { name, reason } => {
                return lockfile_core::Error::Lost {
                    path: name.into(),
                    reason,
                };
            }
            Error::Name(error) => (io::ErrorKind::InvalidInput, error.to_string()),
            error => (io::ErrorKind::Other, error.to_string()),
        };
        lockfile_core::Error::Io {
            operation: "lock",
            path: name.into(),
            source: io::Error::new(kind, message),
        }
    }
}

/// `reason`, naming the cluster unless the message names it already (`name`
/// is its URL).
fn about(name: &str, url: &str, reason: &str) -> String {
    if name == url {
        reason.to_owned()
    } else {
        format!("etcd {url}: {reason}")
    }
}

/// A failure of the etcd cluster, said in one line, that keeps the
/// etcd-client error (and its gRPC status) as its
/// [`source`](std::error::Error::source).
#[derive(Debug)]
pub struct EtcdFailure {
    message: String,
    error: etcd_client::Error,
}

impl EtcdFailure {
    /// The etcd-client error: its gRPC status, if the cluster answered.
    pub fn error(&self) -> &etcd_client::Error {
        &self.error
    }
}

impl std::fmt::Display for EtcdFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EtcdFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// One line for an etcd-client error: a gRPC status's message (the server's
/// own, or the transport's reason), else the error and its causes.
pub(crate) fn describe(error: &etcd_client::Error) -> String {
    let line = chain(error);
    if line.contains("invalid peer certificate") {
        // rustls's reason alone does not say what to do.
        return format!(
            "TLS refused the server's certificate ({}): it must be signed by a root in cacert=PATH (else one of the system's) and be issued for the host in the URL",
            line.trim_end_matches(": transport error")
        );
    }
    line
}

fn chain(error: &etcd_client::Error) -> String {
    if let etcd_client::Error::GRpcStatus(status) = error {
        let mut line = status.message().to_owned();
        let mut source = std::error::Error::source(status);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        return line;
    }
    error.to_string()
}

fn kind(error: &etcd_client::Error) -> io::ErrorKind {
    use tonic::Code;
    match error {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable => io::ErrorKind::ConnectionRefused,
            Code::DeadlineExceeded => io::ErrorKind::TimedOut,
            Code::Unauthenticated | Code::PermissionDenied => io::ErrorKind::PermissionDenied,
            _ => io::ErrorKind::Other,
        },
        etcd_client::Error::IoError(error) => error.kind(),
        _ => io::ErrorKind::Other,
    }
}
