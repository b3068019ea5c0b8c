//! `lockfile exec`: run a command while holding a lock.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use lockfile_core::LockOptions;

use crate::exit;

mod pg;

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
/// COMMAND, and the lock is released only once COMMAND has exited. On Windows,
/// where a lock cannot be inherited, COMMAND and everything it starts are
/// ended when this process ends (a job object), however it ends.
///
/// With --lock-db (or LOCKFILE_DB) the lock is a PostgreSQL advisory lock
/// named PATH: see the `pg` module. If it is lost while COMMAND runs (the
/// server restarted, the network dropped), COMMAND gets SIGTERM, then SIGKILL
/// after 10 s, and this exits 76.
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

/// Parses `500ms`, `3s`, `1m`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 500ms, 3s, 1m)"))
}

pub fn run(args: ExecArgs) -> ExitCode {
    if let Some(url) = args.db.url() {
        return pg::run(args, &url);
    }
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
    // The lock cannot be handed to the child here: the child, and all it
    // starts, ends before the lock is released instead (see `job`).
    #[cfg(windows)]
    let status = {
        let tie_failed = |error: io::Error| {
            eprintln!("lockfile: couldn't tie COMMAND to this process (a job object): {error}");
            ExitCode::from(exit::SOFTWARE)
        };
        let job = match job::Job::kill_on_close() {
            Ok(job) => job,
            Err(error) => return tie_failed(error),
        };
        job::leave_interrupts_to_the_command();
        match job.spawn(&mut command) {
            Err(error) => Err(error),
            Ok(Err(error)) => return tie_failed(error),
            Ok(Ok(mut child)) => {
                let status = child.wait();
                job.end_members();
                status
            }
        }
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

/// COMMAND never outlives the lock, on Windows.
///
/// LockFileEx locks belong to the handle and the process that took them, and
/// the system releases them when that process closes its handle or ends:
/// COMMAND cannot share the lock as it does on Unix. So COMMAND, and
/// everything it starts, is made to end first: it runs in a job object that
/// the system ends when its last handle, ours, closes, which happens when this
/// process ends however it ends (TerminateProcess included); and when COMMAND
/// exits, whatever it left running in the job is ended before the lock is
/// released.
#[cfg(windows)]
mod job {
    use std::io;
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
    use std::os::windows::process::CommandExt;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use windows_sys::Win32::Foundation::{FALSE, INVALID_HANDLE_VALUE, TRUE};
    use windows_sys::Win32::System::Console::{
        CTRL_BREAK_EVENT, CTRL_C_EVENT, SetConsoleCtrlHandler,
    };
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
    };
    use windows_sys::Win32::System::JobObjects::{
        AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
        JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, JOBOBJECT_EXTENDED_LIMIT_INFORMATION,
        JobObjectBasicAccountingInformation, JobObjectExtendedLimitInformation,
        QueryInformationJobObject, SetInformationJobObject, TerminateJobObject,
    };
    use windows_sys::Win32::System::Threading::{
        CREATE_SUSPENDED, OpenThread, ResumeThread, THREAD_SUSPEND_RESUME,
    };
    use windows_sys::core::BOOL;

    /// How long [`Job::end_members`] waits for the members to be gone.
    const END_TIMEOUT: Duration = Duration::from_secs(10);

    /// A job object whose members the system ends when its handle closes.
    pub struct Job(OwnedHandle);

    impl Job {
        pub fn kill_on_close() -> io::Result<Self> {
            // SAFETY: no attributes, no name; returns a new handle or null.
            let raw = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
            if raw.is_null() {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a handle just created for us alone.
            let job = Self(unsafe { OwnedHandle::from_raw_handle(raw) });
            // SAFETY: plain data; all zeros is "no limits".
            let mut limits: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = unsafe { std::mem::zeroed() };
            limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            // SAFETY: `limits` is the structure this information class names,
            // with its size, and outlives the call.
            check(unsafe {
                SetInformationJobObject(
                    job.0.as_raw_handle(),
                    JobObjectExtendedLimitInformation,
                    (&raw const limits).cast(),
                    std::mem::size_of_val(&limits) as u32,
                )
            })?;
            Ok(job)
        }

        /// Spawns `command` in the job: suspended, assigned, then resumed, so
        /// that it runs no instruction, and starts no process, outside it.
        /// `Err` from the spawn itself is returned as is; a failure to put it
        /// in the job kills it and is `Ok(Err(_))`.
        pub fn spawn(&self, command: &mut Command) -> io::Result<io::Result<Child>> {
            command.creation_flags(CREATE_SUSPENDED);
            let mut child = command.spawn()?;
            // SAFETY: both handles are valid for the call.
            let assigned = check(unsafe {
                AssignProcessToJobObject(self.0.as_raw_handle(), child.as_raw_handle())
            });
            match assigned.and_then(|()| resume(child.id())) {
                Ok(()) => Ok(Ok(child)),
                Err(error) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Ok(Err(error))
                }
            }
        }

        /// Ends what is left in the job (what COMMAND started and left
        /// running) and waits until it is gone, so that nothing of COMMAND's
        /// runs once the lock is released.
        pub fn end_members(&self) {
            // SAFETY: a valid job handle.
            unsafe { TerminateJobObject(self.0.as_raw_handle(), 1) };
            let start = Instant::now();
            while self.active_processes().is_ok_and(|n| n > 0) {
                if start.elapsed() > END_TIMEOUT {
                    log::warn!("processes the command started are still ending");
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        fn active_processes(&self) -> io::Result<u32> {
            // SAFETY: plain data.
            let mut info: JOBOBJECT_BASIC_ACCOUNTING_INFORMATION = unsafe { std::mem::zeroed() };
            // SAFETY: `info` is the structure this class names, with its size.
            check(unsafe {
                QueryInformationJobObject(
                    self.0.as_raw_handle(),
                    JobObjectBasicAccountingInformation,
                    (&raw mut info).cast(),
                    std::mem::size_of_val(&info) as u32,
                    std::ptr::null_mut(),
                )
            })?;
            Ok(info.ActiveProcesses)
        }
    }

    /// Resumes the one thread of the suspended process `pid`, which std's
    /// `Child` does not give a handle to.
    fn resume(pid: u32) -> io::Result<()> {
        // SAFETY: returns a new handle or INVALID_HANDLE_VALUE.
        let raw = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
        if raw == INVALID_HANDLE_VALUE {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a handle just created for us alone.
        let snapshot = unsafe { OwnedHandle::from_raw_handle(raw) };
        // SAFETY: plain data; dwSize is set as the API requires.
        let mut entry: THREADENTRY32 = unsafe { std::mem::zeroed() };
        entry.dwSize = std::mem::size_of::<THREADENTRY32>() as u32;
        // SAFETY: a valid snapshot and a sized entry, for each call.
        let mut found = unsafe { Thread32First(snapshot.as_raw_handle(), &mut entry) };
        while found != FALSE {
            if entry.th32OwnerProcessID == pid {
                // SAFETY: returns a new handle or null.
                let thread =
                    unsafe { OpenThread(THREAD_SUSPEND_RESUME, FALSE, entry.th32ThreadID) };
                if thread.is_null() {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: a handle just opened for us alone.
                let thread = unsafe { OwnedHandle::from_raw_handle(thread) };
                // SAFETY: a valid thread handle with THREAD_SUSPEND_RESUME.
                if unsafe { ResumeThread(thread.as_raw_handle()) } == u32::MAX {
                    return Err(io::Error::last_os_error());
                }
                return Ok(());
            }
            // SAFETY: as for Thread32First.
            found = unsafe { Thread32Next(snapshot.as_raw_handle(), &mut entry) };
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the command's suspended thread was not found",
        ))
    }

    /// The console sends ^C and ^Break to every process attached to it,
    /// COMMAND included: COMMAND decides what they do, and this process,
    /// whose end would end COMMAND, waits for COMMAND to exit, as on Unix. A
    /// handler routine, unlike ignoring the events outright, is not inherited
    /// by COMMAND. Best effort: without it ^C ends this process, and COMMAND
    /// with it, which breaks no promise.
    pub fn leave_interrupts_to_the_command() {
        unsafe extern "system" fn handler(event: u32) -> BOOL {
            if event == CTRL_C_EVENT || event == CTRL_BREAK_EVENT {
                TRUE
            } else {
                // Closing the console, logoff, shutdown: this process ends,
                // and COMMAND with it.
                FALSE
            }
        }
        // SAFETY: `handler` is a valid handler routine for the process's life.
        if unsafe { SetConsoleCtrlHandler(Some(handler), TRUE) } == FALSE {
            log::debug!(
                "^C will end the command at once: {}",
                io::Error::last_os_error()
            );
        }
    }

    fn check(result: BOOL) -> io::Result<()> {
        if result == FALSE {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
