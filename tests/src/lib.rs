//! Shared set-up for the end-to-end tests: the guest components built from
//! source, one optimised Engine, and a way to run a plugin under the real host.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use lockfile_host::{LockfileCtx, LockfileCtxBuilder, LockfileCtxView, LockfileView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// A plugin instance's store data.
pub struct Plugin {
    wasi: WasiCtx,
    locks: LockfileCtx,
    table: ResourceTable,
}

impl WasiView for Plugin {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl LockfileView for Plugin {
    fn lockfile(&mut self) -> LockfileCtxView<'_> {
        LockfileCtxView {
            ctx: &mut self.locks,
            table: &mut self.table,
        }
    }
}

impl Plugin {
    /// How many lock handles the plugin has alive.
    pub fn locks_live(&self) -> u32 {
        self.locks.live_locks()
    }
}

/// The Engine every test shares, so each component compiles once per process.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// The component at `path`, compiled once per test process.
pub fn component(path: &str) -> Component {
    static COMPONENTS: OnceLock<Mutex<HashMap<String, Component>>> = OnceLock::new();
    let mut cache = COMPONENTS.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(path.to_owned())
        .or_insert_with(|| Component::from_file(engine(), path).unwrap())
        .clone()
}

/// A linker with WASI and the lockfile interface, synchronous.
pub fn sync_linker() -> &'static Linker<Plugin> {
    static LINKER: OnceLock<Linker<Plugin>> = OnceLock::new();
    LINKER.get_or_init(|| {
        let mut linker = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).unwrap();
        lockfile_host::add_to_linker_sync(&mut linker).unwrap();
        linker
    })
}

/// A linker with WASI and the lockfile interface, asynchronous.
pub fn async_linker() -> &'static Linker<Plugin> {
    static LINKER: OnceLock<Linker<Plugin>> = OnceLock::new();
    LINKER.get_or_init(|| {
        let mut linker = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        lockfile_host::add_to_linker_async(&mut linker).unwrap();
        linker
    })
}

/// What a plugin run ended with.
#[derive(Debug)]
pub struct Run {
    /// `Ok(code)` for a normal exit (0 when `run` returned Ok), `Err` for a trap.
    pub status: Result<i32, String>,
    /// What the plugin printed.
    pub stdout: String,
}

impl Run {
    /// The plugin's lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Builds a plugin's store: `lock_dir` is its lock directory; `data_dir`, if
/// given, is preopened read-write at `/data`.
pub fn store(
    lock_dir: &Path,
    data_dir: Option<&Path>,
    args: &[&str],
    configure: impl FnOnce(LockfileCtxBuilder) -> LockfileCtxBuilder,
) -> (Store<Plugin>, MemoryOutputPipe) {
    store_with(configure(LockfileCtx::builder(lock_dir)), data_dir, args)
}

/// Like [`store`], with the plugin's locks as `locks` configures them (for
/// example in a backend rather than a lock directory).
pub fn store_with(
    locks: LockfileCtxBuilder,
    data_dir: Option<&Path>,
    args: &[&str],
) -> (Store<Plugin>, MemoryOutputPipe) {
    let stdout = MemoryOutputPipe::new(1 << 20);
    let mut wasi = WasiCtx::builder();
    wasi.stdout(stdout.clone())
        .inherit_stderr()
        .arg("plugin")
        .args(args);
    if let Some(data) = data_dir {
        wasi.preopened_dir(data, "/data", FsPerms::ReadWrite)
            .unwrap();
    }
    let locks = locks.build().unwrap();
    let store = Store::new(
        engine(),
        Plugin {
            wasi: wasi.build(),
            locks,
            table: ResourceTable::new(),
        },
    );
    (store, stdout)
}

/// Runs the command component at `path` to its end, synchronously.
pub fn run(
    path: &str,
    lock_dir: &Path,
    data_dir: Option<&Path>,
    args: &[&str],
    configure: impl FnOnce(LockfileCtxBuilder) -> LockfileCtxBuilder,
) -> Run {
    run_with(
        path,
        configure(LockfileCtx::builder(lock_dir)),
        data_dir,
        args,
    )
}

/// Like [`run`], with the plugin's locks as `locks` configures them.
pub fn run_with(
    path: &str,
    locks: LockfileCtxBuilder,
    data_dir: Option<&Path>,
    args: &[&str],
) -> Run {
    let (mut store, stdout) = store_with(locks, data_dir, args);
    let status = Command::instantiate(&mut store, &component(path), sync_linker())
        .and_then(|command| command.wasi_cli_run().call_run(&mut store))
        .map(|result| i32::from(result.is_err()));
    finish(store, stdout, status)
}

/// Like [`run`], on the async linker.
pub async fn run_async(
    path: &str,
    lock_dir: &Path,
    data_dir: Option<&Path>,
    args: &[&str],
    configure: impl FnOnce(LockfileCtxBuilder) -> LockfileCtxBuilder,
) -> Run {
    use wasmtime_wasi::p2::bindings::Command as AsyncCommand;
    let (mut store, stdout) = store(lock_dir, data_dir, args, configure);
    let status =
        match AsyncCommand::instantiate_async(&mut store, &component(path), async_linker()).await {
            Ok(command) => command.wasi_cli_run().call_run(&mut store).await,
            Err(error) => Err(error),
        }
        .map(|result| i32::from(result.is_err()));
    finish(store, stdout, status)
}

fn finish(store: Store<Plugin>, stdout: MemoryOutputPipe, status: wasmtime::Result<i32>) -> Run {
    let status = status.or_else(
        |error| match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => Ok(exit.0),
            None => Err(format!("{error:?}")),
        },
    );
    // The store, and every lock handle in it, is dropped here.
    drop(store);
    Run {
        status,
        stdout: String::from_utf8_lossy(&stdout.contents()).into_owned(),
    }
}

/// Builds a plugin crate of a user's own (`my-plugin`, at `krate`) as the
/// README tells plugin authors to, `cargo build --release --target
/// wasm32-wasip2`, in a target directory of its own under target/, kept
/// between runs so its dependencies compile once. Returns the component.
pub fn build_my_plugin(krate: &Path) -> std::path::PathBuf {
    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/outside-plugin");
    let built =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--manifest-path",
            ])
            .arg(krate.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .output()
            .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = target_dir.join("wasm32-wasip2/release/my-plugin.wasm");
    assert!(
        wasm.exists(),
        "the README says the plugin lands at {}",
        wasm.display()
    );
    wasm
}
