//! zc.lockfile's lock files for WebAssembly plugins.
//!
//! The host (see the `lockfile-host` crate, or `lockfile run`) takes a real OS
//! lock on a file in the plugin's lock directory and writes the holder's
//! record into it, exactly as Python's zc.lockfile does, so plugins, native
//! processes and Python programs exclude each other on the same files.
//!
//! ```no_run
//! use lockfile_guest::{LockFile, LockOptions};
//! use std::time::Duration;
//!
//! // zc.lockfile's default: one try, " <pid>\n" written into the file.
//! let lock = LockFile::lock("job.lock")?;
//!
//! // Or wait up to 3 s, and say which plugin on which host holds it.
//! let other = LockOptions::new()
//!     .content_template("{plugin}@{hostname}")
//!     .wait(Duration::from_secs(3))
//!     .lock("other.lock")?;
//! println!("holding {} as {:?}", other.path(), other.content());
//! drop(other); // released
//! lock.release();
//! # Ok::<_, lockfile_guest::Error>(())
//! ```
//!
//! Build plugins with `cargo build --target wasm32-wasip2`: a crate with
//! `fn main` is a wasi:cli command component. It imports
//! `lockfile:lockfile@0.2.0` (`wit/lockfile.wit`), which `lockfile run` and
//! lockfile-host serve beside 0.1.0.
//!
//! A plugin ends with any exit status through [`exit`]: `lockfile run` exits
//! with it, so a job can say 75 (EX_TEMPFAIL, "held, try later") rather than
//! the 1 that `std::process::exit` reports for every failure under wasi:cli.
//! [`command`] does that for a `main` whose lock is held: it prints who holds
//! it, on one line, and exits 75.

#![deny(missing_docs)]

use std::io::Write as _;
use std::time::Duration;

mod bindings {
    // The interface, and wasi:cli's `exit-with-code` for `exit`, which the
    // standard library does not use (it reports only success or failure).
    wit_bindgen::generate!({
        inline: "
            package lockfile-guest:bindings;

            world guest {
                import lockfile:lockfile/lockfile@0.2.0;
                import wasi:cli/exit@0.2.12;
            }
        ",
        path: "wit",
        generate_all,
    });
}

use bindings::lockfile::lockfile::lockfile as wit;

/// An exclusive lock on a file in the plugin's lock directory. Dropping it
/// releases the lock; so does the end of the plugin, even by a trap.
#[derive(Debug)]
pub struct LockFile {
    handle: wit::Lock,
}

impl LockFile {
    /// Takes the lock on `path` (relative to the lock directory) with
    /// zc.lockfile's defaults: one try, `" {pid}\n"` written into the file.
    pub fn lock(path: &str) -> Result<Self, Error> {
        LockOptions::new().lock(path)
    }

    /// What this holder wrote, without the leading space and the newline.
    pub fn content(&self) -> Option<String> {
        self.handle.content()
    }

    /// The path the lock was taken with.
    pub fn path(&self) -> String {
        self.handle.path()
    }

    /// Whether the lock is still held, as far as the host knows. A lock file
    /// stays held until released; a lock the host keeps in a database
    /// (`lockfile --lock-db`) can be lost while held (the server restarts,
    /// the network drops), and the host notices within seconds, not at once:
    /// check this before starting work, and guard what the lock protects with
    /// the [`fencing_token`](Self::fencing_token).
    pub fn held(&self) -> bool {
        self.handle.held()
    }

    /// This acquisition's fencing token: larger than every token issued
    /// before for the same lock. Pass it to what the lock protects and have
    /// that refuse tokens lower than the highest it has seen. `None` for lock
    /// files, which issue none; locks in a database do.
    pub fn fencing_token(&self) -> Option<u64> {
        self.handle.fencing_token()
    }

    /// Unlocks now; dropping the value does the same.
    pub fn release(self) {
        self.handle.release();
    }
}

/// How to take a lock.
#[derive(Debug, Clone)]
pub struct LockOptions {
    content_template: Option<String>,
    wait: Duration,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LockOptions {
    /// zc.lockfile's defaults: template `{pid}`, one try.
    pub fn new() -> Self {
        Self {
            content_template: Some("{pid}".to_owned()),
            wait: Duration::ZERO,
        }
    }

    /// What to write after the space: `{pid}`, `{hostname}`, `{plugin}`, with
    /// `{{` and `}}` for literal braces.
    pub fn content_template(mut self, template: impl Into<String>) -> Self {
        self.content_template = Some(template.into());
        self
    }

    /// Writes nothing and leaves the file's content as it is (zc.lockfile's
    /// `SimpleLockFile`).
    pub fn no_content(mut self) -> Self {
        self.content_template = None;
        self
    }

    /// Keeps trying for up to `wait` (the host may cap it). Zero tries once.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Takes the lock on `path`, relative to the lock directory.
    pub fn lock(&self, path: &str) -> Result<LockFile, Error> {
        let options = wit::Options {
            content_template: self.content_template.clone(),
            wait_ms: u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX),
        };
        wit::Lock::acquire(path, &options)
            .map(|handle| LockFile { handle })
            .map_err(|e| Error::new(path, e))
    }
}

/// Reads what the holder of `path` wrote, without taking the lock.
pub fn read_content(path: &str) -> Result<Option<String>, Error> {
    wit::read_content(path).map_err(|e| Error::new(path, e))
}

/// Ends the plugin now with exit status `code`, which `lockfile run` (or
/// another host) exits with: for example 75, EX_TEMPFAIL, when the lock is
/// held by someone else. Flushes stdout and stderr first; destructors do not
/// run, and the host releases every lock the plugin still holds.
///
/// `std::process::exit` cannot do this: under wasi:cli 0.2 the standard
/// library reports only success or failure (1). This uses wasi:cli's
/// `exit-with-code` (0.2.12), which wasmtime 48 provides.
pub fn exit(code: u8) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    bindings::wasi::cli::exit::exit_with_code(code);
    // The host ends the instance in the call above; should one return from
    // it, failing is the nearest thing to the status asked for.
    std::process::exit(i32::from(code != 0))
}

/// Runs a plugin's `main` body and ends the plugin the way a command line
/// expects: a lock held by someone else prints its one line on stderr
/// (`Couldn't lock 'my.lock': held by 7633`) and exits 75 (EX_TEMPFAIL, "held,
/// try later"); any other error prints `Error: ` and its message and exits 1;
/// `Ok` returns, and `main` ends with 0. `?` in the body takes any error
/// (a [`Error`], an `std::io::Error`, an `anyhow::Error`, a `String`).
///
/// ```no_run
/// fn main() {
///     lockfile_guest::command(|| {
///         let lock = lockfile_guest::LockFile::lock("my.lock")?;
///         println!("holding {}", lock.path());
///         Ok(())
///     })
/// }
/// ```
///
/// (`fn main() -> Result<(), lockfile_guest::Error>` works too, and prints
/// the same line after `Error: `, but always exits 1: under wasi:cli 0.2 the
/// standard library reports every failure as 1.)
// The example is about `main` itself.
#[allow(clippy::needless_doctest_main)]
pub fn command(body: impl FnOnce() -> Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    let Err(error) = body() else { return };
    let _ = std::io::stdout().flush();
    match error.downcast_ref::<Error>() {
        Some(held @ (Error::Locked { .. } | Error::TimedOut { .. })) => {
            eprintln!("{held}");
            exit(75)
        }
        _ => {
            eprintln!("Error: {error}");
            exit(1)
        }
    }
}

/// Why a lock could not be taken or read. Prints like zc.lockfile's
/// `LockError`: `Couldn't lock 'job.lock': held by 1234`; its `Debug` is the
/// same message, so `fn main() -> Result<(), Error>` prints it too.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Someone else holds the lock.
    #[error("Couldn't lock '{path}'{}", held_by(holder))]
    Locked {
        /// The lock file.
        path: String,
        /// What the holder wrote, if anything.
        holder: Option<String>,
    },
    /// The lock stayed held for the whole wait.
    #[error("Couldn't lock '{path}' within {waited:?}{}", held_by(holder))]
    TimedOut {
        /// The lock file.
        path: String,
        /// What the holder wrote, if anything.
        holder: Option<String>,
        /// How long the host waited: the wait asked for, or less if the host
        /// caps waits.
        waited: Duration,
    },
    /// The host refused the path (it is absolute, too long, empty, contains
    /// NUL or leads outside the lock directory), or the plugin may create no
    /// more lock files.
    #[error("not permitted: {reason}")]
    NotPermitted {
        /// The path given.
        path: String,
        /// The host's reason.
        reason: String,
    },
    /// The content template is malformed.
    #[error("{0}")]
    InvalidTemplate(String),
    /// The plugin already has this many lock handles alive.
    #[error("too many locks: this plugin may hold {0}")]
    TooManyLocks(u32),
    /// The operating system refused.
    #[error("{message}")]
    Io {
        /// The path given.
        path: String,
        /// The system's message.
        message: String,
    },
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn held_by(holder: &Option<String>) -> String {
    holder
        .as_ref()
        .map(|h| format!(": held by {h}"))
        .unwrap_or_default()
}

impl Error {
    fn new(path: &str, error: wit::Error) -> Self {
        let path = path.to_owned();
        match error {
            wit::Error::Locked(holder) => Self::Locked { path, holder },
            wit::Error::TimedOut(timed_out) => Self::TimedOut {
                path,
                holder: timed_out.holder,
                waited: Duration::from_millis(timed_out.waited_ms),
            },
            wit::Error::NotPermitted(reason) => Self::NotPermitted { path, reason },
            wit::Error::InvalidTemplate(message) => Self::InvalidTemplate(message),
            wit::Error::TooManyLocks(max) => Self::TooManyLocks(max),
            wit::Error::Io(message) => Self::Io { path, message },
        }
    }

    /// What the holder wrote, for [`Error::Locked`] and [`Error::TimedOut`].
    pub fn holder(&self) -> Option<&str> {
        match self {
            Self::Locked { holder, .. } | Self::TimedOut { holder, .. } => holder.as_deref(),
            _ => None,
        }
    }
}
