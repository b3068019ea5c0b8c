//! A wasmtime host of your own that runs plugins with WASI and the lockfile
//! interface on one linker, as the lockfile-host crate documentation shows:
//!
//! ```sh
//! lockfile-example-embedder LOCK_DIR PLUGIN.wasm [ARGS...]
//! ```
//!
//! The plugin (a wasi:cli command, such as one built with `cargo build
//! --target wasm32-wasip2` on lockfile-guest) takes its locks in LOCK_DIR,
//! sees ARGS and this process's stdio, and nothing else of the host. It exits
//! with the plugin's status.

use std::process::ExitCode;

use lockfile_host::{LockfileCtx, LockfileCtxView, LockfileView};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

/// One plugin instance's store data: each interface's context, and the
/// resource table both keep their handles in.
struct Plugin {
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, lock_dir, plugin, plugin_args @ ..] = args.as_slice() else {
        eprintln!("usage: lockfile-example-embedder LOCK_DIR PLUGIN.wasm [ARGS...]");
        return ExitCode::from(64);
    };
    match run(lock_dir, plugin, plugin_args) {
        Ok(status) => status,
        Err(error) => {
            eprintln!("lockfile-example-embedder: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command component at `plugin` to its end; its exit status.
fn run(lock_dir: &str, plugin: &str, args: &[String]) -> wasmtime::Result<ExitCode> {
    let engine = Engine::default();
    let mut linker = Linker::<Plugin>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    lockfile_host::add_to_linker_sync(&mut linker)?;

    // The name `{plugin}` writes into lock files: the file's stem.
    let name = std::path::Path::new(plugin)
        .file_stem()
        .map_or_else(|| plugin.into(), |stem| stem.to_string_lossy());
    let mut store = Store::new(
        &engine,
        Plugin {
            wasi: WasiCtx::builder()
                .inherit_stdio()
                .arg(plugin)
                .args(args)
                .build(),
            locks: LockfileCtx::builder(lock_dir).plugin_name(name).build()?,
            table: ResourceTable::new(),
        },
    );
    let component = Component::from_file(&engine, plugin)
        .map_err(|error| error.context(format!("loading plugin '{plugin}'")))?;
    let command = Command::instantiate(&mut store, &component, &linker)?;
    let status = match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(())) => ExitCode::FAILURE,
        // wasi:cli/exit's `exit` unwinds the plugin as this error.
        Err(error) => match error.downcast_ref::<I32Exit>() {
            Some(exit) => ExitCode::from(exit.0 as u8),
            None => return Err(error.context(format!("plugin '{plugin}'"))),
        },
    };
    // Every lock the plugin still holds is released when its store is
    // dropped, even after a trap.
    drop(store);
    Ok(status)
}
