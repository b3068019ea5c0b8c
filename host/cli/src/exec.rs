//! `lockfile exec`: run a command while holding a lock.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus};
use std::time::Duration;

use lockfile_core::{BackendLock, LockOptions};

use crate::duration::parse_duration;
use crate::exit::{self, Failure};
use crate::locks::{self, Locks};

#[cfg(windows)]
mod job;
#[cfg(unix)]
mod signals;
mod stop;
#[cfg(target_os = "linux")]
mod tree;

/// Run COMMAND while holding the lock on PATH; release it when COMMAND ends.
///
/// Exits with COMMAND's status (128+N if a signal N ended it), or one of the
/// statuses listed below. If the lock stays held, prints `Couldn't lock
/// '<PATH>': held by <content>` and exits without running COMMAND.
///
/// COMMAND never outlives the lock. It inherits the locked file (as with
/// flock(1)), so the lock stays held while COMMAND, or anything it started that
/// kept the descriptor, runs, even if this process is killed with SIGKILL.
/// SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to this process are passed on to
/// COMMAND, and the lock is released only once COMMAND has exited. On Windows,
/// where a lock cannot be inherited, COMMAND and everything it starts are
/// ended when this process ends (a job object), however it ends.
///
/// With --lock-db (or LOCKFILE_DB) the lock is a PostgreSQL advisory lock
/// named PATH, which belongs to this process's session: COMMAND cannot
/// inherit it, and is tied to this process instead (see the `stop` module).
/// The lock has a lease (--lease, 15 s), renewed every second: when this
/// process cannot renew it, or the lock is lost otherwise (the server
/// restarted, the network dropped), COMMAND gets SIGTERM, at the latest
/// --grace (5 s) before the lease ends by this process's clock, then SIGKILL
/// when it ends or the grace has passed; on Linux so does
/// everything COMMAND started (background children, daemons), and what it
/// leaves running when it exits is ended before the lock is released. COMMAND finds
/// the lock's fencing token in LOCKFILE_FENCING_TOKEN: have what the lock
/// protects refuse a write with a token older than one it has seen. If the
/// last holder vanished without releasing the lock (killed, cut off), this
/// one waits out that holder's lease before COMMAND starts.
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

    /// The lock file; created if missing, never deleted. With --lock-db: the
    /// lock's name, under the same path rules.
    path: PathBuf,

    #[command(flatten)]
    db: crate::db::DbArgs,

    /// The command to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

/// Where COMMAND finds the lock's fencing token, when the backend issues
/// them (--lock-db): larger than every token issued before for the name, and
/// on the server's disk before COMMAND starts.
pub const FENCING_TOKEN: &str = "LOCKFILE_FENCING_TOKEN";

/// Parses `500ms`, `3s`, `1m`, `1h 30m`.
pub fn run(args: ExecArgs) -> ExitCode {
    match exec(args) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

/// One body for every backend: what differs (whether COMMAND can hold the
/// lock itself, whether the lock can be lost) is asked of the lock.
fn exec(args: ExecArgs) -> Result<ExitCode, Failure> {
    let name = locks::name(&args.db, &args.path)?;
    // The template is checked, and rendered, before anything is opened or
    // connected.
    let content = if args.no_content {
        None
    } else {
        LockOptions::new()
            .content_template(args.content_template.as_str())
            .render_content(name)
            .map_err(|error| Failure::lock(&error))?
    };
    let locks = Locks::open(&args.db, args.db.namespace(), None)?;
    let wait = args.wait.unwrap_or_default();
    let mut lock = locks.acquire(name, content, wait, args.log_failures)?;
    log::info!(
        "locked {name}{}: {}",
        lock.token()
            .map(|token| format!(" (token {token})"))
            .unwrap_or_default(),
        lock.content().unwrap_or("")
    );
    let (program, program_args) = args.command.split_first().expect("clap requires COMMAND");
    let mut command = Command::new(program);
    command.args(program_args);
    if let Some(token) = lock.token() {
        command.env(FENCING_TOKEN, token.to_string());
    }
    let ran = run_command(&mut command, lock.as_mut(), args.db.lease().grace);
    // COMMAND has exited: release (a lock COMMAND shares is only closed
    // here; anything it left running with the lock keeps it until it exits).
    let released = locks.release(lock);
    let (status, lost) = ran.map_err(|error| match error {
        Ran::Spawn(error) => Failure::new(
            if error.kind() == io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::NOT_EXECUTABLE
            },
            anyhow::anyhow!("couldn't run {}: {error}", program.to_string_lossy()),
        ),
        #[cfg(windows)]
        Ran::Untied(failure) => failure,
    })?;
    let lost_while = |reason: String, what: &str| {
        Failure::new(
            exit::LOCK_LOST,
            anyhow::anyhow!(
                "lost the lock on '{name}' while the command ran: {reason}; the command {what}"
            ),
        )
    };
    if let Some(reason) = lost {
        return Err(lost_while(reason, "was stopped"));
    }
    match released {
        Ok(()) => Ok(child_exit_code(status)),
        Err(lockfile_core::Error::Lost { reason, .. }) => Err(lost_while(reason, "had exited")),
        // A lock that cannot be released now is freed as this process ends.
        Err(error) => {
            log::warn!("releasing {name}: {error}");
            Ok(child_exit_code(status))
        }
    }
}

/// Why COMMAND did not run.
enum Ran {
    /// It could not be started.
    Spawn(io::Error),
    /// It could not be tied to this process.
    #[cfg(windows)]
    Untied(Failure),
}

/// Runs `command` to its end while `lock` is held: it shares the lock if the
/// lock allows, else it is tied to this process; signals are passed on, and
/// a loss of the lock stops it, with `grace` between SIGTERM and SIGKILL.
/// Returns its status and, if the lock was lost while it ran, why.
#[cfg(unix)]
fn run_command(
    command: &mut Command,
    lock: &mut dyn BackendLock,
    grace: Duration,
) -> Result<(ExitStatus, Option<String>), Ran> {
    // A lock COMMAND cannot share is this process's: COMMAND, and on Linux
    // all it starts (`tree`), must end before it is released or once lost.
    let tied = !lock.share_with(command);
    if tied {
        stop::end_with_this_process(command);
        #[cfg(target_os = "linux")]
        tree::adopt_orphans();
    }
    // Caught from before the spawn, so a signal that comes while the child
    // starts is passed on once it exists, not lost with this process while
    // the child runs on.
    let caught = signals::Caught::install();
    let mut child = command.spawn().map_err(Ran::Spawn)?;
    let forwarding = caught.map(|caught| caught.forward_to(child.id()));
    let pid = child.id() as libc::pid_t;
    let stop = move |signal| {
        #[cfg(target_os = "linux")]
        if tied {
            tree::signal_all(signal);
            return;
        }
        // SAFETY: kill(2) has no memory-safety preconditions; the child is
        // not reaped before the watch is told it exited, so the pid is its.
        unsafe { libc::kill(pid, signal) };
    };
    let watch = stop::LossWatch::start(
        lock.lost(),
        lock.deadline(),
        grace,
        move || stop(libc::SIGTERM),
        move || stop(libc::SIGKILL),
    );
    let exited = signals::wait_without_reaping(&child);
    // Nothing may signal the child's pid once it is reaped.
    watch.command_exited();
    drop(forwarding);
    let status = exited.and_then(|()| child.wait()).map_err(Ran::Spawn)?;
    let lost = watch.lost();
    // What COMMAND left running ends before the lock is released: at once
    // if the lock is lost already, else with the same grace as on a loss.
    #[cfg(target_os = "linux")]
    if tied {
        tree::end_all(if lost.is_some() {
            Duration::ZERO
        } else {
            grace
        });
    }
    Ok((status, lost))
}

/// On Windows no lock can be handed to a child: COMMAND, and all it starts,
/// runs in a job object that ends with this process, and is ended before the
/// lock is released (see `job`); a loss of the lock ends it at once.
#[cfg(windows)]
fn run_command(
    command: &mut Command,
    lock: &mut dyn BackendLock,
    _grace: Duration,
) -> Result<(ExitStatus, Option<String>), Ran> {
    let untied = |error: io::Error| {
        Ran::Untied(Failure::new(
            exit::SOFTWARE,
            anyhow::anyhow!("couldn't tie COMMAND to this process (a job object): {error}"),
        ))
    };
    let shared = lock.share_with(command);
    debug_assert!(!shared, "no lock is inherited on Windows");
    let job = std::sync::Arc::new(job::Job::kill_on_close().map_err(untied)?);
    job::leave_interrupts_to_the_command();
    let mut child = match job.spawn(command) {
        Err(error) => return Err(Ran::Spawn(error)),
        Ok(Err(error)) => return Err(untied(error)),
        Ok(Ok(child)) => child,
    };
    let ending = job.clone();
    let watch = stop::LossWatch::start(
        lock.lost(),
        None,
        Duration::ZERO,
        move || ending.end_members(),
        || {},
    );
    let status = child.wait();
    watch.command_exited();
    job.end_members();
    Ok((status.map_err(Ran::Spawn)?, watch.lost()))
}

fn child_exit_code(status: ExitStatus) -> ExitCode {
    // Windows exit codes are 32 bits (0xC0000005 for a crash): passed on
    // whole. The lock is released already, and nothing is left to clean up.
    #[cfg(windows)]
    if let Some(code) = status.code().filter(|code| !(0..=255).contains(code)) {
        std::process::exit(code);
    }
    if let Some(code) = status.code() {
        return ExitCode::from(code as u8);
    }
    #[cfg(unix)]
    if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&status) {
        return ExitCode::from(exit::signaled(signal));
    }
    ExitCode::FAILURE
}
