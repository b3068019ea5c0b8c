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

/// Prints a lock error and returns its status: contention exactly as
/// zc.lockfile words it, anything else after the command's name.
pub fn lock_error(error: &Error) -> ExitCode {
    let status = lock_error_status(error);
    if status == TEMPFAIL {
        eprintln!("{error}");
    } else {
        eprintln!("lockfile: {error}");
    }
    ExitCode::from(status)
}
