use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cap_std::fs::Dir;
use lockfile_core::LockBackend;
use wasmtime::component::ResourceTable;

use crate::DirBackend;
use crate::losses::LostLocks;
use crate::sandbox::FileBudget;

/// What one plugin instance may lock: its lock directory, its name, its limits.
///
/// Owned by the store's data, one per plugin instance; build it with
/// [`LockfileCtx::builder`].
#[derive(Debug)]
pub struct LockfileCtx {
    pub(crate) backend: Arc<dyn LockBackend>,
    pub(crate) plugin: String,
    pub(crate) max_locks: u32,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) log_failures: bool,
    pub(crate) hostname: Option<String>,
    pub(crate) live_locks: u32,
    pub(crate) files: FileBudget,
    pub(crate) losses: LostLocks,
}

impl LockfileCtx {
    /// The default for [`LockfileCtxBuilder::max_locks`].
    pub const DEFAULT_MAX_LOCKS: u32 = 64;

    /// The default for [`LockfileCtxBuilder::max_lock_files`].
    pub const DEFAULT_MAX_LOCK_FILES: u32 = 256;

    /// Starts a context whose plugin may lock files beneath `lock_dir` only;
    /// [`build`](LockfileCtxBuilder::build) opens it.
    pub fn builder(lock_dir: impl Into<PathBuf>) -> LockfileCtxBuilder {
        Self::builder_from(LockDir::Path(lock_dir.into()))
    }

    /// Starts a context whose plugin's locks live in `backend` (a database,
    /// or [`DirBackend`](crate::DirBackend)'s lock files, which is what
    /// [`builder`](Self::builder) serves): the plugin's paths are the locks'
    /// names, under the same path rules, and the plugin cannot tell the
    /// difference.
    /// [`max_lock_files`](LockfileCtxBuilder::max_lock_files) bounds the
    /// names it may create there (the backend keeps every name).
    pub fn builder_for_backend(backend: Arc<dyn LockBackend>) -> LockfileCtxBuilder {
        Self::builder_from(LockDir::Backend(backend))
    }

    /// Like [`builder`](Self::builder), for a directory the host has already
    /// opened (as cap-std's constructors take one): the plugin's paths are
    /// resolved beneath `lock_dir`, wherever it is.
    pub fn builder_for_dir(lock_dir: Dir) -> LockfileCtxBuilder {
        Self::builder_from(LockDir::Open(lock_dir))
    }

    fn builder_from(lock_dir: LockDir) -> LockfileCtxBuilder {
        LockfileCtxBuilder {
            lock_dir,
            plugin: String::new(),
            max_locks: Self::DEFAULT_MAX_LOCKS,
            max_lock_files: Self::DEFAULT_MAX_LOCK_FILES,
            max_wait: None,
            log_failures: false,
            hostname: None,
            reactor: None,
            stop_on_lost_lock: true,
        }
    }

    /// How many lock handles the plugin holds now.
    pub fn live_locks(&self) -> u32 {
        self.live_locks
    }

    /// How many lock files the plugin has created so far.
    pub fn created_lock_files(&self) -> u32 {
        self.files.created
    }

    /// The losses of the plugin's locks (a database session that ended):
    /// await [`LostLocks::next`] beside the plugin's call, and stop the
    /// plugin when it completes, so it never runs on beside the lock's next
    /// holder. Take it before the call (the store is borrowed during it).
    pub fn lost_locks(&self) -> LostLocks {
        self.losses.clone()
    }
}

/// The lock directory, by path or already open, or another backend.
#[derive(Debug)]
enum LockDir {
    Path(PathBuf),
    Open(Dir),
    Backend(Arc<dyn LockBackend>),
}

/// Configures a [`LockfileCtx`].
#[derive(Debug)]
pub struct LockfileCtxBuilder {
    lock_dir: LockDir,
    plugin: String,
    max_locks: u32,
    max_lock_files: u32,
    max_wait: Option<Duration>,
    log_failures: bool,
    hostname: Option<String>,
    reactor: Option<tokio::runtime::Handle>,
    stop_on_lost_lock: bool,
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

    /// How many lock files the plugin may create in the lock directory over
    /// its lifetime (files that already exist can always be locked); beyond
    /// it, `acquire` of a missing file fails with `not-permitted`. With the
    /// record cap of 1 KiB this bounds what a plugin leaves on the host's
    /// disk. On a backend ([`LockfileCtx::builder_for_backend`]) it bounds
    /// the new lock names the plugin creates there, which the backend keeps
    /// for good (a database row each). Default
    /// [`LockfileCtx::DEFAULT_MAX_LOCK_FILES`].
    pub fn max_lock_files(mut self, max: u32) -> Self {
        self.max_lock_files = max;
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

    /// Lets async waits ([`add_to_linker_async`](crate::add_to_linker_async))
    /// in the lock directory watch for the release with `runtime`'s I/O
    /// driver, which must be enabled (`enable_io` or `enable_all` on its
    /// builder: tokio panics otherwise), as [`DirBackend::reactor`] does. By
    /// default they use a reactor thread of this crate's own, which works on
    /// any runtime but adds a thread wake-up to each handover (the README's
    /// benchmarks say how much). Synchronous waits, and backends given to
    /// [`LockfileCtx::builder_for_backend`], are not affected.
    pub fn reactor(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.reactor = Some(runtime);
        self
    }

    /// Whether [`LockfileCtx::lost_locks`] reports the losses of the
    /// plugin's locks (default `true`): an embedder that stops the plugin on
    /// a loss awaits it. Turn it off for plugins that watch `held` and stop
    /// on their own: the losses are then never reported.
    pub fn stop_on_lost_lock(mut self, stop: bool) -> Self {
        self.stop_on_lost_lock = stop;
        self
    }

    /// Opens the lock directory. Fails if it is missing or not a directory.
    pub fn build(self) -> io::Result<LockfileCtx> {
        let in_dir = |backend: DirBackend| {
            let backend = match &self.reactor {
                Some(runtime) => backend.reactor(runtime.clone()),
                None => backend,
            };
            Arc::new(backend) as Arc<dyn LockBackend>
        };
        let backend = match self.lock_dir {
            LockDir::Path(path) => in_dir(DirBackend::open(path)?),
            LockDir::Open(dir) => in_dir(DirBackend::new(dir)),
            LockDir::Backend(backend) => backend,
        };
        Ok(LockfileCtx {
            backend,
            plugin: self.plugin,
            max_locks: self.max_locks,
            max_wait: self.max_wait,
            log_failures: self.log_failures,
            hostname: self.hostname,
            live_locks: 0,
            files: FileBudget::new(self.max_lock_files),
            losses: LostLocks::new(self.stop_on_lost_lock),
        })
    }
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
