//! The generated host traits, implemented on [`LockfileCtxView`] for each
//! version of the interface (0.2.0, and 0.1.0 for plugins built against it)
//! and each flavour (sync, async), over the one implementation in the parent
//! module. Only `acquire` differs between flavours, and only the `timed-out`
//! error and the lock's state between versions.

use std::time::Duration;

use wasmtime::component::Resource;

use super::{Failure, HostLock};
use crate::LockfileCtxView;
use crate::bindings::r#async::lockfile::lockfile::lockfile as async_api;
use crate::bindings::r#async::lockfile::lockfile::types;
use crate::bindings::sync::lockfile::lockfile::lockfile as sync_api;
use crate::bindings::v0_1::r#async::lockfile::lockfile0_1_0::lockfile as async_v0_1;
use crate::bindings::v0_1::sync::lockfile::lockfile0_1_0::lockfile as sync_v0_1;

/// Converts a [`Failure`] into a version's `error`; `$timed_out` builds its
/// `timed-out` case from the holder's record and how long the host waited.
macro_rules! error_from_failure {
    ($error:ty, $timed_out:expr) => {
        impl From<Failure> for $error {
            fn from(failure: Failure) -> Self {
                use lockfile_core::Error as E;
                match failure {
                    Failure::NotPermitted(reason) => Self::NotPermitted(reason),
                    Failure::TooManyLocks(max) => Self::TooManyLocks(max),
                    Failure::Lock(E::Locked { holder, .. }) => Self::Locked(holder),
                    Failure::Lock(E::TimedOut { holder, waited, .. }) => {
                        ($timed_out)(holder, waited)
                    }
                    Failure::Lock(error @ E::InvalidTemplate(_)) => {
                        Self::InvalidTemplate(error.to_string())
                    }
                    // The interface has no `lost` error: a lost lock is
                    // seen through `held`, and its release says why as `io`.
                    Failure::Lock(error @ (E::Io { .. } | E::Lost { .. })) => {
                        Self::Io(error.to_string())
                    }
                }
            }
        }
    };
}

// 0.2.0's types are one set for both flavours: the sync bindings reuse the
// async ones'.
error_from_failure!(types::Error, |holder, waited: Duration| {
    types::Error::TimedOut(types::TimedOut {
        waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
        holder,
    })
});
error_from_failure!(sync_v0_1::Error, |holder, _| sync_v0_1::Error::TimedOut(
    holder
));
error_from_failure!(async_v0_1::Error, |holder, _| async_v0_1::Error::TimedOut(
    holder
));

// `types` has no functions; its (empty) host trait is one for both flavours.
impl types::Host for LockfileCtxView<'_> {}

/// Implements one binding's traits: `$api` is its generated interface
/// module, `$methods` the lock methods that differ (`acquire`, the only
/// function that may wait, and what a version adds).
macro_rules! implement {
    ($api:ident { $($methods:tt)* }) => {
        impl $api::Host for LockfileCtxView<'_> {
            fn read_content(
                &mut self,
                path: String,
            ) -> wasmtime::Result<Result<Option<String>, $api::Error>> {
                Ok(self.read_holder(&path).map_err(Into::into))
            }
        }

        impl $api::HostLock for LockfileCtxView<'_> {
            $($methods)*

            fn content(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<Option<String>> {
                Ok(self.lock_mut(&handle)?.content.clone())
            }

            fn path(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<String> {
                Ok(self.lock_mut(&handle)?.path.clone())
            }

            fn release(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<()> {
                self.ctx.losses.forget(handle.rep());
                self.lock_mut(&handle)?.release();
                Ok(())
            }

            fn drop(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<()> {
                self.forget(handle)
            }
        }
    };
}

/// `acquire` for a binding whose host functions are synchronous.
macro_rules! acquire_sync {
    ($api:ident) => {
        fn acquire(
            &mut self,
            path: String,
            options: $api::Options,
        ) -> wasmtime::Result<Result<Resource<HostLock>, $api::Error>> {
            match self.acquire_blocking(&path, options.content_template, options.wait_ms) {
                Ok(lock) => Ok(Ok(self.insert(path, lock)?)),
                Err(failure) => Ok(Err(failure.into())),
            }
        }
    };
}

/// `acquire` for a binding whose `acquire` is async.
macro_rules! acquire_async {
    ($api:ident) => {
        async fn acquire(
            &mut self,
            path: String,
            options: $api::Options,
        ) -> wasmtime::Result<Result<Resource<HostLock>, $api::Error>> {
            match self
                .acquire_async(&path, options.content_template, options.wait_ms)
                .await
            {
                Ok(lock) => Ok(Ok(self.insert(path, lock)?)),
                Err(failure) => Ok(Err(failure.into())),
            }
        }
    };
}

/// What 0.2.0 added to the lock: whether it is still held, and its token.
macro_rules! lock_state {
    () => {
        fn held(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<bool> {
            Ok(self.lock_mut(&handle)?.held())
        }

        fn fencing_token(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<Option<u64>> {
            Ok(self.lock_mut(&handle)?.token)
        }
    };
}

implement!(sync_api {
    acquire_sync!(sync_api);
    lock_state!();
});

implement!(async_api {
    acquire_async!(async_api);
    lock_state!();
});

implement!(sync_v0_1 {
    acquire_sync!(sync_v0_1);
});

implement!(async_v0_1 {
    acquire_async!(async_v0_1);
});
