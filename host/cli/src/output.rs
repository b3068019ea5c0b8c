//! What the command prints on standard output. A reader that closed its end
//! (`lockfile inspect x | head -1`) ends nothing but the output: the command
//! exits with its own status, not a panic's.

use std::fmt::Display;
use std::io::{ErrorKind, Write};

/// Prints `text` and a newline on standard output.
pub fn line(text: impl Display) {
    if let Err(error) = writeln!(std::io::stdout().lock(), "{text}")
        && error.kind() != ErrorKind::BrokenPipe
    {
        eprintln!("lockfile: couldn't write to standard output: {error}");
    }
}
