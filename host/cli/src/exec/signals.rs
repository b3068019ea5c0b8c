//! Passing termination signals on to the command.

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
