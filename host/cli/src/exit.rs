//! Exit statuses, from sysexits.h where one fits.

use std::process::ExitCode;

use lockfile_core::Error;

/// EX_USAGE: bad flags or a bad template; nothing was touched.
pub const USAGE: u8 = 64;
/// EX_TEMPFAIL: the lock is held by someone else; try again later.
pub const TEMPFAIL: u8 = 75;
/// EX_IOERR: the operating system refused to open, lock or write the file.
pub const IOERR: u8 = 74;

/// The lock was lost while held (`--lock-db`: the database session ended,
/// after a server restart, a failover or a network loss): the command or the
/// plugin was stopped, or had run partly without the lock. 76 is
/// sysexits.h's EX_PROTOCOL, the first status after EX_TEMPFAIL; no other
/// outcome of `lockfile` uses it.
pub const LOCK_LOST: u8 = 76;

/// EX_SOFTWARE: the host itself failed.
pub const SOFTWARE: u8 = 70;
/// EX_DATAERR: the plugin file is not something this host can run.
pub const BAD_PLUGIN: u8 = 65;
/// What wasmtime exits with when a plugin traps (128 + SIGABRT).
pub const TRAPPED: u8 = 134;
/// What timeout(1) exits with.
pub const TIMED_OUT: u8 = 124;
/// The shells' status for a command that was not found.
pub const NOT_FOUND: u8 = 127;
/// The shells' status for a command that could not be executed.
pub const NOT_EXECUTABLE: u8 = 126;
/// The status of a process ended by `signal`, as shells report it.
#[cfg(unix)]
pub fn signaled(signal: i32) -> u8 {
    128u8.wrapping_add(signal as u8)
}

/// What each status means, for the `--help` of the commands that can exit
/// with it: written from the constants, so the help cannot drift from them.
const MEANINGS: &[(u8, &str, &[&str])] = &[
    (
        USAGE,
        "bad flags, a bad template or lock name: nothing was touched",
        &["run", "exec", "inspect", "compile"],
    ),
    (
        BAD_PLUGIN,
        "the plugin file cannot run (missing, not a command component, an import the host lacks)",
        &["run", "compile"],
    ),
    (SOFTWARE, "the host itself failed", &["run", "exec"]),
    (
        IOERR,
        "the system or the lock database refused (open, lock, write, connect)",
        &["run", "exec", "inspect", "compile"],
    ),
    (
        TEMPFAIL,
        "the lock is held by someone else (`Couldn't lock ...`): nothing ran",
        &["run", "exec"],
    ),
    (
        LOCK_LOST,
        "the lock was lost while held (--lock-db): the plugin or COMMAND was stopped",
        &["run", "exec"],
    ),
    (
        TIMED_OUT,
        "--timeout ran out: the plugin was stopped",
        &["run"],
    ),
    (NOT_EXECUTABLE, "COMMAND could not be executed", &["exec"]),
    (NOT_FOUND, "COMMAND was not found", &["exec"]),
    (TRAPPED, "the plugin trapped (a limit included)", &["run"]),
];

/// The `Exit statuses:` section of `command`'s `--help`.
pub fn statuses_help(command: &str) -> String {
    let own = match command {
        "run" => Some("the plugin's own (0-255, through wasi:cli's exit-with-code)"),
        "exec" => Some("COMMAND's own (128+N if signal N ended it)"),
        _ => None,
    };
    let own = own.map_or_else(
        || "    0  success\n".to_owned(),
        |own| format!("  {own}, or\n"),
    );
    let mut help = format!("Exit statuses:\n{own}");
    for (status, meaning, commands) in MEANINGS {
        if commands.contains(&command) {
            help.push_str(&format!("  {status:>3}  {meaning}\n"));
        }
    }
    help
}

/// The status for a lock error.
pub fn lock_error_status(error: &Error) -> u8 {
    match error {
        Error::Locked { .. } | Error::TimedOut { .. } => TEMPFAIL,
        Error::InvalidTemplate(_) => USAGE,
        Error::Io { .. } => IOERR,
        Error::Lost { .. } => LOCK_LOST,
    }
}

/// Why a command failed, with the status it exits with: the one error type
/// of the command line, printed once, by [`Failure::report`].
#[derive(Debug)]
pub struct Failure {
    pub error: anyhow::Error,
    pub status: u8,
}

impl Failure {
    pub fn new(status: u8, error: impl Into<anyhow::Error>) -> Self {
        Self {
            error: error.into(),
            status,
        }
    }

    /// A lock error, with its status. The core error's message already ends
    /// with the system's reason: it is kept as a message, not chained as a
    /// source, which would print that reason twice.
    pub fn lock(error: &Error) -> Self {
        Self::new(lock_error_status(error), anyhow::anyhow!("{error}"))
    }

    /// Prints the failure on one line and returns its status: contention
    /// exactly as zc.lockfile words it (`Couldn't lock ...`), anything else
    /// after the command's name.
    pub fn report(self) -> ExitCode {
        let line = format!("{:#}", self.error).replace(['\n', '\r'], " ");
        if self.status == TEMPFAIL {
            eprintln!("{line}");
        } else {
            eprintln!("lockfile: {line}");
        }
        ExitCode::from(self.status)
    }
}

/// Gives an error its exit status: `.status(exit::USAGE)?`.
pub trait Status<T> {
    fn status(self, status: u8) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> Status<T> for Result<T, E> {
    fn status(self, status: u8) -> Result<T, Failure> {
        self.map_err(|error| Failure::new(status, error))
    }
}

/// The status for an error of the lock database (`--lock-db`): the same as a
/// lock file's for the outcomes they share; 64 for a bad URL, namespace or
/// lock name (nothing was connected or locked); [`LOCK_LOST`] for a lost lock.
pub fn db_error_status(error: &lockfile_postgres::Error) -> u8 {
    use lockfile_postgres::Error as E;
    match error {
        E::Lock(error) => lock_error_status(error),
        E::Name(_)
        | E::InvalidUrl { .. }
        | E::InvalidNamespace { .. }
        | E::InvalidSettings { .. } => USAGE,
        E::Lost { .. } => LOCK_LOST,
    }
}

/// An error of the lock database, with its status; no message shows the
/// URL's password.
pub fn db_failure(error: &lockfile_postgres::Error) -> Failure {
    Failure::new(db_error_status(error), anyhow::anyhow!("{error}"))
}

/// The status for an error of an etcd cluster (`--lock-db etcd://`), as
/// [`db_error_status`] gives PostgreSQL's.
pub fn etcd_error_status(error: &lockfile_etcd::Error) -> u8 {
    use lockfile_etcd::Error as E;
    match error {
        E::Lock(error) => lock_error_status(error),
        E::Name(_)
        | E::InvalidUrl { .. }
        | E::InvalidNamespace { .. }
        | E::InvalidSettings { .. } => USAGE,
        E::Lost { .. } => LOCK_LOST,
    }
}

/// An error of an etcd cluster, with its status; no message shows the URL's
/// password.
pub fn etcd_failure(error: &lockfile_etcd::Error) -> Failure {
    Failure::new(etcd_error_status(error), anyhow::anyhow!("{error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commands_help_lists_its_statuses_from_the_constants() {
        let exec = statuses_help("exec");
        for status in [USAGE, IOERR, TEMPFAIL, LOCK_LOST, NOT_EXECUTABLE, NOT_FOUND] {
            assert!(
                exec.contains(&format!("  {status:>3}  ")),
                "{status}: {exec}"
            );
        }
        assert!(!exec.contains(&format!("  {TRAPPED}  ")), "{exec}");
        let inspect = statuses_help("inspect");
        assert!(
            inspect.starts_with("Exit statuses:\n    0  success\n"),
            "{inspect}"
        );
        assert!(!inspect.contains(&format!("  {TEMPFAIL}  ")), "{inspect}");
    }
}
