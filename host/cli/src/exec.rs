//! `lockfile exec`: run a command while holding a lock.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use lockfile_core::LockOptions;

use crate::exit;

/// Run COMMAND while holding the lock on PATH; release it when COMMAND ends.
///
/// Exits with COMMAND's status (128+N if a signal N ended it). If the lock
/// stays held, prints `Couldn't lock '<PATH>': held by <content>` and exits 75
/// without running COMMAND. The lock is held by this process, not by COMMAND:
/// COMMAND does not inherit the file, and if this process dies the lock is
/// free even while COMMAND runs on.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// What to write into the lock file, after a space: fields {pid} and
    /// {hostname}; {{ and }} for literal braces.
    #[arg(long, value_name = "TEMPLATE", default_value = "{pid}")]
    content_template: String,

    /// Lock without writing anything (zc.lockfile's SimpleLockFile).
    #[arg(long, conflicts_with = "content_template")]
    no_content: bool,

    /// Keep trying for this long, e.g. 500ms, 3s, 1m (default: one try).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    wait: Option<Duration>,

    /// Log each failed attempt at ERROR, as exclusive_control does.
    #[arg(long)]
    log_failures: bool,

    /// The lock file; created if missing, never deleted.
    path: PathBuf,

    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Parses `500ms`, `3s`, `1m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 3s, 1m)"))
}

pub fn run(args: ExecArgs) -> ExitCode {
    let mut options = LockOptions::new()
        .wait(args.wait.unwrap_or_default())
        .log_failures(args.log_failures);
    options = if args.no_content {
        options.no_content()
    } else {
        options.content_template(args.content_template)
    };
    let lock = match options.lock(&args.path) {
        Ok(lock) => lock,
        Err(error) => return exit::lock_error(&error),
    };
    log::info!(
        "locked {}: {}",
        args.path.display(),
        lock.content().unwrap_or("")
    );
    let (program, program_args) = args.command.split_first().expect("clap requires COMMAND");
    let status = Command::new(program).args(program_args).status();
    lock.release();
    match status {
        Ok(status) => child_exit_code(status),
        Err(error) => {
            eprintln!(
                "lockfile: couldn't run {}: {error}",
                program.to_string_lossy()
            );
            // The shells' statuses for "not found" and "not executable".
            ExitCode::from(if error.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}

fn child_exit_code(status: std::process::ExitStatus) -> ExitCode {
    if let Some(code) = status.code() {
        return ExitCode::from(code as u8);
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return ExitCode::from(128u8.wrapping_add(signal as u8));
    }
    ExitCode::FAILURE
}
