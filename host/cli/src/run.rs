//! `lockfile run`: a plugin component, sandboxed, with the lockfile interface.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytesize::ByteSize;
use lockfile_core::{BackendLock, LockBackend, LockOptions};
use lockfile_host::{LockfileCtx, LockfileCtxView, LockfileView};
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxView, WasiView};

use crate::cache::CompileCache;
use crate::duration::parse_duration;
use crate::exit::{self, Failure, Status};
use crate::locks::Locks;
use crate::plugin;

/// How often the engine's epoch ticks while `--timeout` runs; plugins that
/// compute without calling the host yield to the timer this often.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Run a plugin (a wasi:cli command component) with the lockfile interface.
///
/// The plugin sees its arguments, stdin/stdout/stderr, and its lock directory
/// read-only at /locks; no environment variables, no network, no other files
/// unless given with --dir. It changes lock files only through the lockfile
/// interface.
///
/// Exits with the plugin's status (any of 0-255 through wasi:cli's
/// exit-with-code, e.g. `lockfile_guest::exit(75)`), or one of the statuses
/// listed below.
///
/// With --lock-db (or LOCKFILE_DB), the plugin's locks and --singleton are
/// PostgreSQL advisory locks named by their paths, and there is no lock
/// directory (nor /locks); the plugin cannot tell otherwise. If --singleton's
/// lock, or a lock the plugin holds, is lost while the plugin runs, the
/// plugin is stopped.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The directory the plugin's lock paths are relative to (created if
    /// missing) [default: locks].
    #[arg(long, value_name = "DIR")]
    lock_dir: Option<PathBuf>,

    /// The plugin's name, written for {plugin} [default: the file's stem].
    #[arg(long)]
    name: Option<String>,

    /// Hold this lock (a file name in the lock directory) for the whole run;
    /// if it stays held, exit without starting the plugin.
    #[arg(long, value_name = "LOCKNAME")]
    singleton: Option<String>,

    /// With --singleton: keep trying for this long (500ms, 3s, 1m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "singleton")]
    wait: Option<Duration>,

    /// With --singleton: what to write into the lock file; fields {pid},
    /// {hostname}, {plugin}.
    #[arg(
        long,
        value_name = "TEMPLATE",
        default_value = "{pid}",
        requires = "singleton"
    )]
    content_template: String,

    /// How many lock handles the plugin may hold at once.
    #[arg(long, value_name = "N", default_value_t = LockfileCtx::DEFAULT_MAX_LOCKS)]
    max_locks: u32,

    /// How many lock files the plugin may create in the lock directory, or
    /// with --lock-db new lock names on the database (it can always lock
    /// those that exist); beyond: `not-permitted`.
    #[arg(long, value_name = "N", default_value_t = LockfileCtx::DEFAULT_MAX_LOCK_FILES)]
    max_lock_files: u32,

    /// The most linear memory the plugin may use, e.g. 64MiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<ByteSize>,

    /// Log each failed lock attempt (--singleton's and the plugin's) at
    /// ERROR, as exclusive_control does.
    #[arg(long)]
    log_failures: bool,

    /// Stop the plugin after this long (wall clock), even inside a host call.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// Preopen a host directory for the plugin, read-write: HOST::GUEST.
    #[arg(long = "dir", value_name = "HOST::GUEST", value_parser = parse_dir)]
    dirs: Vec<(PathBuf, String)>,

    /// Where compiled plugins are cached [default: $XDG_CACHE_HOME/lockfile]: a
    /// directory of yours that no one else can write (see the README); none on
    /// Windows.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile the plugin afresh and cache nothing.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,

    #[command(flatten)]
    db: crate::db::DbArgs,

    /// The plugin component, built for wasm32-wasip2.
    plugin: PathBuf,

    /// Arguments for the plugin.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

impl RunArgs {
    /// --lock-dir, or its default.
    fn lock_dir(&self) -> &Path {
        self.lock_dir.as_deref().unwrap_or(Path::new("locks"))
    }
}

fn parse_size(text: &str) -> Result<ByteSize, String> {
    text.parse::<ByteSize>()
        .map_err(|_| format!("not a size: {text:?} (examples: 64MiB, 512MB, 1GiB)"))
}

fn parse_dir(text: &str) -> Result<(PathBuf, String), String> {
    match text.split_once("::") {
        Some((host, guest)) if !host.is_empty() && !guest.is_empty() => {
            Ok((host.into(), guest.into()))
        }
        _ => Err("expected HOST::GUEST, e.g. ./data::/data".into()),
    }
}

/// The plugin's store data.
struct PluginState {
    wasi: WasiCtx,
    locks: LockfileCtx,
    table: ResourceTable,
    limits: MemoryLimit,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl LockfileView for PluginState {
    fn lockfile(&mut self) -> LockfileCtxView<'_> {
        LockfileCtxView {
            ctx: &mut self.locks,
            table: &mut self.table,
        }
    }
}

/// wasmtime's store limits, with a trap message that names `--max-memory`.
struct MemoryLimit {
    limits: StoreLimits,
    max: Option<ByteSize>,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        match self.limits.memory_growing(current, desired, maximum) {
            Err(_) if self.max.is_some() => Err(wasmtime::format_err!(
                "--max-memory {} exceeded: the plugin asked for {}",
                self.max.unwrap_or_default().display().iec(),
                ByteSize(desired as u64).display().iec()
            )),
            other => other,
        }
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

pub fn run(args: RunArgs) -> ExitCode {
    match run_plugin(args) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    }
}

fn run_plugin(args: RunArgs) -> Result<ExitCode, Failure> {
    let name = args.name.clone().unwrap_or_else(|| {
        args.plugin
            .file_stem()
            .map(OsStr::to_string_lossy)
            .unwrap_or_default()
            .into_owned()
    });
    if let Some(lock) = &args.singleton {
        check_lock_name(lock).status(exit::USAGE)?;
    }
    let engine = plugin::engine().status(exit::SOFTWARE)?;
    log::debug!("engine ready");
    let cache = match (&args.no_cache, &args.cache_dir) {
        (true, _) => None,
        (false, Some(dir)) => Some(CompileCache::new(dir.clone())),
        (false, None) => CompileCache::default_dir().map(CompileCache::new),
    };
    let component = plugin::load(&engine, &args.plugin, cache.as_ref()).status(exit::BAD_PLUGIN)?;
    let pre = instantiate_pre(&engine, &component, &args.plugin).status(exit::BAD_PLUGIN)?;
    log::debug!("plugin linked");
    check_dirs(&args.dirs).status(exit::USAGE)?;
    let on_db = args.db.url().is_some();
    let namespace = if on_db {
        args.db
            .namespace_beside(args.lock_dir.as_deref())
            .map_err(anyhow::Error::msg)
            .status(exit::USAGE)?
    } else {
        String::new()
    };
    let locks = Locks::open(&args.db, &namespace, Some(args.lock_dir()))?;
    if !on_db {
        // Created only once the plugin is known to be runnable and every flag
        // is good: bad input changes nothing.
        create_lock_dir(args.lock_dir()).status(exit::IOERR)?;
    }
    // A plugin's lock files are served by lockfile-host's lock directory
    // (confined, with its file budget); a database through its backend.
    let backend = on_db.then(|| locks.backend());
    // The plugin's runtime, with I/O so that its lock waits watch for the
    // release on this thread rather than through a reactor thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()
        .context("starting the async runtime")
        .status(exit::SOFTWARE)?;
    let mut store =
        new_store(&engine, &args, &name, backend, runtime.handle()).status(exit::USAGE)?;

    // Taken after every check above, so a bad plugin never holds it.
    let singleton = match &args.singleton {
        Some(lock) => Some(take_singleton(&args, &locks, lock, &name)?),
        None => None,
    };
    let singleton_lost =
        (args.singleton.as_ref()).zip(singleton.as_ref().and_then(|held| held.lost()));
    let plugin_lost = store.data().locks.lost_locks();

    // A plugin that computes without calling the host yields at each tick,
    // so a timeout or a lost lock can stop it.
    let _ticker = preemptible(&args, on_db).then(|| EpochTicker::start(&engine));
    let outcome = runtime.block_on(async {
        let call = async {
            let command: Command = pre.instantiate_async(&mut store).await?;
            log::debug!("plugin instantiated");
            command.wasi_cli_run().call_run(&mut store).await
        };
        let call = async {
            match args.timeout {
                Some(limit) => Ok(tokio::time::timeout(limit, call).await.ok()),
                None => Ok(Some(call.await)),
            }
        };
        // A lost lock drops the plugin's call, as --timeout does.
        let singleton_lost = async {
            match singleton_lost {
                Some((lock, lost)) => (format!("the --singleton lock on '{lock}'"), lost.await),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            outcome = call => outcome,
            (what, reason) = singleton_lost => Err((what, reason)),
            lost = plugin_lost.next() => Err((format!("the lock on '{}'", lost.path), lost.reason)),
        }
    });
    // Dropping the store releases every lock the plugin still holds; the
    // singleton is released the same way (a lost one is free already), so
    // that a leased lock's lease ends now rather than running out.
    drop(store);
    if let Some(singleton) = singleton
        && let Err(error) = locks.release(singleton)
    {
        log::debug!("releasing the singleton: {error}");
    }
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err((what, reason)) => {
            return Err(Failure::new(
                exit::LOCK_LOST,
                anyhow::anyhow!(
                    "lost {what} while the plugin ran: {reason}; the plugin was stopped"
                ),
            ));
        }
    };
    match outcome {
        None => Err(Failure::new(
            exit::TIMED_OUT,
            anyhow::anyhow!(
                "plugin stopped: --timeout {} exceeded",
                humantime::format_duration(args.timeout.unwrap_or_default())
            ),
        )),
        Some(Ok(Ok(()))) => Ok(ExitCode::SUCCESS),
        Some(Ok(Err(()))) => Ok(ExitCode::FAILURE),
        Some(Err(error)) => match error.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => Ok(ExitCode::from(*code as u8)),
            None => Err(Failure::new(
                exit::TRAPPED,
                anyhow::Error::from(error).context("plugin trapped"),
            )),
        },
    }
}

/// Every `--dir` must name an existing directory before anything is created.
fn check_dirs(dirs: &[(PathBuf, String)]) -> Result<()> {
    for (host, guest) in dirs {
        match std::fs::metadata(host) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => bail!(
                "--dir {}::{guest}: '{}' is not a directory",
                host.display(),
                host.display()
            ),
            Err(error) => bail!(
                "--dir {}::{guest}: cannot use '{}': {error} (give an existing directory)",
                host.display(),
                host.display()
            ),
        }
    }
    Ok(())
}

/// Creates the lock directory if it is missing, saying plainly when the path
/// is taken by something that is not a directory.
fn create_lock_dir(dir: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::metadata(dir)
        && !meta.is_dir()
    {
        bail!(
            "--lock-dir '{}' is not a directory: give a directory for the plugin's lock files",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create lock directory '{}'", dir.display()))?;
    check_lock_dir(dir)
}

/// Refuses, before the plugin starts, a lock directory its locks would all
/// fail in (`/proc`, a read-only mount): one where a file cannot be created
/// (tried with a file of this process's own, removed at once) and which
/// holds no file this user may open for writing (lock files made for the
/// user, as administrators pre-create them in a directory users cannot
/// write; a full disk's existing lock files).
fn check_lock_dir(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".lockfile-probe-{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe);
    let error = match created {
        Ok(_) => {
            // Best effort: a probe left behind is an empty file, never a lock.
            let _ = std::fs::remove_file(&probe);
            return Ok(());
        }
        Err(error) => error,
    };
    // The directory exists: "not found" means a file system that makes no
    // files at all (/proc). Otherwise (permission, a read-only mount, a full
    // disk) the lock files already there may still serve.
    let makes_no_files = error.kind() == std::io::ErrorKind::NotFound;
    if !makes_no_files && holds_a_writable_file(dir) {
        return Ok(());
    }
    bail!(
        "--lock-dir '{}' cannot hold lock files: creating one there fails ({error}) and it holds none you may write: give a directory you can create files in",
        dir.display()
    )
}

/// Whether one of the first entries of `dir` is a regular file this user may
/// open for writing (opened without following links or blocking; nothing
/// is written).
fn holds_a_writable_file(dir: &Path) -> bool {
    /// Enough to find pre-made lock files, without reading a huge directory.
    const LOOKED_AT: usize = 256;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        &mut options,
        libc::O_NOFOLLOW | libc::O_NONBLOCK,
    );
    entries.flatten().take(LOOKED_AT).any(|entry| {
        entry.file_type().is_ok_and(|kind| kind.is_file()) && options.open(entry.path()).is_ok()
    })
}

/// A `--singleton` name is a lock name as a plugin's are, in the lock
/// directory or the database.
fn check_lock_name(lock: &str) -> Result<()> {
    lockfile_core::LockName::new(lock)
        .map(drop)
        .with_context(|| format!("--singleton {lock:?}"))
}

/// Takes the --singleton lock, held for the whole run, where `locks` are.
fn take_singleton(
    args: &RunArgs,
    locks: &Locks,
    lock: &str,
    name: &str,
) -> Result<Box<dyn BackendLock>, Failure> {
    let singleton = |failure: Failure| match failure.status {
        exit::TEMPFAIL => failure,
        status => Failure::new(status, failure.error.context("--singleton")),
    };
    let content = LockOptions::new()
        .content_template(&args.content_template)
        .field("plugin", name)
        .render_content(lock)
        .map_err(|error| singleton(Failure::lock(&error)))?;
    let wait = args.wait.unwrap_or_default();
    locks
        .acquire(lock, content, wait, args.log_failures)
        .map_err(singleton)
}

fn instantiate_pre(
    engine: &Engine,
    component: &wasmtime::component::Component,
    path: &Path,
) -> Result<CommandPre<PluginState>> {
    let exports_run = component
        .component_type()
        .exports(engine)
        .any(|(name, _)| name.starts_with("wasi:cli/run@"));
    if !exports_run {
        bail!(
            "'{}' is not a command: it does not export wasi:cli/run (build a crate with `fn main` for wasm32-wasip2)",
            path.display()
        );
    }
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    lockfile_host::add_to_linker_async(&mut linker)?;
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| anyhow::anyhow!("'{}' cannot run here: {:#}", path.display(), e))?;
    CommandPre::new(pre)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("'{}' cannot run as a command", path.display()))
}

fn new_store(
    engine: &Engine,
    args: &RunArgs,
    name: &str,
    backend: Option<Arc<dyn LockBackend>>,
    runtime: &tokio::runtime::Handle,
) -> Result<Store<PluginState>> {
    let on_db = backend.is_some();
    let mut wasi = WasiCtx::builder();
    wasi.inherit_stdio().arg(name).args(&args.args);
    if backend.is_none() {
        wasi.preopened_dir(args.lock_dir(), "/locks", FsPerms::ReadOnly)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("--lock-dir '{}'", args.lock_dir().display()))?;
    }
    for (host, guest) in &args.dirs {
        wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("--dir {}::{guest}", host.display()))?;
    }
    let locks = match backend {
        Some(backend) => LockfileCtx::builder_for_backend(backend),
        None => LockfileCtx::builder(args.lock_dir()),
    };
    let locks = locks
        .plugin_name(name)
        .max_locks(args.max_locks)
        .max_lock_files(args.max_lock_files)
        .log_failures(args.log_failures)
        .reactor(runtime.clone());
    // No `max_wait` from --timeout: this host is async, and the timeout drops
    // the plugin's call, a wait included. A cap equal to the timeout would
    // race it, and the plugin would go on after a wait it never finished.
    let mut limits = StoreLimitsBuilder::new();
    if let Some(max) = args.max_memory {
        limits = limits
            .memory_size(usize::try_from(max.as_u64()).unwrap_or(usize::MAX))
            .trap_on_grow_failure(true);
    }
    let state = PluginState {
        wasi: wasi.build(),
        locks: locks.build()?,
        table: ResourceTable::new(),
        limits: MemoryLimit {
            limits: limits.build(),
            max: args.max_memory,
        },
    };
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    if preemptible(args, on_db) {
        // Yield to the runtime at every tick so a timeout or a lost lock
        // can stop the plugin.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
    } else {
        store.set_epoch_deadline(u64::MAX);
    }
    Ok(store)
}

/// Whether the plugin must yield to the runtime at each epoch tick: when
/// something may have to stop it (a timeout; a lost lock, which only a
/// database's can be).
fn preemptible(args: &RunArgs, on_db: bool) -> bool {
    args.timeout.is_some() || on_db
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Self {
        let engine = engine.clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(EPOCH_TICK)
            {
                engine.increment_epoch();
            }
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
