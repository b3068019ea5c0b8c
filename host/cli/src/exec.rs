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
/// without running COMMAND.
///
/// COMMAND never outlives the lock. It inherits the locked file (as with
/// flock(1)), so the lock stays held while COMMAND, or anything it started that
/// kept the descriptor, runs, even if this process is killed with SIGKILL.
/// SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to this process are passed on to
/// COMMAND, and the lock is released only once COMMAND has exited.
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
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut lock = match options.lock(&args.path) {
        Ok(lock) => lock,
        Err(error) => return exit::lock_error(&error),
    };
    log::info!(
        "locked {}: {}",
        args.path.display(),
        lock.content().unwrap_or("")
    );
    let (program, program_args) = args.command.split_first().expect("clap requires COMMAND");
    let mut command = Command::new(program);
    command.args(program_args);
    #[cfg(unix)]
    let status = {
        lock.share_with(&mut command);
        // Caught from before the spawn, so a signal that comes while the
        // child starts is passed on once it exists, not lost with this
        // process while the child runs on.
        let caught = signals::Caught::install();
        command.spawn().and_then(|mut child| {
            let forwarding = caught.map(|caught| caught.forward_to(child.id()));
            // Stop forwarding before the child is reaped, so no signal can
            // reach another process that reuses its pid.
            let exited = signals::wait_without_reaping(&child);
            drop(forwarding);
            exited.and_then(|()| child.wait())
        })
    };
    // The child has exited: close our descriptor. Anything the command left
    // running with the descriptor keeps the lock until it exits.
    lock.release();
    match status {
        Ok(status) => child_exit_code(status),
        Err(error) => {
            eprintln!(
                "lockfile: couldn't run {}: {error}",
                program.to_string_lossy()
            );
            ExitCode::from(if error.kind() == io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::NOT_EXECUTABLE
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
        return ExitCode::from(exit::signaled(signal));
    }
    ExitCode::FAILURE
}

/// Passing termination signals on to the command.
#[cfg(unix)]
mod signals {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    use signal_hook::iterator::SignalsInfo;
    use signal_hook::iterator::exfiltrator::WithOrigin;
    use signal_hook::low_level::siginfo::Cause;

    /// The signals that ask a process to stop: the command must get them, and
    /// this process must outlive it to hold the lock until it is gone.
    const FORWARDED: [i32; 4] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT];

    /// Forwards [`FORWARDED`] to `child` until the value is dropped.
    pub struct Forwarding {
        handle: signal_hook::iterator::Handle,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    /// [`FORWARDED`] signals caught and kept until there is a child to pass
    /// them to.
    pub struct Caught(SignalsInfo<WithOrigin>);

    impl Caught {
        /// Catches the signals. If the handlers cannot be installed they keep
        /// their default action, which ends this process while the command,
        /// which inherited the lock, holds it on: logged, not fatal.
        pub fn install() -> Option<Self> {
            match SignalsInfo::<WithOrigin>::new(FORWARDED) {
                Ok(signals) => Some(Self(signals)),
                Err(error) => {
                    log::warn!("cannot forward signals to the command: {error}");
                    None
                }
            }
        }

        /// Passes every signal caught, since [`install`](Self::install) and
        /// from now on, to `child` until the value returned is dropped.
        pub fn forward_to(self, child: u32) -> Forwarding {
            let Self(mut signals) = self;
            let handle = signals.handle();
            let thread = std::thread::spawn(move || {
                for origin in signals.forever() {
                    // The terminal sends ^C, ^\ and hangups to the whole
                    // foreground process group, the command included: passing
                    // those on would deliver them twice.
                    if origin.cause == Cause::Kernel {
                        continue;
                    }
                    log::info!("passing signal {} on to the command", origin.signal);
                    // SAFETY: kill(2) has no memory-safety preconditions. The
                    // child is not reaped before this thread is stopped, so
                    // its pid cannot have been reused.
                    unsafe { libc::kill(child as libc::pid_t, origin.signal) };
                }
            });
            Forwarding {
                handle,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Forwarding {
        fn drop(&mut self) {
            self.handle.close();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Waits until `child` has exited, leaving it unreaped (a zombie keeps
    /// its pid), so that signals forwarded meanwhile can only reach it.
    pub fn wait_without_reaping(child: &std::process::Child) -> std::io::Result<()> {
        loop {
            // SAFETY: waitid writes only into `info`, which outlives the call.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let result = unsafe {
                libc::waitid(
                    libc::P_PID,
                    child.id() as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if result == 0 {
                return Ok(());
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }
}
