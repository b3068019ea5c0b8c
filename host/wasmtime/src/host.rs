//! The interface's implementation, shared by every binding: both versions,
//! sync and async (their traits are implemented in `api`).

use std::time::Duration;

use lockfile_core::{BackendFuture, BackendLock, LockOptions, block_on};
use wasmtime::component::Resource;

use crate::lock::HostLock;
use crate::{LockfileCtxView, sandbox};

mod api;

/// Why `acquire` or `read-content` failed, before it is put into either
/// binding's `error`.
enum Failure {
    Lock(lockfile_core::Error),
    NotPermitted(String),
    TooManyLocks(u32),
}

impl Failure {
    /// A path that leads outside the lock directory is the plugin's to be
    /// told `not-permitted`; every other error is the backend's.
    fn from_core(error: lockfile_core::Error) -> Self {
        match error {
            lockfile_core::Error::Io { ref source, .. } => match sandbox::escape(source) {
                Some(escape) => Self::NotPermitted(escape.to_string()),
                None => Self::Lock(error),
            },
            other => Self::Lock(other),
        }
    }
}

/// An acquisition that passed every check the host makes itself.
struct Request {
    content: Option<String>,
    wait: Duration,
}

impl LockfileCtxView<'_> {
    /// Checks everything that does not need the backend, and renders the
    /// content the lock will record.
    fn start_acquire(
        &self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<Request, Failure> {
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
        let mut options = LockOptions::new().field("plugin", self.ctx.plugin.clone());
        options = match template {
            Some(template) => options.content_template(template),
            None => options.no_content(),
        };
        if let Some(hostname) = &self.ctx.hostname {
            options = options.hostname(hostname.clone());
        }
        let content = options.render_content(path).map_err(Failure::Lock)?;
        Ok(Request { content, wait })
    }

    /// `acquire` for synchronous hosts: a wait blocks the calling thread.
    fn acquire_blocking(
        &mut self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<Box<dyn BackendLock>, Failure> {
        let request = self.start_acquire(path, template, wait_ms)?;
        if let Some(ask) = self.ask_if_new(path) {
            self.count_name(path, block_on(ask))?;
        }
        let outcome = (self.ctx.backend).acquire_blocking(path, request.content, request.wait);
        self.outcome(outcome)
    }

    /// `acquire` for async hosts: a wait never blocks the executor thread,
    /// and dropping the future cancels it (the lock is never taken late).
    async fn acquire_async(
        &mut self,
        path: &str,
        template: Option<String>,
        wait_ms: u64,
    ) -> Result<Box<dyn BackendLock>, Failure> {
        let request = self.start_acquire(path, template, wait_ms)?;
        // Each future is awaited before `self` is borrowed again: the view
        // is not `Sync`.
        if let Some(ask) = self.ask_if_new(path) {
            let existed = ask.await;
            self.count_name(path, existed)?;
        }
        let acquire = (self.ctx.backend).acquire(path, request.content, request.wait);
        let outcome = acquire.await;
        self.outcome(outcome)
    }

    /// Whether the backend must be asked if `path` exists before it is
    /// acquired: names the plugin creates count against its budget (a lock
    /// file each, or a database row). `None` for a name known to exist
    /// already (no round trip).
    fn ask_if_new(&self, path: &str) -> Option<BackendFuture<Result<bool, lockfile_core::Error>>> {
        (!self.ctx.files.is_known(path)).then(|| self.ctx.backend.exists(path))
    }

    /// Counts `path` against the budget if the backend said it is new, or
    /// refuses it if the budget is spent.
    fn count_name(
        &mut self,
        path: &str,
        existed: Result<bool, lockfile_core::Error>,
    ) -> Result<(), Failure> {
        let existed = existed.map_err(Failure::from_core)?;
        self.ctx
            .files
            .admit_name(path, existed)
            .map_err(|limit| Failure::NotPermitted(limit.to_string()))
    }

    fn outcome(
        &self,
        outcome: Result<Box<dyn BackendLock>, lockfile_core::Error>,
    ) -> Result<Box<dyn BackendLock>, Failure> {
        outcome.map_err(|error| {
            if self.ctx.log_failures {
                error.log_failure();
            }
            Failure::from_core(error)
        })
    }

    fn insert(
        &mut self,
        path: String,
        lock: Box<dyn BackendLock>,
    ) -> wasmtime::Result<Resource<HostLock>> {
        let content = lock.content().map(str::to_owned);
        let token = lock.token();
        let lost = lock.lost();
        let handle = self.table.push(HostLock {
            lock: Some(lock),
            path,
            content,
            token,
        })?;
        self.ctx.live_locks += 1;
        if let Some(lost) = lost {
            let path = &self.table.get(&handle)?.path;
            self.ctx.losses.watch(handle.rep(), path, lost);
        }
        Ok(handle)
    }

    fn read_holder(&mut self, path: &str) -> Result<Option<String>, Failure> {
        if let Some(reason) = sandbox::refuse(path) {
            return Err(Failure::NotPermitted(reason));
        }
        block_on(self.ctx.backend.read_content(path)).map_err(Failure::from_core)
    }

    fn lock_mut(&mut self, handle: &Resource<HostLock>) -> wasmtime::Result<&mut HostLock> {
        Ok(self.table.get_mut(handle)?)
    }

    fn forget(&mut self, handle: Resource<HostLock>) -> wasmtime::Result<()> {
        self.ctx.losses.forget(handle.rep());
        self.table.delete(handle)?;
        self.ctx.live_locks -= 1;
        Ok(())
    }
}
