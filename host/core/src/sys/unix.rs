//! Unix: flock(2) on the whole file, through std; the record read and written
//! at byte 0; inotify on Linux for waits.

use std::fs::{File, TryLockError};
use std::io;

/// Takes the exclusive lock without waiting. `Ok(false)`: someone else holds it.
///
/// On Unix std uses `flock(2)`, which locks the open file description: a second
/// open of the same path fails even in the same process, as zc.lockfile's own
/// tests require (fcntl record locks would not).
pub(crate) fn try_lock(file: &File) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(error)) => Err(error),
    }
}

/// Drops the lock explicitly, as zc.lockfile's `close()` does.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    file.unlock()
}

/// Writes `bytes` at offset 0 whatever the file position.
pub(crate) fn write_at_start(file: &File, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, 0)
}

/// Reads from offset 0 into `buf` with one pread, returning how many bytes
/// were read. Holder records are one short line: one read returns all of it,
/// and a failed try pays for no second call to find the end of the file.
pub(crate) fn read_at_start(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    loop {
        match file.read_at(buf, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// Makes the child that `command` forks keep `file` open across its exec
/// (it is close-on-exec everywhere else), so the child holds the lock too.
pub(crate) fn inherit_in_child(file: &File, command: &mut std::process::Command) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = file.as_raw_fd();
    // SAFETY: runs in the forked child before exec, and calls only fcntl,
    // which is async-signal-safe; `fd` stays open in the parent until the
    // child is spawned, because `file` outlives the spawn.
    unsafe {
        command.pre_exec(move || {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags == -1 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sets the flags of every open of a lock file by path: `O_NOFOLLOW`, so a
/// symbolic link in the file's place fails (ELOOP) instead of being followed;
/// and `O_NONBLOCK`, because a FIFO put where a lock file should be would
/// otherwise block an open (for reading, or elsewhere for writing) until a
/// peer comes. Regular files ignore the latter.
pub(crate) fn no_follow(options: &mut std::fs::OpenOptions) {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
}

/// How an open file is linked, from one fstat: how many names a regular
/// file has (symbolic links are refused as they are opened; other kinds of
/// file count as one name: a directory's link count says nothing about other
/// names), its kind and its size.
pub(crate) fn links(file: &File) -> io::Result<super::Links> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata()?;
    Ok(super::Links {
        reparse_point: false,
        names: if meta.is_file() { meta.nlink() } else { 1 },
        regular: meta.is_file(),
        len: meta.len(),
    })
}

/// Whether someone holds a lock on `file` now, and which process: from
/// /proc/locks, where flock(2) locks are listed by device and inode.
#[cfg(target_os = "linux")]
pub(crate) fn lock_state(file: &File) -> crate::Locked {
    use std::os::unix::fs::MetadataExt;
    let (Ok(meta), Ok(locks)) = (file.metadata(), std::fs::read_to_string("/proc/locks")) else {
        return crate::Locked::Unknown;
    };
    let file_id = format!(
        "{:02x}:{:02x}:{}",
        libc::major(meta.dev()),
        libc::minor(meta.dev()),
        meta.ino()
    );
    match proc_locks_holder(&locks, &file_id) {
        Some(pid) => crate::Locked::Yes(Some(format!("pid {pid}"))),
        None => crate::Locked::No,
    }
}

/// No lock table to read on other Unix systems.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lock_state(_: &File) -> crate::Locked {
    crate::Locked::Unknown
}

/// Finds the holder of `file_id` (`MAJOR:MINOR:INODE`, hex device numbers) in
/// /proc/locks. Lines with `->` are waiters, not holders.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn proc_locks_holder(locks: &str, file_id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, kind, _, _, pid, id, ..] if *kind != "->" && *id == file_id => pid.parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::proc_locks_holder;

    #[test]
    fn finds_the_holder_and_skips_waiters() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 fe:00:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 5018 fe:00:10010786 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 6000 fe:00:10010786 0 EOF\n";
        assert_eq!(proc_locks_holder(locks, "fe:00:10010786"), Some(5018));
        assert_eq!(proc_locks_holder(locks, "fe:00:1"), None);
        let waiting_only = "2: -> FLOCK  ADVISORY  WRITE 6000 fe:00:5 0 EOF\n";
        assert_eq!(proc_locks_holder(waiting_only, "fe:00:5"), None);
    }
}

/// inotify, which tells a waiter when the lock file is closed: every holder we
/// know releases by closing (zc.lockfile's `close()`, flock(1)'s exit, our own
/// drop). These are the only OS calls of [`crate::ReleaseWatch`]; without
/// inotify (other systems) there is no watch, and waits poll.
///
/// Plain `libc` rather than the `inotify` crate: the watch needs five calls
/// (`inotify_init1`, `inotify_add_watch`, `inotify_rm_watch`, `ppoll`, `read`),
/// the crate adds no timeout to its blocking read, so `ppoll` would be ours
/// anyway, and it closes its instance where it is dropped, which is what must
/// not happen here (see [`watch::Watch`]); `libc` is already a dependency.
#[cfg(target_os = "linux")]
pub(crate) mod watch {
    use std::collections::VecDeque;
    use std::ffi::CString;
    use std::fs::File;
    use std::io;
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
    use std::time::Duration;

    /// The events that mean "someone closed the file": the last close of a
    /// holder's descriptor is where flock locks are released.
    const CLOSES: u32 = libc::IN_CLOSE_WRITE | libc::IN_CLOSE_NOWRITE;

    /// An inotify instance watching one file for closes.
    ///
    /// Dropping it sets the instance aside, still watching, for reuse: a new
    /// watch takes a spare if there is one, else removes the old watch and
    /// empties the queue of a set-aside one in line; when more than one is
    /// set aside, a background thread does that and keeps up to [`SPARE_MAX`]
    /// spares, closing the rest ([`Recycler::recycle_later`]). Closing is what
    /// must not happen in line: the kernel's close of an instance that had a
    /// watch waits for the marks' destruction (an SRCU grace period after a
    /// delayed work item), 10-25 ms on a 2-core VM, which would be added to
    /// every handover and would block an async executor thread. Nor may the
    /// closes pile up: instances waiting to be closed count towards the
    /// user's `fs.inotify.max_user_instances` (128 by default), and 300 quick
    /// waits in a row had 119 open at once, so that new watches failed and
    /// waits fell back to the slow poll (one waiter of eight took 1.8 s).
    /// Reusing instances needs no close at all.
    #[derive(Debug)]
    pub(crate) struct Watch {
        /// `None` only once dropped.
        inotify: Option<OwnedFd>,
        wd: libc::c_int,
    }

    impl AsFd for Watch {
        fn as_fd(&self) -> BorrowedFd<'_> {
            self.inotify.as_ref().expect("open until dropped").as_fd()
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            if let Some(inotify) = self.inotify.take() {
                recycle(Spent {
                    inotify,
                    wd: self.wd,
                });
            }
        }
    }

    /// How many emptied instances are kept for reuse: as many as a process
    /// usually has waits at once. Each counts towards the user's
    /// `max_user_instances` while it waits to be reused.
    pub(crate) const SPARE_MAX: usize = 8;

    /// How many spent watches may wait, still watching, without the thread
    /// being woken to empty them: the one a process's last wait leaves. With
    /// [`SPARE_MAX`] spares, a process keeps at most 9 instances beyond its
    /// live watches (more after a burst of drops, until the thread has run).
    const SPENT_UNTOLD: usize = 1;

    /// A watch no longer wanted: its instance and the watch in it.
    struct Spent {
        inotify: OwnedFd,
        wd: libc::c_int,
    }

    impl Spent {
        /// Removes the watch and empties the queue (removing queues an
        /// IN_IGNORED event, and closes may have come meanwhile): the
        /// instance, fit for the next watch; `None` if it failed (closed).
        fn empty(self) -> Option<OwnedFd> {
            // SAFETY: plain call on a descriptor we own. Fails harmlessly if
            // the kernel already removed the watch (the file was deleted).
            unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), self.wd) };
            drain_fd(self.inotify.as_fd()).ok()?;
            Some(self.inotify)
        }
    }

    /// Spent watches waiting to be emptied, and emptied instances waiting to
    /// be reused; one background thread empties them.
    struct Recycler {
        spent: Mutex<VecDeque<Spent>>,
        more_spent: Condvar,
        spares: Mutex<Vec<OwnedFd>>,
    }

    impl Recycler {
        /// The process's recycler, its thread started on first use. Called when
        /// a watch is created, not only when one is dropped: starting a thread
        /// takes a few hundred microseconds, which must be spent while the
        /// waiter waits, not between the release it was woken for and its
        /// return with the lock (measured: it was most of a cross-process
        /// handover). `None` if the thread could not be started.
        fn get() -> Option<&'static Recycler> {
            static RECYCLER: OnceLock<Recycler> = OnceLock::new();
            static STARTED: OnceLock<bool> = OnceLock::new();
            let recycler = RECYCLER.get_or_init(|| Recycler {
                spent: Mutex::new(VecDeque::new()),
                more_spent: Condvar::new(),
                spares: Mutex::new(Vec::new()),
            });
            let started = STARTED.get_or_init(|| {
                std::thread::Builder::new()
                    .name("lockfile-inotify-close".into())
                    .spawn(move || {
                        lower_priority();
                        recycler.run()
                    })
                    .inspect_err(
                        |e| log::debug!(target: "lockfile", "recycling watches in line: {e}"),
                    )
                    .is_ok()
            });
            started.then_some(recycler)
        }

        /// The thread: empties spent watches as they come.
        fn run(&self) {
            loop {
                let spent = {
                    let mut queue = lock(&self.spent);
                    loop {
                        match queue.pop_front() {
                            Some(spent) => break spent,
                            None => {
                                queue = self
                                    .more_spent
                                    .wait(queue)
                                    .unwrap_or_else(PoisonError::into_inner)
                            }
                        }
                    }
                };
                if let Some(instance) = spent.empty() {
                    self.keep(instance);
                }
            }
        }

        /// Queues `spent`: a waiter that has just taken the lock does not
        /// spend the tens of microseconds removing a watch takes. Nor does it
        /// wake the thread for the first spent watch: the waker pays for the
        /// wake-up (on a VM, an interrupt to the other, idle CPU), and that was
        /// 20-50 µs of a ~100 µs cross-process handover (ftrace, and the
        /// benchmark's median with and without). Up to [`SPENT_UNTOLD`] wait
        /// for a later watch to reuse them ([`Recycler::reuse`]); one more
        /// (two drops with no watch made in between) wakes the thread. Until
        /// emptied, an instance may queue its file's close events: at most the
        /// kernel's `max_queued_events`, identical ones in a row merged.
        fn recycle_later(&self, spent: Spent) {
            let queued = {
                let mut queue = lock(&self.spent);
                queue.push_back(spent);
                queue.len()
            };
            if queued > SPENT_UNTOLD {
                self.more_spent.notify_one();
            }
        }

        /// Wakes the thread if more than [`SPENT_UNTOLD`] spent watches are
        /// left after a new watch took its instance (a spare, when spent ones
        /// were queued meanwhile).
        fn wake_if_many_spent(&self) {
            if lock(&self.spent).len() > SPENT_UNTOLD {
                self.more_spent.notify_one();
            }
        }

        /// Keeps an emptied instance as a spare, or closes it if there are
        /// enough.
        fn keep(&self, instance: OwnedFd) {
            let mut spares = lock(&self.spares);
            if spares.len() < SPARE_MAX {
                spares.push(instance);
            }
        }

        /// A spare, or else a spent watch's instance emptied here (the one
        /// the last wait set aside, or one of those made faster than the
        /// thread empties them), reused rather than piled up.
        fn reuse(&self) -> Option<OwnedFd> {
            if let Some(spare) = lock(&self.spares).pop() {
                return Some(spare);
            }
            let spent = lock(&self.spent).pop_front()?;
            spent.empty()
        }
    }

    /// Gives the calling thread the lowest priority (nice 19; on Linux the
    /// nice value is per thread). When it is woken as a waiter returns with
    /// the lock (two spent watches in a row), at normal priority it preempted
    /// that waiter on its own CPU for its whole emptying (~25 µs of a ~90 µs
    /// cross-process handover, measured with ftrace's sched_switch); at nice 19
    /// a woken thread does not preempt a nice-0 one. Not `SCHED_IDLE`: the
    /// thread takes the mutexes waiters take, and a `SCHED_IDLE` thread
    /// preempted while holding one can wait far longer on a busy CPU, and the
    /// waiters with it. Failure leaves it at normal priority, only slower.
    fn lower_priority() {
        // SAFETY: plain call; `who` 0 is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
            log::debug!(
                target: "lockfile",
                "recycling thread stays at normal priority: {}",
                io::Error::last_os_error()
            );
        }
    }

    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Recycles `spent` in the background, or here if there is no thread.
    fn recycle(spent: Spent) {
        match Recycler::get() {
            Some(recycler) => recycler.recycle_later(spent),
            None => drop(spent.empty()),
        }
    }

    /// A reused instance, or a new non-blocking, close-on-exec one.
    fn instance() -> io::Result<OwnedFd> {
        let recycler = Recycler::get();
        let reused = recycler.and_then(Recycler::reuse);
        if let Some(recycler) = recycler {
            recycler.wake_if_many_spent();
        }
        if let Some(instance) = reused {
            return Ok(instance);
        }
        // SAFETY: takes no pointers; returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just created for us alone.
        Ok(unsafe { OwnedFd::from_raw_fd(raw) })
    }

    /// An inotify instance (a spare one if there is one) watching `file`'s
    /// inode for closes.
    ///
    /// The watch is added through `/proc/self/fd/<fd>`: `inotify_add_watch`
    /// follows that magic link to the open file's inode, so it works for files
    /// whose path we never knew (opened beneath a cap-std directory), and stays
    /// on the right inode if the path was renamed or replaced since. Fails
    /// (and the caller falls back to polling) without `/proc`, or once the
    /// user's `fs.inotify.max_user_instances` (128 by default) are in use.
    pub(crate) fn watch_closes(file: &File) -> io::Result<Watch> {
        let inotify = instance()?;
        let link = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .expect("a formatted number has no NUL");
        // SAFETY: both descriptors are open and `link` is NUL-terminated.
        let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), link.as_ptr(), CLOSES) };
        if wd < 0 {
            let error = io::Error::last_os_error();
            // It has no watch and an empty queue: still fit for reuse.
            if let Some(recycler) = Recycler::get() {
                recycler.keep(inotify);
            }
            return Err(error);
        }
        Ok(Watch {
            inotify: Some(inotify),
            wd,
        })
    }

    /// Sleeps until `watch` is readable or `timeout` has passed; `Ok(true)` if
    /// it is readable. A signal ends the sleep early with `Ok(false)`. `ppoll`
    /// rather than `poll`: its timeout has nanoseconds, so a wait ends on its
    /// deadline rather than up to a millisecond after it.
    pub(crate) fn wait_readable(watch: &Watch, timeout: Duration) -> io::Result<bool> {
        let mut pollfd = libc::pollfd {
            fd: watch.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timespec = libc::timespec {
            // Waits are at most one fallback interval: far below time_t's range.
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos().into(),
        };
        // SAFETY: one valid pollfd, a valid timespec, no signal mask.
        let ready = unsafe { libc::ppoll(&mut pollfd, 1, &timespec, std::ptr::null()) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(error),
            };
        }
        Ok(ready > 0)
    }

    /// Reads every pending event without blocking; returns how many there were.
    pub(crate) fn drain(watch: &Watch) -> io::Result<usize> {
        drain_fd(watch.as_fd())
    }

    /// [`drain`] for any inotify instance.
    fn drain_fd(inotify: BorrowedFd<'_>) -> io::Result<usize> {
        /// inotify_event records are read whole and 4-aligned; 4 KiB holds
        /// 256 of the name-less events a watch on a file produces.
        #[repr(C, align(8))]
        struct Buffer([u8; 4096]);
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        /// The longest name an event can carry, NUL and padding included.
        const NAME_MAX_PADDED: usize = 256;

        let fd = inotify.as_raw_fd();
        let mut buffer = Buffer([0; 4096]);
        let mut events = 0;
        loop {
            // SAFETY: writes at most the buffer's length into it.
            let read = unsafe { libc::read(fd, buffer.0.as_mut_ptr().cast(), buffer.0.len()) };
            if read < 0 {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock => return Ok(events),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(error),
                }
            }
            let read = read as usize;
            if read == 0 {
                return Ok(events);
            }
            let mut at = 0;
            while at + HEADER <= read {
                // The `len` field (name length) is the header's last u32.
                let len = u32::from_ne_bytes(
                    buffer.0[at + HEADER - 4..at + HEADER]
                        .try_into()
                        .expect("four bytes"),
                );
                at += HEADER + len as usize;
                events += 1;
            }
            if read + HEADER + NAME_MAX_PADDED <= buffer.0.len() {
                // Even the largest event would have fitted: the queue is empty. A
                // read more would only say so (EAGAIN), a syscall a
                // handover need not pay for. An event queued meanwhile
                // leaves the descriptor readable, and wakes the next wait.
                return Ok(events);
            }
        }
    }
}
