//! COMMAND never outlives the lock, on Windows.
//!
//! LockFileEx locks belong to the handle and the process that took them, and
//! the system releases them when that process closes its handle or ends:
//! COMMAND cannot share the lock as it does on Unix. So COMMAND, and
//! everything it starts, is made to end first: it runs in a job object that
//! the system ends when its last handle, ours, closes, which happens when this
//! process ends however it ends (TerminateProcess included); and when COMMAND
//! exits, whatever it left running in the job is ended before the lock is
//! released.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::os::windows::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use windows_sys::Win32::Foundation::{FALSE, INVALID_HANDLE_VALUE, TRUE};
use windows_sys::Win32::System::Console::{CTRL_BREAK_EVENT, CTRL_C_EVENT, SetConsoleCtrlHandler};
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
            let thread = unsafe { OpenThread(THREAD_SUSPEND_RESUME, FALSE, entry.th32ThreadID) };
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
