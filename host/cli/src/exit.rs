//! Exit statuses, from sysexits.h where one fits.

use std::process::ExitCode;

use lockfile_core::Error;

/// EX_USAGE: bad flags or a bad template; nothing was touched.
pub const USAGE: u8 = 64;
/// EX_TEMPFAIL: the lock is held by someone else; try again later.
pub const TEMPFAIL: u8 = 75;
/// EX_IOERR: the operating system refused to open, lock or write the file.
pub const IOERR: u8 = 74;

/// EX_SOFTWARE: the host itself failed.
pub const SOFTWARE: u8 = 70;

/// The status for a lock error.
pub fn lock_error_status(error: &Error) -> u8 {
    match error {
        Error::Locked { .. } | Error::TimedOut { .. } => TEMPFAIL,
        Error::InvalidTemplate(_) => USAGE,
        Error::Io { .. } => IOERR,
    }
}

/// Prints a lock error the way zc.lockfile words it and picks its status.
pub fn lock_error(error: &Error) -> ExitCode {
    match error {
        Error::Locked { .. } | Error::TimedOut { .. } => {
            eprintln!("{error}");
            ExitCode::from(TEMPFAIL)
        }
        Error::InvalidTemplate(_) => {
            eprintln!("lockfile: {error}");
            ExitCode::from(USAGE)
        }
        Error::Io { .. } => {
            eprintln!("lockfile: {error}");
            ExitCode::from(IOERR)
        }
    }
}
