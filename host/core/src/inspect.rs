//! Inspecting a lock file without locking it: its record, and whether
//! someone holds it now.

use std::fs::File;
use std::io;

use crate::{Inspection, read_content_from, sys};

/// The record of the open lock file `file`, as [`read_content_from`] reads
/// it, and whether it is locked now: on Linux from /proc/locks (with the
/// holder's pid), on Windows by a read of byte 0, which a holder's lock makes
/// fail (no pid; `Unknown` under Wine, which does not enforce it), elsewhere
/// `Unknown`. Takes no lock, so it never makes a concurrent taker fail.
pub fn inspect_from(file: &File) -> io::Result<Inspection> {
    Ok(Inspection {
        content: read_content_from(file)?,
        locked: sys::lock_state(file),
        token: None,
        lease_left: None,
    })
}
