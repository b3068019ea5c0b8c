//! Where a lock lives in etcd's key space: the namespace is a key prefix,
//! and the lock `NAME` under namespace `NS` is
//!
//! - `NS/NAME`, the record: what the holder (or the last holder) recorded,
//!   kept for good, written at each acquisition, so that its revision is the
//!   acquisition's fencing token;
//! - `NS/NAME\0<lease>-<n>`, the queue: one key per holder or waiter, on
//!   its process's lease. The key created first holds the lock; each waiter
//!   watches the key created just before its own.
//!
//! The NUL keeps one name's queue apart from every other name's keys (no
//! lock name holds a NUL), and the record out of its queue's range.

use lockfile_core::{LockName, LockPathError, TemplateError};

use crate::Error;

/// One lock's keys.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub record: Vec<u8>,
    /// The queue's prefix; its range ends at [`Keys::queue_end`].
    pub queue: Vec<u8>,
}

impl Keys {
    /// The keys of `name` (a lock path, resolved on the text) under
    /// `namespace`.
    pub fn new(namespace: &str, name: &str) -> Result<Self, LockPathError> {
        let name = LockName::new(name)?.canonical();
        let record = format!("{namespace}/{name}").into_bytes();
        let mut queue = record.clone();
        queue.push(0);
        Ok(Keys { record, queue })
    }

    /// The end of the queue's range (exclusive).
    pub fn queue_end(&self) -> Vec<u8> {
        let mut end = self.queue.clone();
        *end.last_mut().expect("the queue prefix ends with a NUL") += 1;
        end
    }

    /// The queue key of one acquisition: the lease it lives on, and a number
    /// that tells apart two acquisitions on one lease.
    pub fn entry(&self, lease: i64, n: u64) -> Vec<u8> {
        let mut key = self.queue.clone();
        key.extend_from_slice(format!("{lease:016x}-{n}").as_bytes());
        key
    }
}

/// Checks a holder's content (the record without zc.lockfile's leading space
/// and newline) against the record rules of lock files.
pub(crate) fn check_content(content: &str) -> Result<(), Error> {
    TemplateError::check_content(content, content).map_err(lockfile_core::Error::from)?;
    Ok(())
}

/// Checks a namespace ([`lockfile_core::check_namespace`]).
pub(crate) fn check_namespace(namespace: &str) -> Result<(), Error> {
    lockfile_core::check_namespace(namespace).map_err(|reason| Error::InvalidNamespace {
        namespace: namespace.chars().take(64).collect(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_names_keys_are_apart_from_every_other_names() {
        let keys = Keys::new("ops", "./jobs//a.lock").unwrap();
        assert_eq!(keys.record, b"ops/jobs/a.lock");
        assert_eq!(keys.queue, b"ops/jobs/a.lock\0");
        assert_eq!(keys.queue_end(), b"ops/jobs/a.lock\x01");
        assert_eq!(
            keys.entry(0x2a, 3),
            b"ops/jobs/a.lock\x00000000000000002a-3"
        );
        // A longer name that starts with this one is outside the queue.
        let longer = Keys::new("ops", "jobs/a.lock/b").unwrap();
        assert!(!longer.record.starts_with(&keys.queue));
        assert!(Keys::new("ops", "../x").is_err());
    }
}
