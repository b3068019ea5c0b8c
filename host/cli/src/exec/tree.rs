//! Everything COMMAND started, on Linux, for a lock COMMAND cannot hold
//! itself (a database's): this process becomes the reaper of its orphaned
//! descendants (`PR_SET_CHILD_SUBREAPER`), so a child that `sh -c` left in
//! the background, or a daemon that called setsid(2), stays a descendant of
//! this process, and is signalled with COMMAND: on a loss, and once COMMAND
//! has exited, before the lock is released. Nothing COMMAND started is then
//! left running without the lock.
//!
//! Descendants are found by their parent pids in `/proc`; the walk repeats
//! until none is left, so a process forked during one walk is found by the
//! next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Makes this process the reaper of its orphaned descendants. Logged, not
/// fatal: without it, COMMAND's own process is still signalled.
pub fn adopt_orphans() {
    // SAFETY: prctl with integer arguments has no memory-safety conditions.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        log::warn!(
            "what the command leaves running may outlive the lock: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Sends `signal` to every living descendant of this process; returns how
/// many there were.
pub fn signal_all(signal: libc::c_int) -> usize {
    let descendants = living_descendants();
    for &pid in &descendants {
        // SAFETY: kill(2) has no memory-safety preconditions. A descendant
        // that exited since the walk is a zombie of ours or of another
        // descendant, so its pid is not reused yet.
        unsafe { libc::kill(pid, signal) };
    }
    descendants.len()
}

/// Ends every descendant of this process once COMMAND (already reaped) is
/// gone: SIGTERM, up to `grace` for them to exit, then SIGKILL; returns when
/// none is left, reaping those that became this process's children.
pub fn end_all(grace: Duration) {
    if signal_all(libc::SIGTERM) == 0 {
        return;
    }
    log::info!("ending what the command left running");
    let deadline = Instant::now() + grace;
    loop {
        reap_orphans();
        if living_descendants().is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    while signal_all(libc::SIGKILL) > 0 {
        std::thread::sleep(Duration::from_millis(5));
        reap_orphans();
    }
    reap_orphans();
}

/// Reaps this process's exited children (adopted orphans): called only once
/// COMMAND itself has been reaped, so no status of its is taken here.
fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// The pids of this process's descendants that have not exited.
fn living_descendants() -> Vec<libc::pid_t> {
    let me = std::process::id() as libc::pid_t;
    let mut children: HashMap<libc::pid_t, Vec<(libc::pid_t, bool)>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some((parent, alive)) = parent_of(pid) {
            children.entry(parent).or_default().push((pid, alive));
        }
    }
    let mut found = Vec::new();
    let mut next = vec![me];
    while let Some(parent) = next.pop() {
        for &(child, alive) in children.get(&parent).map(Vec::as_slice).unwrap_or_default() {
            next.push(child);
            if alive {
                found.push(child);
            }
        }
    }
    found
}

/// `pid`'s parent, and whether it has not exited (a zombie has), from
/// `/proc/PID/stat`: `pid (comm) state ppid ...`, where comm may hold
/// spaces and parentheses.
fn parent_of(pid: libc::pid_t) -> Option<(libc::pid_t, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((parent, state != "Z" && state != "X"))
}
