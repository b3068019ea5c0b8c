//! `lockfile inspect`: who holds a lock, without taking it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lockfile_core::Locked;

use crate::exit::Failure;
use crate::locks::{self, Locks};
use crate::output;

/// Print the holder's content and whether the lock is held right now.
///
/// Takes no lock, so it never makes a concurrent taker fail. Whether a lock
/// file is locked is read from /proc/locks on Linux; on Windows, by trying to
/// read byte 0, which a holder's lock makes unreadable (no pid); elsewhere it
/// says `unknown`. Prints `content: <content or (none)>` and `locked: yes (pid
/// N)`, `yes`, `no` or `unknown`. With --lock-db: `locked: yes (backend pid
/// N)` or `no`, `token: N`, the last fencing token, once the name has been
/// locked, and `lease: 12s 300ms left` (or `lease: ended`) while the last
/// holder's lease runs on the server, unreleased: a holder that vanished may
/// still be running until it ends, and the next holder waits it out.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The lock file (with --lock-db: the lock's name).
    path: PathBuf,

    #[command(flatten)]
    db: crate::db::DbArgs,
}

pub fn run(args: InspectArgs) -> ExitCode {
    match inspect(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn inspect(args: &InspectArgs) -> Result<(), Failure> {
    let name = locks::name(&args.db, &args.path)?;
    let locks = Locks::open(&args.db, args.db.namespace(), None)?;
    let found = locks.inspect(name)?;
    let content = found.content.as_deref().unwrap_or("(none)");
    output::line(format_args!("content: {content}"));
    output::line(match found.locked {
        Locked::Yes(Some(holder)) => format!("locked: yes ({holder})"),
        Locked::Yes(None) => "locked: yes".to_owned(),
        Locked::No => "locked: no".to_owned(),
        Locked::Unknown => "locked: unknown".to_owned(),
    });
    if let Some(token) = found.token {
        output::line(format_args!("token: {token}"));
    }
    match found.lease_left {
        Some(left) if left.is_zero() => output::line("lease: ended"),
        Some(left) => output::line(format_args!(
            "lease: {} left",
            humantime::format_duration(Duration::from_millis(left.as_millis() as u64))
        )),
        None => {}
    }
    Ok(())
}
