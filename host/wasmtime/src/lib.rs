//! The `lockfile:lockfile` WIT interface for wasmtime hosts: plugins in the
//! WebAssembly sandbox take real OS lock files, byte-compatible and mutually
//! exclusive with Python's zc.lockfile, confined to a lock directory.
//!
//! Add it to your linker next to wasmtime-wasi, as wasmtime's own WASI crates
//! are added: an owned [`LockfileCtx`] per plugin instance, a borrowed
//! [`LockfileCtxView`] lent by your store data through [`LockfileView`], and
//! [`add_to_linker_sync`] or [`add_to_linker_async`].
//!
//! ```
//! use lockfile_host::{LockfileCtx, LockfileCtxView, LockfileView};
//! use wasmtime::component::{Component, Linker, ResourceTable};
//! use wasmtime::{Engine, Store};
//! use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
//!
//! struct Plugin {
//!     wasi: WasiCtx,
//!     locks: LockfileCtx,
//!     table: ResourceTable,
//! }
//!
//! impl WasiView for Plugin {
//!     fn ctx(&mut self) -> WasiCtxView<'_> {
//!         WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
//!     }
//! }
//!
//! impl LockfileView for Plugin {
//!     fn lockfile(&mut self) -> LockfileCtxView<'_> {
//!         LockfileCtxView { ctx: &mut self.locks, table: &mut self.table }
//!     }
//! }
//!
//! # fn main() -> wasmtime::Result<()> {
//! # let lock_dir = tempfile::tempdir()?;
//! let engine = Engine::default();
//! let mut linker = Linker::<Plugin>::new(&engine);
//! wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
//! lockfile_host::add_to_linker_sync(&mut linker)?;
//!
//! let mut store = Store::new(&engine, Plugin {
//!     wasi: WasiCtx::builder().inherit_stdio().build(),
//!     locks: LockfileCtx::builder(lock_dir.path()).plugin_name("report-job").build()?,
//!     table: ResourceTable::new(),
//! });
//! // A plugin built with `cargo build --target wasm32-wasip2`; here the
//! // smallest component there is, so the example runs as it stands.
//! let component = Component::new(&engine, b"\0asm\x0d\0\x01\0")?;
//! linker.instantiate(&mut store, &component)?;
//! // Every lock the plugin still holds is released when the store is dropped,
//! // even if the plugin trapped.
//! drop(store);
//! # Ok(())
//! # }
//! ```
//!
//! A plugin's paths are relative to its lock directory and resolved by cap-std
//! beneath it: absolute paths, `..` that climbs out and symbolic links leading
//! outside fail with `not-permitted` before anything is created. Each instance
//! may hold [`LockfileCtx::DEFAULT_MAX_LOCKS`] handles unless configured
//! otherwise.

#![deny(missing_docs)]
#![warn(unused_crate_dependencies)]
// Used by the documentation's example only.
#[cfg(test)]
use {tempfile as _, wasmtime_wasi as _};
// Only the Linux release watch logs.
#[cfg(not(target_os = "linux"))]
use log as _;

mod ctx;
mod host;
mod sandbox;

pub use ctx::{LockfileCtx, LockfileCtxBuilder, LockfileCtxView, LockfileView};
pub use host::HostLock;

use wasmtime::component::{HasData, Linker};

/// The generated bindings of `lockfile:lockfile`, for hosts whose own
/// `bindgen!` world includes the interface: map it onto this crate's types
/// with `with: { "lockfile:lockfile/lockfile": lockfile_host::bindings::sync::lockfile::lockfile::lockfile }`
/// (or `r#async`), and the `lock` resource is [`HostLock`] already.
///
/// `sync` blocks the calling thread while a plugin waits; in `r#async` only
/// `acquire` is async, and its waits sleep on tokio.
pub mod bindings {
    #![allow(missing_docs)]

    /// Bindings whose host functions are all synchronous.
    pub mod sync {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "imports",
            imports: { default: trappable },
            with: { "lockfile:lockfile/lockfile.lock": crate::HostLock },
            require_store_data_send: true,
        });
    }

    /// Bindings whose `acquire` is async, for stores with async support.
    pub mod r#async {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "imports",
            imports: {
                "lockfile:lockfile/lockfile.[static]lock.acquire": async | trappable,
                default: trappable,
            },
            with: { "lockfile:lockfile/lockfile.lock": crate::HostLock },
        });
    }
}

/// The [`HasData`] marker for this interface: its host functions see a
/// [`LockfileCtxView`].
pub struct LockfileInterface;

impl HasData for LockfileInterface {
    type Data<'a> = LockfileCtxView<'a>;
}

/// Adds `lockfile:lockfile/lockfile` to a linker whose engine runs plugins
/// synchronously; a wait blocks the calling thread.
pub fn add_to_linker_sync<T: LockfileView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    bindings::sync::lockfile::lockfile::lockfile::add_to_linker::<T, LockfileInterface>(
        linker,
        T::lockfile,
    )
}

/// Adds `lockfile:lockfile/lockfile` to a linker for async stores (an engine
/// with async support, plugins called with `call_async`). A wait sleeps on the
/// tokio runtime between tries and never blocks the executor thread.
pub fn add_to_linker_async<T: LockfileView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    bindings::r#async::lockfile::lockfile::lockfile::add_to_linker::<T, LockfileInterface>(
        linker,
        T::lockfile,
    )
}
