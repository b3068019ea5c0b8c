//! Reading what a lock file's holder wrote, without locking.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::template::MAX_RECORD;
use crate::{Error, open, sys};

/// Reads what the holder wrote into the lock file at `path`, without locking it.
///
/// Returns the first line after zc.lockfile's leading space, or `None` when the
/// file is empty or holds only the space and newline (a `SimpleLockFile`, or an
/// empty template). Taking no lock, it never makes a concurrent taker fail.
/// A symbolic link or a file with several hard links at `path` is refused, as
/// [`LockOptions::lock`](crate::LockOptions::lock) refuses them.
pub fn read_content(path: impl AsRef<Path>) -> Result<Option<String>, Error> {
    let path = path.as_ref();
    let file = open::open_for_reading(path).map_err(|e| Error::io("open", path, e))?;
    read_content_from(&file).map_err(|e| Error::io("read", path, e))
}

/// Like [`read_content`], from a file that is already open (for example through
/// a capability-confined directory).
pub fn read_content_from(file: &File) -> io::Result<Option<String>> {
    let mut buf = [0; MAX_RECORD];
    let len = sys::read_at_start(file, &mut buf).map_err(|e| sys::explain(file, e))?;
    if len == 0 {
        // Nothing to read: an empty lock file, or a device such as /dev/null
        // that is no lock file at all. Only here is the type worth a look.
        sys::ensure_regular(file)?;
    }
    Ok(parse_record(&buf[..len]))
}

pub(crate) fn parse_record(bytes: &[u8]) -> Option<String> {
    let bytes = bytes.strip_prefix(b" ").unwrap_or(bytes);
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    (!line.is_empty()).then(|| String::from_utf8_lossy(line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_record;

    #[test]
    fn strips_the_space_and_the_newline() {
        assert_eq!(parse_record(b" 9257\n").as_deref(), Some("9257"));
        assert_eq!(
            parse_record(b" 9257;myhost\n").as_deref(),
            Some("9257;myhost")
        );
        assert_eq!(parse_record(b" 111\n 14249\n").as_deref(), Some("111"));
        assert_eq!(parse_record(b"no space").as_deref(), Some("no space"));
        assert_eq!(parse_record(b" \n"), None);
        assert_eq!(parse_record(b""), None);
    }
}
