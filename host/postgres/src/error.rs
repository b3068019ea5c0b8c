use std::io;

use lockfile_core::LockPathError;

/// Why a lock on the database could not be taken, kept or read.
///
/// The outcomes a lock file has too are [`lockfile_core::Error`]s, worded the
/// same (`Couldn't lock 'job.lock': held by 123;box`), so a caller maps them
/// the same way: [`Locked`](lockfile_core::Error::Locked) and
/// [`TimedOut`](lockfile_core::Error::TimedOut) for contention,
/// [`InvalidTemplate`](lockfile_core::Error::InvalidTemplate) for a record
/// that breaks the record rules, [`Io`](lockfile_core::Error::Io) for a
/// database that cannot be reached or fails (its message names the URL,
/// never its password). What only a database has gets a variant here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An outcome shared with lock files.
    #[error(transparent)]
    Lock(#[from] lockfile_core::Error),
    /// The lock name breaks the lock path rules ([`lockfile_core::check_lock_path`]).
    #[error(transparent)]
    Name(#[from] LockPathError),
    /// The URL cannot be used; nothing was connected.
    #[error("invalid lock database URL{}: {reason}", shown(url))]
    InvalidUrl {
        /// The URL without its password (empty when it could not be told apart).
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
    /// The session holding the lock ended (the server restarted or failed
    /// over, the network dropped, the server stopped answering): the lock is
    /// no longer held, and another process may hold it now.
    #[error("lost the lock on '{name}': {reason}")]
    Lost {
        /// The lock's name.
        name: String,
        /// Why the session ended.
        reason: String,
    },
}

fn shown(url: &str) -> String {
    if url.is_empty() {
        String::new()
    } else {
        format!(" '{url}'")
    }
}

impl Error {
    /// What the holder recorded, for `Locked` and `TimedOut`.
    pub fn holder(&self) -> Option<&str> {
        match self {
            Self::Lock(error) => error.holder(),
            _ => None,
        }
    }

    /// A database failure during `operation` on the lock `name` (or on the
    /// database itself, when `name` is its URL). The tokio-postgres error
    /// stays the cause ([`DbFailure`]), with its SQLSTATE.
    pub(crate) fn db(
        operation: &'static str,
        name: &str,
        url: &str,
        error: tokio_postgres::Error,
    ) -> Self {
        let message = format!("lock database {url}: {}", describe(&error));
        Self::io(operation, name, DbFailure::into_io(message, error))
    }

    pub(crate) fn io(operation: &'static str, name: &str, source: io::Error) -> Self {
        Self::Lock(lockfile_core::Error::Io {
            operation,
            path: name.into(),
            source,
        })
    }
}

/// A database failure, said in one line (the server's message, or what
/// failed and why), that keeps the tokio-postgres error as its
/// [`source`](std::error::Error::source): callers reach its SQLSTATE
/// ([`tokio_postgres::Error::code`]) and its causes by walking the chain.
#[derive(Debug)]
pub struct DbFailure {
    message: String,
    error: tokio_postgres::Error,
}

impl DbFailure {
    /// An [`io::Error`] of the kind `error` maps to, whose inner error says
    /// `message` and keeps `error` as its cause.
    pub(crate) fn into_io(message: String, error: tokio_postgres::Error) -> io::Error {
        io::Error::new(kind(&error), Self { message, error })
    }

    /// The SQLSTATE the server answered with, if it answered.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        self.error.code()
    }
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// One line for a tokio-postgres error: the server's own message for a
/// server error, else what failed and why.
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return db.message().to_owned();
    }
    chain(error)
}

/// An error and its causes on one line, `error: cause: cause`. Some causes
/// repeat their own cause's text (native-tls's OpenSSL errors do): each
/// text is given once.
fn chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

pub(crate) fn kind(error: &tokio_postgres::Error) -> io::ErrorKind {
    if error.is_closed() {
        return io::ErrorKind::ConnectionAborted;
    }
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<io::Error>() {
            return io.kind();
        }
        source = cause.source();
    }
    io::ErrorKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and maybe a cause.
    #[derive(Debug)]
    struct Layer(String, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn layer(text: &str, cause: Option<Layer>) -> Layer {
        Layer(text.to_owned(), cause.map(Box::new))
    }

    #[test]
    fn a_cause_that_repeats_its_own_cause_is_given_once() {
        let ssl = "error:0A000086:SSL routines::certificate verify failed";
        let native = format!("{ssl} (unable to get local issuer certificate)");
        let error = layer(
            "error performing TLS handshake",
            Some(layer(&native, Some(layer(ssl, None)))),
        );
        assert_eq!(
            chain(&error),
            format!("error performing TLS handshake: {native}")
        );
        assert_eq!(chain(&layer("a", Some(layer("b", None)))), "a: b");
    }
}
