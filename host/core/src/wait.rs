//! Waiting for a lock without polling it.
//!
//! flock(2) has no timeout, and a blocking `flock` in a helper thread cannot be
//! called off: once its caller gave up, it would take the lock anyway and hold
//! it for nobody. So a waiter only ever makes non-blocking tries on its own
//! thread, and the question is when to make them.
//!
//! Every holder we know releases by closing the file: zc.lockfile's `close()`,
//! flock(1) when its command exits, our own drop, any process that dies. On
//! Linux a [`ReleaseWatch`] (inotify) wakes the waiter on each close of the
//! file, so a release is handed over in microseconds, and a waiter behind a
//! long holder costs nothing: it sleeps until something happens. A holder that
//! unlocks and keeps the file open, or a file system that sends no events (NFS
//! and other network file systems, for processes on other machines), is still
//! noticed by a slow poll every [`FALLBACK_POLL`]. Elsewhere the slow poll is
//! all there is.
//!
//! One race is left to the poll: a holder that releases by closing alone
//! (flock(1), a process that exits) has its close event queued just before the
//! kernel drops its lock, so a waiter that tried in between would find the
//! lock still held and get it at the next poll. Waking a thread takes longer
//! than that gap: in 800 handovers from exiting processes, under load, no
//! first try after the event failed. Our own drop and zc.lockfile's `close()`
//! unlock before they close, so they have no such gap.

use std::fs::File;
use std::io;
use std::time::{Duration, Instant};

use crate::sys::watch;

/// How soon a waiter first tries the lock again when nothing tells it of a
/// release: a holder that unlocks without closing, a file system without
/// inotify events, or a system without inotify. 50 ms is the interval
/// yg.lockfile and Python's filelock poll at. The interval then doubles up to
/// [`FALLBACK_POLL_MAX`].
pub const FALLBACK_POLL: Duration = Duration::from_millis(50);

/// The longest the fallback poll grows to. Releases that close the file are
/// seen at once whatever the poll; this bounds how late the others are seen,
/// and keeps a long wait cheap (the README's "cost of waiting" measures it).
pub const FALLBACK_POLL_MAX: Duration = Duration::from_millis(500);

/// The fallback poll's intervals: [`FALLBACK_POLL`], doubling up to
/// [`FALLBACK_POLL_MAX`].
#[derive(Debug, Clone)]
pub(crate) struct FallbackPoll {
    next: Duration,
}

impl FallbackPoll {
    /// Starts at [`FALLBACK_POLL`].
    pub(crate) fn new() -> Self {
        Self {
            next: FALLBACK_POLL,
        }
    }

    /// The next interval to sleep at most before trying again.
    pub(crate) fn next_interval(&mut self) -> Duration {
        let interval = self.next;
        self.next = (self.next * 2).min(FALLBACK_POLL_MAX);
        interval
    }
}

/// When a waiter tries next: its deadline and the fallback poll, the
/// arithmetic every wait loop shares (on a thread, on a runtime).
///
/// ```
/// use std::time::Duration;
/// use lockfile_core::{FALLBACK_POLL, WaitSchedule};
///
/// let mut schedule = WaitSchedule::new(Duration::from_secs(60));
/// assert_eq!(schedule.next_sleep(), Some(FALLBACK_POLL));
/// let mut over = WaitSchedule::new(Duration::ZERO);
/// assert_eq!(over.next_sleep(), None, "no time left: give up");
/// ```
#[derive(Debug, Clone)]
pub struct WaitSchedule {
    /// `None`: a wait too long for the clock (`Duration::MAX`), never over.
    deadline: Option<Instant>,
    poll: FallbackPoll,
}

impl WaitSchedule {
    /// A wait of at most `wait` from now.
    pub fn new(wait: Duration) -> Self {
        Self {
            deadline: Instant::now().checked_add(wait),
            poll: FallbackPoll::new(),
        }
    }

    /// How long to sleep (or wait for a release) before the next try: the
    /// next fallback interval, but never past the deadline, so that the last
    /// try is made on it. `None` once the deadline has passed: give up.
    pub fn next_sleep(&mut self) -> Option<Duration> {
        let left = match self.deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => FALLBACK_POLL_MAX,
        };
        (!left.is_zero()).then(|| left.min(self.poll.next_interval()))
    }
}

/// Sleeps at most `sleep`, waking early when `watch` sees the lock file
/// closed; without a watch (none could be made) it just sleeps. A watch that
/// fails is dropped, so the wait polls from then on rather than spinning on
/// a broken watch. The step between two tries of every synchronous wait.
pub fn sleep_or_watch(watch: &mut Option<ReleaseWatch>, sleep: Duration) {
    match watch {
        Some(releases) => {
            if let Err(error) = releases.wait(sleep) {
                log::debug!(target: "lockfile", "waits poll: {error}");
                *watch = None;
            }
        }
        None => std::thread::sleep(sleep),
    }
}

/// Wakes a waiter when the lock file is closed, which is when holders release.
///
/// Created from the waiter's own open file, *before* its first try: a release
/// between a failed try and the watch's creation would otherwise go unseen.
/// Each wake-up is only a hint: the waiter must still make a real non-blocking
/// try, and wait again if it fails. A close that is not a release (a failed
/// try of another process, a reader) wakes it for nothing; an unlock without a
/// close wakes nobody, which is why waits also poll every [`FALLBACK_POLL`].
///
/// On Linux the watch is an inotify instance that implements [`AsFd`] and
/// [`AsRawFd`](std::os::fd::AsRawFd): async hosts register it with their
/// reactor (tokio's `AsyncFd`), wait for it to become readable, and
/// [`drain`](Self::drain) it. Elsewhere [`new`](Self::new) fails with
/// [`io::ErrorKind::Unsupported`] and waits rely on the poll alone.
///
/// Dropping it takes microseconds: the inotify instance is set aside, still
/// watching, for the next watch of the process to reuse. A background thread
/// (started with the first watch, at the lowest priority) is woken only when a
/// second one is set aside before a watch reuses the first; it empties them and
/// closes those beyond 8 spares. Nothing is closed in line: the kernel's close
/// of an instance that had a watch waits for an RCU grace period (10-25 ms
/// measured), which would delay handovers and block async executors, and
/// closes that pile up exhaust the user's inotify instances. So a process
/// keeps up to 9 instances beyond its live watches (more after many waits end
/// at once, until the thread has run), each counting towards the user's
/// `fs.inotify.max_user_instances`. Remove the descriptor from your own
/// `epoll` set before dropping the watch (tokio's `AsyncFd` does): a
/// level-triggered registration would stay ready while it is set aside.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("job.lock");
/// use std::time::Duration;
/// use lockfile_core::{FALLBACK_POLL, ReleaseWatch};
///
/// let file = std::fs::File::options().read(true).write(true).create(true).open(&path)?;
/// # #[cfg(target_os = "linux")] {
/// let mut watch = ReleaseWatch::new(&file)?;
/// drop(std::fs::File::open(&path)?); // someone closes the file
/// assert!(watch.wait(FALLBACK_POLL)?);
/// assert!(!watch.wait(Duration::from_millis(1))?, "each close wakes once");
/// # }
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
///
/// [`AsFd`]: std::os::fd::AsFd
#[derive(Debug)]
pub struct ReleaseWatch {
    inotify: watch::Watch,
}

impl ReleaseWatch {
    /// Watches the file that `file` is open on for closes, by anyone.
    ///
    /// Works for files whose path is unknown (opened beneath a cap-std
    /// directory). Fails where there is no inotify or no `/proc`, and when the
    /// user's inotify instances (`fs.inotify.max_user_instances`, 128 by
    /// default) are all in use: callers then fall back to polling.
    pub fn new(file: &File) -> io::Result<Self> {
        watch::watch_closes(file).map(|inotify| Self { inotify })
    }

    /// Sleeps until the file is closed by someone or `timeout` has passed, and
    /// consumes the events: `Ok(true)` if woken by a close. May also end early
    /// with `Ok(false)` (a signal); callers try the lock either way.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
        Ok(watch::wait_readable(&self.inotify, timeout)? && self.drain()? > 0)
    }

    /// Consumes the events already pending, without waiting, and returns how
    /// many there were (0: the file was not closed since the last wait or
    /// drain). For async hosts once their reactor reports the watch readable.
    pub fn drain(&mut self) -> io::Result<usize> {
        watch::drain(&self.inotify)
    }
}

#[cfg(target_os = "linux")]
impl std::os::fd::AsFd for ReleaseWatch {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.inotify)
    }
}

#[cfg(target_os = "linux")]
impl std::os::fd::AsRawFd for ReleaseWatch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(&self.inotify).as_raw_fd()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::fs::{self, File};
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_fallback_poll_doubles_up_to_its_maximum() {
        let mut poll = FallbackPoll::new();
        assert_eq!(poll.next_interval(), FALLBACK_POLL);
        assert_eq!(poll.next_interval(), FALLBACK_POLL * 2);
        assert!((0..10).all(|_| poll.next_interval() <= FALLBACK_POLL_MAX));
        assert_eq!(poll.next_interval(), FALLBACK_POLL_MAX);
    }

    const LIVENESS: Duration = Duration::from_secs(5);

    fn lock_file() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        (dir, path, file)
    }

    #[test]
    fn nothing_happens_nothing_wakes() {
        let (_dir, _path, file) = lock_file();
        let mut watch = ReleaseWatch::new(&file).unwrap();
        assert!(!watch.wait(Duration::from_millis(20)).unwrap());
        assert_eq!(watch.drain().unwrap(), 0);
    }

    #[test]
    fn a_close_wakes_once() {
        let (_dir, path, file) = lock_file();
        let mut watch = ReleaseWatch::new(&file).unwrap();
        drop(File::open(&path).unwrap());
        assert!(watch.wait(LIVENESS).unwrap());
        assert!(!watch.wait(Duration::from_millis(20)).unwrap());
    }

    /// The watch is added through /proc/self/fd/N: it follows the open file
    /// (the inode), not a path, so a file opened through cap-std, whose path
    /// we never see, is watched all the same. Renaming the file shows it.
    #[test]
    fn the_watch_follows_the_open_file_not_its_path() {
        let (dir, path, file) = lock_file();
        let mut watch = ReleaseWatch::new(&file).unwrap();
        let moved = dir.path().join("moved");
        fs::rename(&path, &moved).unwrap();
        // Another file at the old path is not watched.
        drop(File::create(&path).unwrap());
        assert!(!watch.wait(Duration::from_millis(20)).unwrap());
        drop(File::open(&moved).unwrap());
        assert!(watch.wait(LIVENESS).unwrap());
    }

    #[test]
    fn a_close_in_another_process_wakes() {
        let (_dir, path, file) = lock_file();
        let mut watch = ReleaseWatch::new(&file).unwrap();
        let status = std::process::Command::new("cat")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(watch.wait(LIVENESS).unwrap());
    }

    #[test]
    fn closes_pile_up_until_drained() {
        let (_dir, path, file) = lock_file();
        let mut watch = ReleaseWatch::new(&file).unwrap();
        drop(File::open(&path).unwrap());
        drop(File::options().write(true).open(&path).unwrap());
        // inotify merges identical events in a row: one or two.
        assert!(watch.drain().unwrap() >= 1);
        assert_eq!(watch.drain().unwrap(), 0);
    }

    /// Why waits also poll: unlocking without closing sends no event.
    #[test]
    fn an_unlock_without_a_close_wakes_nobody() {
        let (_dir, path, file) = lock_file();
        let holder = File::options().read(true).write(true).open(&path).unwrap();
        let mut watch = ReleaseWatch::new(&file).unwrap();
        holder.lock().unwrap();
        holder.unlock().unwrap();
        assert!(!watch.wait(Duration::from_millis(50)).unwrap());
        assert_eq!(watch.drain().unwrap(), 0);
    }
}
