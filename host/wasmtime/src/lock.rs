//! A plugin's lock handle, as the bindings name the interface's `lock`
//! resource.

use lockfile_core::{BackendLock, block_on};

/// A plugin's lock handle: the lock until it is released, and what the plugin
/// may ask about it afterwards. Dropping it, which the store does for every
/// handle left when it is dropped, releases the lock: a plugin that traps
/// leaves nothing locked.
#[derive(Debug)]
pub struct HostLock {
    pub(crate) lock: Option<Box<dyn BackendLock>>,
    pub(crate) path: String,
    pub(crate) content: Option<String>,
    /// The acquisition's fencing token, kept after release for `fencing-token`.
    pub(crate) token: Option<u64>,
}

impl HostLock {
    /// Whether the lock is still held: not released, and not lost (a lock
    /// file cannot be; a database session can end).
    pub(crate) fn held(&self) -> bool {
        self.lock.as_ref().is_some_and(|lock| lock.held())
    }

    /// Releases at once: every backend's lock is free on return (a database's
    /// after one round trip), so the plugin can take it again right away.
    pub(crate) fn release(&mut self) {
        if let Some(lock) = self.lock.take()
            && let Err(error) = block_on(lock.release())
        {
            log::debug!(target: "lockfile", "release: {error}");
        }
    }
}

impl Drop for HostLock {
    /// The plugin let go of the handle, or stopped (it exited, trapped or
    /// was stopped): what the lock guarded is not running any more, so the
    /// lock is released, ending a leased lock's lease, rather than left to
    /// run out as after a crash.
    fn drop(&mut self) {
        self.release();
    }
}
