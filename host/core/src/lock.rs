use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{
    Error, FALLBACK_POLL, ReleaseWatch, TemplateError, WaitSchedule, check_links, content, open,
    open_for_locking, sleep_or_watch, sys, template,
};

/// The fields every template may use.
const BUILTIN_FIELDS: [&str; 2] = ["pid", "hostname"];

/// An exclusive lock on a file, recording its holder in the file.
///
/// The lock is released when the value is dropped or [`released`](Self::release).
/// The file itself is never deleted: deleting it would let a waiter on the old
/// file and a newcomer on a new one both believe they hold the lock.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
    /// `" " + content + "\n"`, as written into the file.
    record: Option<String>,
    owner: u32,
    /// Shared with a child process through [`LockFile::share_with`]: the lock
    /// then lives as long as any process holding the file, so it is closed,
    /// never explicitly unlocked.
    shared: bool,
}

impl LockFile {
    /// Takes the lock at `path` with zc.lockfile's defaults: one try, and
    /// `" {pid}\n"` written into the file.
    pub fn lock(path: impl AsRef<Path>) -> Result<Self, Error> {
        LockOptions::new().lock(path)
    }

    /// What this holder wrote, without the leading space and the newline;
    /// `None` in no-content mode.
    pub fn content(&self) -> Option<&str> {
        self.record.as_deref().map(record_content)
    }

    /// The lock file's path, as it was given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Unlocks and closes the file. Dropping the value does the same.
    pub fn release(self) {}

    /// Lets the process that `command` starts inherit this lock, as flock(1)
    /// lets its command: the lock then stays held while that process, or
    /// anything it starts that keeps the descriptor, runs, even if this
    /// process is killed; and releasing here only closes this process's
    /// descriptor. Other children spawned meanwhile inherit nothing: only
    /// `command`'s child clears close-on-exec, after it forks.
    #[cfg(unix)]
    pub fn share_with(&mut self, command: &mut std::process::Command) {
        sys::inherit_in_child(&self.file, command);
        self.shared = true;
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // flock locks belong to the open file description, which a forked child
        // shares: only the process that took the lock may unlock it. Closing
        // alone never releases a lock that another process still shares.
        if self.owner == std::process::id() && !self.shared {
            let _ = sys::unlock(&self.file);
        }
    }
}

/// How to take a lock: the content to write, how long to wait, whether to log
/// failures.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("job.lock");
/// use std::time::Duration;
/// use lockfile_core::LockOptions;
///
/// let lock = LockOptions::new()
///     .content_template("{pid};{hostname}")
///     .wait(Duration::from_secs(3))
///     .lock(&path)?;
/// assert!(lock.content().unwrap().starts_with(&std::process::id().to_string()));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LockOptions {
    template: Option<Cow<'static, str>>,
    /// The template is content already rendered, written as it is.
    rendered: bool,
    wait: Duration,
    log_failures: bool,
    fields: Vec<(String, String)>,
    hostname: Option<String>,
}

impl Default for LockOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl LockOptions {
    /// zc.lockfile's defaults: template `{pid}`, one try, nothing logged.
    pub fn new() -> Self {
        Self {
            template: Some(Cow::Borrowed("{pid}")),
            rendered: false,
            wait: Duration::ZERO,
            log_failures: false,
            fields: Vec::new(),
            hostname: None,
        }
    }

    /// Writes `" " + template + "\n"` once locked. Fields: `{pid}`, `{hostname}`
    /// and those added with [`field`](Self::field); `{{` and `}}` are braces.
    pub fn content_template(mut self, template: impl Into<String>) -> Self {
        self.template = Some(Cow::Owned(template.into()));
        self.rendered = false;
        self
    }

    /// Writes `content` exactly as it is, braces included (`None`: no
    /// content): for backends, which receive the content already rendered
    /// ([`render_content`](Self::render_content)).
    pub fn rendered(content: Option<&str>) -> Self {
        let mut options = Self::new();
        options.template = content.map(|content| Cow::Owned(content.to_owned()));
        options.rendered = true;
        options
    }

    /// Locks without writing anything, as zc.lockfile's `SimpleLockFile` does:
    /// the file keeps whatever content it had.
    pub fn no_content(mut self) -> Self {
        self.template = None;
        self
    }

    /// Retries until `wait` has passed (yg.lockfile's timeout). Zero, the
    /// default, tries once.
    ///
    /// A waiter sleeps until the file is closed (on Linux, through a
    /// [`ReleaseWatch`]), which is when holders release: it takes the lock
    /// within microseconds of that. Otherwise it tries only every
    /// [`FALLBACK_POLL`] (for holders that unlock without closing, and file
    /// systems without notifications), and once more at the deadline. It
    /// makes only non-blocking tries, all on the calling thread, so once it
    /// has given up it cannot take the lock late.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// The wait set with [`wait`](Self::wait).
    pub fn wait_limit(&self) -> Duration {
        self.wait
    }

    /// Logs each failure at ERROR, as exclusive_control does:
    /// `Error locking file <path>; pid=<holder>`. Off by default, as in
    /// zc.lockfile since 1.3.
    pub fn log_failures(mut self, log: bool) -> Self {
        self.log_failures = log;
        self
    }

    /// Adds a template field, such as the `{plugin}` a host names its plugins by.
    pub fn field(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// Uses `hostname` for `{hostname}` instead of asking the system.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Takes the lock at `path`, creating the file if it is missing.
    pub fn lock(&self, path: impl AsRef<Path>) -> Result<LockFile, Error> {
        let path = path.as_ref();
        self.lock_with(path, || open_for_locking(path))
    }

    /// Like [`lock`](Self::lock), opening the file with `open`; `path` only
    /// names it in the lock and in errors. For hosts that confine paths to a
    /// directory of their own.
    pub fn lock_with(
        &self,
        path: impl Into<PathBuf>,
        open: impl FnOnce() -> io::Result<File>,
    ) -> Result<LockFile, Error> {
        self.prepare(path, open)?.lock()
    }

    /// Checks the template and renders the content, then opens the file with
    /// `open`: the building block for hosts that open files their own way (in
    /// a confined directory) or wait their own way (asynchronously).
    ///
    /// A bad template is reported before `open` is called, so it never leaves a
    /// file or a lock behind.
    pub fn prepare(
        &self,
        path: impl Into<PathBuf>,
        open: impl FnOnce() -> io::Result<File>,
    ) -> Result<PendingLock, Error> {
        let path = path.into();
        let record = self.render(&path)?;
        let file = open().map_err(|e| Error::io("open", &path, e))?;
        Ok(PendingLock {
            file,
            path,
            record,
            log_failures: self.log_failures,
            wait: self.wait,
        })
    }

    /// Checks the template and renders the content a holder records, without
    /// zc.lockfile's leading space and newline; `None` in no-content mode.
    /// `name` names the lock in errors. For backends that keep the record
    /// elsewhere than in a lock file (a database): the same template, fields
    /// and record rules as [`lock`](Self::lock).
    pub fn render_content(&self, name: &str) -> Result<Option<String>, Error> {
        Ok(self
            .render(Path::new(name))?
            .map(|record| record_content(&record).to_owned()))
    }

    /// Renders `" " + content + "\n"`, or `None` in no-content mode.
    fn render(&self, path: &Path) -> Result<Option<String>, Error> {
        let Some(template) = &self.template else {
            return Ok(None);
        };
        TemplateError::check_len(template)?;
        if self.rendered {
            // Checked as the record of the template it was rendered from.
            let record = format!(" {template}\n");
            TemplateError::check_record(template, &record)?;
            return Ok(Some(record));
        }
        let extended: Vec<&str>;
        let known: &[&str] = if self.fields.is_empty() {
            &BUILTIN_FIELDS
        } else {
            extended = BUILTIN_FIELDS
                .iter()
                .copied()
                .chain(self.fields.iter().map(|(name, _)| name.as_str()))
                .collect();
            &extended
        };
        let mut record = String::with_capacity(template.len() + 16);
        record.push(' ');
        template::render(template, known, &mut record, |name, out| {
            match name {
                "pid" => {
                    use std::fmt::Write as _;
                    // Writing to a String cannot fail.
                    let _ = write!(out, "{}", std::process::id());
                }
                "hostname" => match &self.hostname {
                    Some(hostname) => out.push_str(hostname),
                    None => out.push_str(
                        system_hostname()
                            .map_err(|e| Error::io("look up the hostname for", path, e))?,
                    ),
                },
                _ => {
                    let value = self.fields.iter().rev().find(|(field, _)| field == name);
                    out.push_str(value.map(|(_, v)| v.as_str()).unwrap_or_default());
                }
            }
            Ok::<_, Error>(())
        })?;
        record.push('\n');
        TemplateError::check_record(template, &record)?;
        Ok(Some(record))
    }
}

/// The content inside a record: without the leading space and the newline.
fn record_content(record: &str) -> &str {
    &record[1..record.len() - 1]
}

/// The hostname changes far less often than locks are taken: look it up once.
fn system_hostname() -> io::Result<&'static str> {
    static HOSTNAME: OnceLock<String> = OnceLock::new();
    if let Some(name) = HOSTNAME.get() {
        return Ok(name);
    }
    let name = hostname::get()?.to_string_lossy().into_owned();
    Ok(HOSTNAME.get_or_init(|| name))
}

/// A lock file that is open but not yet locked: try it, sleep your own way,
/// try again.
#[derive(Debug)]
pub struct PendingLock {
    file: File,
    path: PathBuf,
    record: Option<String>,
    log_failures: bool,
    wait: Duration,
}

/// The outcome of one [`PendingLock::try_lock`].
#[derive(Debug)]
pub enum Attempt {
    /// The lock is ours and the content is written.
    Taken(LockFile),
    /// Someone else holds it; try again later or turn it into an error.
    Held(PendingLock),
}

impl PendingLock {
    /// Takes the lock with one try, or waits as long as the options asked,
    /// sleeping on the calling thread between tries.
    pub fn lock(self) -> Result<LockFile, Error> {
        let mut pending = self;
        if pending.wait.is_zero() {
            return match pending.try_lock()? {
                Attempt::Taken(lock) => Ok(lock),
                Attempt::Held(pending) => Err(pending.into_error()),
            };
        }
        // Only non-blocking tries, all on this thread: once this returns, the
        // waiter can no longer take the lock (see the `wait` module). The watch
        // exists before the first try, so a release right after it is seen.
        let mut watch = pending.release_watch().ok();
        let mut schedule = WaitSchedule::new(pending.wait);
        loop {
            pending = match pending.try_lock()? {
                Attempt::Taken(lock) => return Ok(lock),
                Attempt::Held(pending) => pending,
            };
            let Some(sleep) = schedule.next_sleep() else {
                return Err(pending.into_error());
            };
            sleep_or_watch(&mut watch, sleep);
        }
    }

    /// One non-blocking try. On success writes the content at offset 0,
    /// truncates after it and returns the lock; if writing fails the lock is
    /// released and the error returned, so no half-made lock stays behind.
    pub fn try_lock(self) -> Result<Attempt, Error> {
        let locked = sys::try_lock(&self.file)
            .map_err(|e| Error::io("lock", &self.path, sys::explain(&self.file, e)))?;
        if !locked {
            return Ok(Attempt::Held(self));
        }
        // One stat for every check before the lock is used: the link rule
        // ([`check_links`]), the kind of file, and the size it had, to cut
        // what an older, longer record leaves after the new one.
        let links = sys::links(&self.file)
            .and_then(|links| open::refuse_links(&links).map(|()| links))
            .map_err(|e| Error::io("open", &self.path, e))?;
        if self.record.is_none() && !links.regular {
            // Without a record to write nothing would fail on a FIFO or a
            // device: refuse them here. (With one, the write refuses them.)
            let refused = sys::ensure_regular(&self.file);
            refused.map_err(|e| Error::io("lock", &self.path, e))?;
        }
        let lock = LockFile {
            file: self.file,
            path: self.path,
            record: self.record,
            owner: std::process::id(),
            shared: false,
        };
        if let Some(record) = &lock.record {
            let len = record.len() as u64;
            // A file no longer than the record is left as it is: the stat
            // above costs far less than a truncation, which changes the inode
            // even when the size stays (and a waiter that has just taken a
            // lock pays it before it returns).
            let written = sys::write_at_start(&lock.file, record.as_bytes()).and_then(|()| {
                if links.len > len {
                    lock.file.set_len(len)
                } else {
                    Ok(())
                }
            });
            if let Err(error) = written {
                // A full disk can take part of the record: leave no half of
                // one for readers (shrinking needs no space). `lock` unlocks
                // as it is dropped.
                let _ = lock.file.set_len(0);
                let error = sys::explain(&lock.file, error);
                return Err(Error::io("write the holder into", &lock.path, error));
            }
        }
        Ok(Attempt::Taken(lock))
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long the options asked to wait.
    pub fn wait_limit(&self) -> Duration {
        self.wait
    }

    /// A [`ReleaseWatch`] on this file, for hosts that wait their own way:
    /// create it before the first [`try_lock`](Self::try_lock), try again
    /// each time it reports a close, and at least every [`FALLBACK_POLL`].
    /// Logs why at DEBUG if it fails (no inotify, no `/proc`, too many
    /// instances): the caller then polls alone.
    pub fn release_watch(&self) -> io::Result<ReleaseWatch> {
        ReleaseWatch::new(&self.file).inspect_err(|error| {
            log::debug!(
                target: "lockfile",
                "no release notifications for {}: {error}; polling every {FALLBACK_POLL:?}",
                self.path.display()
            );
        })
    }

    /// Gives up: [`Error::Locked`] after a single try, [`Error::TimedOut`] when
    /// the options asked to wait, with the holder's content read from the file.
    /// Logs the failure if the options asked for it.
    pub fn into_error(self) -> Error {
        // The holder's record is read only from a file the link rule allows:
        // a hard link must not show another file's first line.
        if let Err(error) = check_links(&self.file) {
            return Error::io("open", self.path, error);
        }
        let holder = content::read_content_from(&self.file).ok().flatten();
        let error = if self.wait.is_zero() {
            Error::Locked {
                path: self.path,
                holder,
            }
        } else {
            Error::TimedOut {
                path: self.path,
                holder,
                waited: self.wait,
            }
        };
        if self.log_failures {
            error.log_failure();
        }
        error
    }
}
