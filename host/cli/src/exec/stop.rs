//! COMMAND never runs on without its lock, when the lock is one it cannot
//! share (a database session's; every lock on Windows):
//!
//! - when the lock is lost while COMMAND runs (the session ended: a server
//!   restart or failover, a network loss, a server that stopped answering;
//!   or its lease could not be renewed, noticed by this process's own clock
//!   --grace before the lease ends), COMMAND is stopped: SIGTERM, then
//!   SIGKILL after the grace or at the lock's deadline, whichever comes
//!   first (on Windows its job object is ended at once), and `exec` exits
//!   [`crate::exit::LOCK_LOST`]; a loss found only when releasing, after
//!   COMMAND exited, exits the same way;
//! - when this process dies, the server ends its session and frees the lock,
//!   and COMMAND gets SIGTERM on Linux (`PR_SET_PDEATHSIG`) and is ended on
//!   Windows (the job object): it does not go on unprotected.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use lockfile_core::{BackendFuture, DeadlineReader, block_on};

/// Watches a lock for its loss while COMMAND runs, and stops COMMAND if it
/// is lost; never signals COMMAND once it has exited.
pub struct LossWatch {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    exited: Condvar,
}

#[derive(Default)]
struct State {
    exited: bool,
    lost: Option<String>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LossWatch {
    /// Watches `lost` (`None`: a lock that cannot be lost, and nothing is
    /// started) on a thread of its own: if it completes before
    /// [`command_exited`](Self::command_exited), calls `terminate`, then
    /// `kill` once `grace` has passed, or the lock's `deadline` has come, with
    /// COMMAND still running. Both are called with the watch's state locked,
    /// so never after COMMAND exited.
    pub fn start(
        lost: Option<BackendFuture<String>>,
        deadline: Option<DeadlineReader>,
        grace: Duration,
        terminate: impl FnOnce() + Send + 'static,
        kill: impl FnOnce() + Send + 'static,
    ) -> Self {
        let shared = Arc::new(Shared::default());
        if let Some(lost) = lost {
            let watching = shared.clone();
            // Never joined: it stays parked on a lock that is never lost
            // until this process exits, which comes right after COMMAND's.
            let started = std::thread::Builder::new()
                .name("lockfile-loss".into())
                .spawn(move || {
                    let reason = block_on(lost);
                    let kill_at = Instant::now() + grace;
                    let kill_at = deadline.map_or(kill_at, |deadline| kill_at.min(deadline()));
                    stop_on_loss(&watching, reason, kill_at, terminate, kill);
                });
            if let Err(error) = started {
                log::warn!("the command will not be stopped if the lock is lost: {error}");
            }
        }
        Self { shared }
    }

    /// COMMAND has exited (and is not reaped yet): nothing is signalled from
    /// now on.
    pub fn command_exited(&self) {
        self.shared.state().exited = true;
        self.shared.exited.notify_all();
    }

    /// Why the lock was lost, if it was while COMMAND ran.
    pub fn lost(&self) -> Option<String> {
        self.shared.state().lost.clone()
    }
}

fn stop_on_loss(
    shared: &Shared,
    reason: String,
    deadline: Instant,
    terminate: impl FnOnce(),
    kill: impl FnOnce(),
) {
    let mut state = shared.state();
    if state.exited {
        return;
    }
    log::info!("the lock was lost ({reason}): stopping the command");
    state.lost = Some(reason);
    terminate();
    while !state.exited {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            kill();
            return;
        };
        state = shared
            .exited
            .wait_timeout(state, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// On Linux, COMMAND gets SIGTERM when this process dies: the lock it could
/// not share is freed then, and COMMAND must not go on without it.
#[cfg(target_os = "linux")]
pub fn end_with_this_process(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe, and the closure
    // allocates nothing on success.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // This process died before the call: the lock is gone.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
pub fn end_with_this_process(_command: &mut std::process::Command) {}
