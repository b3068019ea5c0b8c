//! The interface's implementation, shared by the sync and async bindings.

use std::time::{Duration, Instant};

use lockfile_core::{Attempt, Backoff, LockFile, LockOptions};
use wasmtime::component::Resource;

use crate::bindings::r#async::lockfile::lockfile::lockfile as async_api;
use crate::bindings::sync::lockfile::lockfile::lockfile as sync_api;
use crate::{LockfileCtxView, sandbox};

/// A plugin's lock handle: the lock until it is released, and what the plugin
/// may ask about it afterwards. Dropping it, which the store does for every
/// handle left when it is dropped, releases the lock: a plugin that traps
/// leaves nothing locked.
#[derive(Debug)]
pub struct HostLock {
    lock: Option<LockFile>,
    path: String,
    content: Option<String>,
}

/// Why `acquire` or `read-content` failed, before it is put into either
/// binding's `error`.
enum Failure {
    Lock(lockfile_core::Error),
    NotPermitted(String),
    TooManyLocks(u32),
}

impl Failure {
    fn from_core(path: &str, error: lockfile_core::Error) -> Self {
        match error {
            lockfile_core::Error::Io { ref source, .. } if sandbox::is_escape(source) => {
                Self::NotPermitted(sandbox::escape_message(path))
            }
            other => Self::Lock(other),
        }
    }
}

impl LockfileCtxView<'_> {
    /// Checks everything that does not need the file, then builds the options.
    fn start_acquire(
        &self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<LockOptions, Failure> {
        if let Some(reason) = sandbox::refuse(path) {
            return Err(Failure::NotPermitted(reason));
        }
        if self.ctx.live_locks >= self.ctx.max_locks {
            return Err(Failure::TooManyLocks(self.ctx.max_locks));
        }
        let mut wait = Duration::from_millis(wait_ms);
        if let Some(max) = self.ctx.max_wait {
            wait = wait.min(max);
        }
        let mut options = LockOptions::new()
            .wait(wait)
            .log_failures(self.ctx.log_failures)
            .field("plugin", self.ctx.plugin.clone());
        options = match template {
            Some(template) => options.content_template(template),
            None => options.no_content(),
        };
        if let Some(hostname) = &self.ctx.hostname {
            options = options.hostname(hostname.clone());
        }
        Ok(options)
    }

    fn acquire_blocking(
        &mut self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<LockFile, Failure> {
        let options = self.start_acquire(path, template, wait_ms)?;
        let dir = &self.ctx.dir;
        options
            .lock_with(path, || sandbox::open_for_locking(dir, path))
            .map_err(|e| Failure::from_core(path, e))
    }

    /// Like [`acquire_blocking`](Self::acquire_blocking), sleeping on the async
    /// runtime between tries so a wait never blocks the executor thread.
    async fn acquire_async(
        &mut self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<LockFile, Failure> {
        let options = self.start_acquire(path, template, wait_ms)?;
        let dir = &self.ctx.dir;
        let fail = |e| Failure::from_core(path, e);
        let mut pending = options
            .prepare(path, || sandbox::open_for_locking(dir, path))
            .map_err(fail)?;
        let start = Instant::now();
        let mut backoff = Backoff::new();
        loop {
            pending = match pending.try_lock().map_err(fail)? {
                Attempt::Taken(lock) => return Ok(lock),
                Attempt::Held(pending) => pending,
            };
            let Some(delay) = backoff.delay(start, options.wait_limit()) else {
                return Err(Failure::Lock(pending.into_error()));
            };
            tokio::time::sleep(delay).await;
        }
    }

    fn insert(&mut self, path: String, lock: LockFile) -> wasmtime::Result<Resource<HostLock>> {
        let content = lock.content().map(str::to_owned);
        let handle = self.table.push(HostLock {
            lock: Some(lock),
            path,
            content,
        })?;
        self.ctx.live_locks += 1;
        Ok(handle)
    }

    fn read_holder(&mut self, path: &str) -> Result<Option<String>, Failure> {
        if let Some(reason) = sandbox::refuse(path) {
            return Err(Failure::NotPermitted(reason));
        }
        let file = sandbox::open_for_reading(&self.ctx.dir, path).map_err(|e| {
            Failure::from_core(
                path,
                lockfile_core::Error::Io {
                    operation: "open",
                    path: path.into(),
                    source: e,
                },
            )
        })?;
        lockfile_core::read_content_from(&file).map_err(|e| {
            Failure::Lock(lockfile_core::Error::Io {
                operation: "read",
                path: path.into(),
                source: e,
            })
        })
    }

    fn lock_mut(&mut self, handle: &Resource<HostLock>) -> wasmtime::Result<&mut HostLock> {
        Ok(self.table.get_mut(handle)?)
    }

    fn forget(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        self.ctx.live_locks -= 1;
        Ok(())
    }
}

/// Implements one binding's traits: `$api` is its generated interface module,
/// `$acquire` the body of `acquire`, the only function that may wait.
macro_rules! implement {
    ($api:ident, $($acquire:tt)*) => {
        impl From<Failure> for $api::Error {
            fn from(failure: Failure) -> Self {
                use lockfile_core::Error as E;
                match failure {
                    Failure::NotPermitted(reason) => Self::NotPermitted(reason),
                    Failure::TooManyLocks(max) => Self::TooManyLocks(max),
                    Failure::Lock(E::Locked { holder, .. }) => Self::Locked(holder),
                    Failure::Lock(E::TimedOut { holder, .. }) => Self::TimedOut(holder),
                    Failure::Lock(error @ E::InvalidTemplate(_)) => Self::InvalidTemplate(error.to_string()),
                    Failure::Lock(error @ E::Io { .. }) => Self::Io(error.to_string()),
                }
            }
        }

        impl $api::Host for LockfileCtxView<'_> {
            fn read_content(&mut self, path: String) -> wasmtime::Result<Result<Option<String>, $api::Error>> {
                Ok(self.read_holder(&path).map_err(Into::into))
            }
        }

        impl $api::HostLock for LockfileCtxView<'_> {
            $($acquire)*

            fn content(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<Option<String>> {
                Ok(self.lock_mut(&handle)?.content.clone())
            }

            fn path(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<String> {
                Ok(self.lock_mut(&handle)?.path.clone())
            }

            fn release(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<()> {
                self.lock_mut(&handle)?.lock.take();
                Ok(())
            }

            fn drop(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<()> {
                self.forget(handle)
            }
        }
    };
}

implement!(
    sync_api,
    fn acquire(
        &mut self,
        path: String,
        options: sync_api::Options,
    ) -> wasmtime::Result<Result<Resource<HostLock>, sync_api::Error>> {
        match self.acquire_blocking(&path, options.content_template, options.wait_ms) {
            Ok(lock) => Ok(Ok(self.insert(path, lock)?)),
            Err(failure) => Ok(Err(failure.into())),
        }
    }
);

implement!(
    async_api,
    async fn acquire(
        &mut self,
        path: String,
        options: async_api::Options,
    ) -> wasmtime::Result<Result<Resource<HostLock>, async_api::Error>> {
        match self
            .acquire_async(&path, options.content_template, options.wait_ms)
            .await
        {
            Ok(lock) => Ok(Ok(self.insert(path, lock)?)),
            Err(failure) => Ok(Err(failure.into())),
        }
    }
);
