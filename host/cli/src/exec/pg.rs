//! `lockfile exec --lock-db URL NAME -- COMMAND`: COMMAND runs while this
//! process holds a PostgreSQL advisory lock named NAME.
//!
//! A database lock belongs to a session of this process, not to a file
//! descriptor, so COMMAND cannot inherit it as it inherits a lock file.
//! Instead COMMAND is tied to this process:
//!
//! - when the lock is lost while COMMAND runs (the session ended: a server
//!   restart or failover, a network loss, a server that stopped answering;
//!   noticed within about 6 s, see `lockfile_postgres`), COMMAND gets SIGTERM,
//!   then SIGKILL after [`GRACE`], and this exits [`crate::exit::LOCK_LOST`] with
//!   one line saying which lock was lost and why; a loss found only when
//!   releasing, after COMMAND exited, exits the same way;
//! - when this process dies, the server ends its session and frees the lock
//!   at once, and on Linux COMMAND gets SIGTERM (`PR_SET_PDEATHSIG`): it does
//!   not go on unprotected;
//! - SIGTERM, SIGINT, SIGHUP and SIGQUIT are passed on to COMMAND as with a
//!   lock file, and the lock is released once COMMAND has exited.

#[cfg(unix)]
pub use unix::run;

/// How long COMMAND has between SIGTERM and SIGKILL once the lock is lost.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(not(unix))]
pub fn run(_args: super::ExecArgs, _url: &str) -> std::process::ExitCode {
    eprintln!("lockfile: exec --lock-db is not supported on this system yet");
    std::process::ExitCode::from(crate::exit::USAGE)
}

#[cfg(unix)]
mod unix {
    use std::io;
    use std::process::{Command, ExitCode};
    use std::sync::{Arc, Mutex};

    use lockfile_core::LockOptions;

    use super::super::{ExecArgs, child_exit_code, signals};
    use super::GRACE;
    use crate::{db, exit};

    pub fn run(args: ExecArgs, url: &str) -> ExitCode {
        let name = match db::check_name(&args.path) {
            Ok(name) => name.to_owned(),
            Err(code) => return code,
        };
        // The template is checked, and rendered, before anything is connected.
        let content = if args.no_content {
            None
        } else {
            match LockOptions::new()
                .content_template(args.content_template.as_str())
                .render_content(&name)
            {
                Ok(content) => content,
                Err(error) => return exit::lock_error(&error),
            }
        };
        let runtime = match db::runtime() {
            Ok(runtime) => runtime,
            Err(code) => return code,
        };
        let locker = match db::connect(&runtime, url, args.db.namespace()) {
            Ok(locker) => locker,
            Err(code) => return code,
        };
        let wait = args.wait.unwrap_or_default();
        let lock = match runtime.block_on(locker.acquire(&name, content, wait)) {
            Ok(lock) => lock,
            Err(error) => {
                if args.log_failures && error.holder().is_some() {
                    log::error!(
                        "Error locking file {name}; pid={}",
                        error.holder().unwrap_or("UNKNOWN")
                    );
                }
                return exit::db_error(&error);
            }
        };
        log::info!(
            "locked {name} on {} (token {}): {}",
            locker.url(),
            lock.token(),
            lock.content().unwrap_or("")
        );

        let (program, program_args) = args.command.split_first().expect("clap requires COMMAND");
        let mut command = Command::new(program);
        command.args(program_args);
        end_with_this_process(&mut command);
        let caught = signals::Caught::install();
        let stopper = Arc::new(Stopper::default());
        let status = command.spawn().and_then(|mut child| {
            let forwarding = caught.map(|caught| caught.forward_to(child.id()));
            let watch = runtime.spawn({
                let lost = lock.lost_notify();
                let stopper = stopper.clone();
                let pid = child.id();
                async move { stopper.stop_on_loss(pid, lost.await).await }
            });
            let exited = signals::wait_without_reaping(&child);
            // Nothing may signal the child's pid once it is reaped.
            stopper.child_exited();
            watch.abort();
            drop(forwarding);
            exited.and_then(|()| child.wait())
        });
        let lost = stopper.lost();
        let released = runtime.block_on(lock.release());
        let status = match status {
            Ok(status) => status,
            Err(error) => {
                eprintln!(
                    "lockfile: couldn't run {}: {error}",
                    program.to_string_lossy()
                );
                return ExitCode::from(if error.kind() == io::ErrorKind::NotFound {
                    exit::NOT_FOUND
                } else {
                    exit::NOT_EXECUTABLE
                });
            }
        };
        if let Some(reason) = lost {
            eprintln!(
                "lockfile: lost the lock on '{name}' while the command ran: {reason}; the command was stopped"
            );
            return ExitCode::from(exit::LOCK_LOST);
        }
        match released {
            Ok(()) => child_exit_code(status),
            Err(lockfile_postgres::Error::Lost { reason, .. }) => {
                eprintln!(
                    "lockfile: lost the lock on '{name}' while the command ran: {reason}; the command had exited"
                );
                ExitCode::from(exit::LOCK_LOST)
            }
            // The session ends with this process, which frees the lock.
            Err(error) => {
                log::warn!("releasing {name}: {error}");
                child_exit_code(status)
            }
        }
    }

    /// Stops the command when the lock is lost, and never signals its pid
    /// once it may have been reaped.
    #[derive(Default)]
    struct Stopper {
        state: Mutex<State>,
    }

    #[derive(Default)]
    struct State {
        exited: bool,
        lost: Option<String>,
    }

    impl Stopper {
        async fn stop_on_loss(&self, pid: u32, reason: String) {
            if !self.signal(pid, libc::SIGTERM, Some(reason)) {
                return;
            }
            tokio::time::sleep(GRACE).await;
            self.signal(pid, libc::SIGKILL, None);
        }

        /// Sends `signal` unless the command has exited; `false` if it has.
        fn signal(&self, pid: u32, signal: i32, lost: Option<String>) -> bool {
            let mut state = self.state.lock().expect("not poisoned");
            if state.exited {
                return false;
            }
            if let Some(reason) = lost {
                log::info!("the lock was lost ({reason}): stopping the command");
                state.lost = Some(reason);
            }
            // SAFETY: kill(2) has no memory-safety preconditions; the child
            // is not reaped before `child_exited`, so the pid is still its.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
            true
        }

        fn child_exited(&self) {
            self.state.lock().expect("not poisoned").exited = true;
        }

        fn lost(&self) -> Option<String> {
            self.state.lock().expect("not poisoned").lost.clone()
        }
    }

    /// On Linux, COMMAND gets SIGTERM when this process dies: the server
    /// frees the lock then, and COMMAND must not go on without it.
    #[cfg(target_os = "linux")]
    fn end_with_this_process(command: &mut Command) {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe, and the closure
        // allocates nothing on success.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // This process died before the call: the lock is gone.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn end_with_this_process(_command: &mut Command) {}
}
