//! The generated bindings of `lockfile:lockfile@0.2.0`, for hosts whose own
//! `bindgen!` world includes the interface: map the package onto this
//! module with `with:`, as wasmtime-wasi's and wasi-http's bindings are
//! mapped, and implement nothing. The `lock` resource is [`HostLock`], the
//! host traits are implemented on [`LockfileCtxView`], and
//! [`add_to_linker_sync`] or [`add_to_linker_async`] adds the interface
//! (0.2.0, and 0.1.0 for plugins built against it, whose bindings stay
//! private: new worlds import 0.2.0).
//!
//! ```
//! use lockfile_host::{LockfileCtx, LockfileCtxView, LockfileView};
//! use wasmtime::Engine;
//! use wasmtime::component::{HasSelf, Linker, ResourceTable};
//!
//! wasmtime::component::bindgen!({
//!     inline: "
//!         package my:host;
//!         interface audit { note: func(line: string); }
//!         world my-plugin {
//!             import lockfile:lockfile/lockfile@0.2.0;
//!             import audit;
//!         }
//!     ",
//!     // Your wit/, with this repository's wit/lockfile.wit in its deps/.
//!     path: "wit",
//!     with: { "lockfile:lockfile": lockfile_host::bindings::sync::lockfile::lockfile },
//! });
//!
//! struct Plugin {
//!     locks: LockfileCtx,
//!     table: ResourceTable,
//! }
//!
//! impl LockfileView for Plugin {
//!     fn lockfile(&mut self) -> LockfileCtxView<'_> {
//!         LockfileCtxView { ctx: &mut self.locks, table: &mut self.table }
//!     }
//! }
//!
//! impl my::host::audit::Host for Plugin {
//!     fn note(&mut self, line: String) {
//!         println!("{line}");
//!     }
//! }
//!
//! # fn main() -> wasmtime::Result<()> {
//! let mut linker = Linker::<Plugin>::new(&Engine::default());
//! lockfile_host::add_to_linker_sync(&mut linker)?;
//! my::host::audit::add_to_linker::<_, HasSelf<_>>(&mut linker, |plugin| plugin)?;
//! // `MyPlugin::instantiate(&mut store, &component, &linker)` as usual. The
//! // world's lockfile types are this crate's, in either flavour:
//! let _same: fn(
//!     lockfile::lockfile::types::Error,
//! ) -> lockfile_host::bindings::r#async::lockfile::lockfile::types::Error = |error| error;
//! # Ok(())
//! # }
//! ```
//!
//! The bindings are generated once, in `r#async`: the `types` interface
//! (`error`, `options`, `timed-out`) exists there only, and [`sync`] reuses
//! it through `with:`, so a value is the same Rust type in both. What differs
//! is the host trait of `lockfile`: in `r#async` only `acquire` is async, and
//! its waits sleep on tokio; in `sync` a wait blocks the calling thread.
//!
//! [`HostLock`]: crate::HostLock
//! [`LockfileCtxView`]: crate::LockfileCtxView
//! [`add_to_linker_sync`]: crate::add_to_linker_sync
//! [`add_to_linker_async`]: crate::add_to_linker_async

/// Bindings whose `acquire` is async, for stores with async support; the
/// `types` of both flavours.
pub mod r#async {
    #![allow(missing_docs)]

    wasmtime::component::bindgen!({
        path: "wit",
        world: "imports",
        imports: {
            "lockfile:lockfile/lockfile.[static]lock.acquire": async | trappable,
            default: trappable,
        },
        with: { "lockfile:lockfile/lockfile.lock": crate::HostLock },
    });
}

/// Bindings whose host functions are all synchronous; their `types` are
/// `r#async`'s.
pub mod sync {
    #![allow(missing_docs)]

    wasmtime::component::bindgen!({
        path: "wit",
        world: "imports",
        imports: { default: trappable },
        with: {
            "lockfile:lockfile/types": crate::bindings::r#async::lockfile::lockfile::types,
            "lockfile:lockfile/lockfile.lock": crate::HostLock,
        },
        require_store_data_send: true,
    });
}

/// `lockfile:lockfile@0.1.0`, from its frozen text in `wit/compat/`, so that
/// plugins built against it keep running. Its `error` and `options` sit
/// beside the async `acquire` in one interface, so its sync bindings cannot
/// reuse the async ones' types (the reason 0.2.0 moved them into `types`):
/// each flavour has its own, and the host converts into either.
pub(crate) mod v0_1 {
    /// Sync bindings of 0.1.0.
    pub(crate) mod sync {
        // Generated whole; the host uses the interface's traits and linker.
        #![allow(dead_code, missing_docs)]

        wasmtime::component::bindgen!({
            path: ["wit", "wit/compat/lockfile-0.1.0.wit"],
            world: "lockfile:lockfile/imports@0.1.0",
            imports: { default: trappable },
            with: { "lockfile:lockfile/lockfile@0.1.0.lock": crate::HostLock },
            require_store_data_send: true,
        });
    }

    /// Async bindings of 0.1.0.
    pub(crate) mod r#async {
        #![allow(dead_code, missing_docs)]

        wasmtime::component::bindgen!({
            path: ["wit", "wit/compat/lockfile-0.1.0.wit"],
            world: "lockfile:lockfile/imports@0.1.0",
            imports: {
                "lockfile:lockfile/lockfile@0.1.0.[static]lock.acquire": async | trappable,
                default: trappable,
            },
            with: { "lockfile:lockfile/lockfile@0.1.0.lock": crate::HostLock },
        });
    }
}
