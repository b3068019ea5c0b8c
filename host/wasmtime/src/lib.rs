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
//!
//! # Versions
//!
//! Both functions add `lockfile:lockfile@0.2.0` (the repository's
//! `wit/lockfile.wit`) and 0.1.0 (`wit/compat/lockfile-0.1.0.wit`), so
//! plugins built against either run unchanged. 0.2.0 gives a `timed-out`
//! error how long the host waited (after [`LockfileCtxBuilder::max_wait`]'s
//! cap) and a lock whether it is still `held` and its `fencing-token`; its
//! types moved into a `types` interface of their own. A host whose own
//! `bindgen!` world imports the interface maps it onto [`bindings`].
//!
//! # The public API
//!
//! - [`LockfileCtx`] and its [`LockfileCtxBuilder`] (a lock directory by
//!   path or open `Dir`, or any [`lockfile_core::LockBackend`]), the borrowed
//!   [`LockfileCtxView`] your store data lends through [`LockfileView`], the
//!   [`LockfileInterface`] marker, and [`add_to_linker_sync`] /
//!   [`add_to_linker_async`].
//! - [`DirBackend`]: the lock files of a directory as a backend, confined as
//!   a plugin's paths are; what [`LockfileCtx::builder`] serves.
//! - [`HostLock`]: a plugin's lock handle, as it lives in the resource table.
//! - [`LostLocks`] ([`LockfileCtx::lost_locks`]) and [`LostLock`]: the losses
//!   of a plugin's database locks, for the embedder to stop the plugin on.
//! - [`bindings`]: the generated bindings of both versions, for hosts that
//!   reuse them in their own `bindgen!` with `with:`.

#![deny(missing_docs)]
#![warn(unused_crate_dependencies)]
// Used by the documentation's example only.
#[cfg(test)]
use {tempfile as _, wasmtime_wasi as _};
// Only the Linux release watch logs.
#[cfg(not(target_os = "linux"))]
use log as _;

mod async_wait;
pub mod bindings;
mod ctx;
mod dir_backend;
mod host;
mod lock;
mod losses;
mod sandbox;

pub use ctx::{LockfileCtx, LockfileCtxBuilder, LockfileCtxView, LockfileView};
pub use dir_backend::DirBackend;
pub use lock::HostLock;
pub use losses::{LostLock, LostLocks};

use wasmtime::component::{HasData, Linker};

/// The [`HasData`] marker for this interface: its host functions see a
/// [`LockfileCtxView`].
pub struct LockfileInterface;

impl HasData for LockfileInterface {
    type Data<'a> = LockfileCtxView<'a>;
}

/// Adds `lockfile:lockfile` to a linker whose engine runs plugins
/// synchronously; a wait blocks the calling thread. Both versions are added,
/// 0.2.0 and 0.1.0, so plugins built against either run.
pub fn add_to_linker_sync<T: LockfileView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    bindings::sync::Imports::add_to_linker::<T, LockfileInterface>(linker, T::lockfile)?;
    bindings::v0_1::sync::Imports::add_to_linker::<T, LockfileInterface>(linker, T::lockfile)
}

/// Adds `lockfile:lockfile` to a linker for async stores (an engine with
/// async support, plugins called with `call_async`). A wait sleeps on the
/// tokio runtime between tries and never blocks the executor thread. Both
/// versions are added, 0.2.0 and 0.1.0, so plugins built against either run.
pub fn add_to_linker_async<T: LockfileView + 'static>(
    linker: &mut Linker<T>,
) -> wasmtime::Result<()> {
    bindings::r#async::Imports::add_to_linker::<T, LockfileInterface>(linker, T::lockfile)?;
    bindings::v0_1::r#async::Imports::add_to_linker::<T, LockfileInterface>(linker, T::lockfile)
}
