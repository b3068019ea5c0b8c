use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use wasmtime::component::ResourceTable;

/// What one plugin instance may lock: its lock directory, its name, its limits.
///
/// Owned by the store's data, one per plugin instance; build it with
/// [`LockfileCtx::builder`].
#[derive(Debug)]
pub struct LockfileCtx {
    pub(crate) dir: Dir,
    pub(crate) plugin: String,
    pub(crate) max_locks: u32,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) log_failures: bool,
    pub(crate) hostname: Option<String>,
    pub(crate) live_locks: u32,
}

impl LockfileCtx {
    /// The default for [`LockfileCtxBuilder::max_locks`].
    pub const DEFAULT_MAX_LOCKS: u32 = 64;

    /// Starts a context whose plugin may lock files beneath `lock_dir` only.
    pub fn builder(lock_dir: impl Into<PathBuf>) -> LockfileCtxBuilder {
        LockfileCtxBuilder {
            lock_dir: lock_dir.into(),
            plugin: String::new(),
            max_locks: Self::DEFAULT_MAX_LOCKS,
            max_wait: None,
            log_failures: false,
            hostname: None,
        }
    }

    /// How many lock handles the plugin holds now.
    pub fn live_locks(&self) -> u32 {
        self.live_locks
    }
}

/// Configures a [`LockfileCtx`].
#[derive(Debug, Clone)]
pub struct LockfileCtxBuilder {
    lock_dir: PathBuf,
    plugin: String,
    max_locks: u32,
    max_wait: Option<Duration>,
    log_failures: bool,
    hostname: Option<String>,
}

impl LockfileCtxBuilder {
    /// The name of this plugin instance, written for `{plugin}`: many plugins
    /// share one host pid, so the pid alone cannot say which one holds a lock.
    pub fn plugin_name(mut self, name: impl Into<String>) -> Self {
        self.plugin = name.into();
        self
    }

    /// How many lock handles the plugin may have alive at once; beyond it,
    /// `acquire` fails with `too-many-locks`. Default
    /// [`LockfileCtx::DEFAULT_MAX_LOCKS`].
    pub fn max_locks(mut self, max: u32) -> Self {
        self.max_locks = max;
        self
    }

    /// Caps the `wait-ms` a plugin may ask for; by default a plugin may wait as
    /// long as it asks. Epoch interruption cannot stop a plugin blocked in a
    /// host call, so synchronous hosts with a deadline set this (async hosts
    /// can also drop the call's future: the wait sleeps on the runtime).
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.max_wait = Some(max);
        self
    }

    /// Logs each failed acquire at ERROR, as exclusive_control does.
    pub fn log_failures(mut self, log: bool) -> Self {
        self.log_failures = log;
        self
    }

    /// Writes `hostname` for `{hostname}` instead of the system's, for tests
    /// and for hosts that know a better name than gethostname(2).
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Opens the lock directory. Fails if it is missing or not a directory.
    pub fn build(self) -> io::Result<LockfileCtx> {
        let dir = open_dir(&self.lock_dir)?;
        Ok(LockfileCtx {
            dir,
            plugin: self.plugin,
            max_locks: self.max_locks,
            max_wait: self.max_wait,
            log_failures: self.log_failures,
            hostname: self.hostname,
            live_locks: 0,
        })
    }
}

fn open_dir(path: &Path) -> io::Result<Dir> {
    Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("lock directory '{}': {e}", path.display()),
        )
    })
}

/// A borrowed view of a plugin's [`LockfileCtx`] and the store's
/// [`ResourceTable`], on which the interface is implemented.
pub struct LockfileCtxView<'a> {
    /// The plugin's lock context.
    pub ctx: &'a mut LockfileCtx,
    /// The store's resource table, where lock handles live.
    pub table: &'a mut ResourceTable,
}

/// Store data that can lend out a [`LockfileCtxView`]; implement it on your
/// store's data type to use [`add_to_linker_sync`](crate::add_to_linker_sync)
/// or [`add_to_linker_async`](crate::add_to_linker_async).
pub trait LockfileView: Send {
    /// Borrows the lock context and the resource table.
    fn lockfile(&mut self) -> LockfileCtxView<'_>;
}
