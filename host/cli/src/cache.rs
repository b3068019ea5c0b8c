//! The compile cache: compiled plugins on disk, keyed by the component's bytes
//! and the engine's compatibility hash (wasmtime version, target, settings).
//!
//! A cache entry is native code that wasmtime maps and runs without checking
//! it, so the cache trusts only what the user running `lockfile` alone could
//! have written, as OpenSSH's StrictModes trusts `~/.ssh`: the directory must
//! belong to that user (or root) and be writable by no one else, the entry be
//! a regular file of that user's, writable by no one else, and not a symbolic
//! link. The checks are made on the open directory and the open entry, and
//! the entry is loaded from that very descriptor, so nothing can be swapped in
//! between. Anything else is refused with one line that names it, and the
//! plugin runs from its own bytes; nothing is deleted. A new directory is
//! made 0700, entries 0600 through a temporary file and a rename.
//!
//! On Windows the cache is not used: ownership and ACLs are not checked there.
//! Every lookup and store there is `CacheError::Unsupported`, so the rest of
//! this module is unused on Windows.
#![cfg_attr(not(unix), allow(dead_code))]

use std::fmt;
#[cfg(unix)]
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

#[cfg(unix)]
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Compiled plugins in one directory.
pub struct CompileCache {
    dir: PathBuf,
}

/// Why the cache was not used.
#[derive(Debug)]
pub enum CacheError {
    /// A directory or entry someone else could have written: never loaded.
    Untrusted(String),
    /// The cache cannot be used (a missing parent, a full disk, no
    /// permission).
    Unusable(String),
    /// There is no cache on this system (Windows).
    #[cfg(not(unix))]
    Unsupported,
}

impl fmt::Display for CacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Untrusted(why) => write!(f, "not trusting the compile cache: {why}"),
            Self::Unusable(why) => write!(f, "the compile cache is unusable: {why}"),
            #[cfg(not(unix))]
            Self::Unsupported => write!(
                f,
                "the compile cache is not used on Windows, where its owner and permissions \
                 are not checked: plugins are compiled as they start"
            ),
        }
    }
}

/// What a look in the cache found.
pub enum Lookup {
    /// The compiled plugin, loaded from this entry.
    Hit(Component, PathBuf),
    /// No entry yet: compile, then [`CompileCache::store`].
    Miss,
    /// An entry of ours that wasmtime will not load (another wasmtime, a
    /// damaged file): compile and store over it.
    Stale(PathBuf, anyhow::Error),
}

impl CompileCache {
    /// The default directory: `$XDG_CACHE_HOME/lockfile`, else
    /// `~/.cache/lockfile`; none on Windows, where the cache is not used.
    pub fn default_dir() -> Option<PathBuf> {
        if cfg!(windows) {
            return None;
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("lockfile"))
    }

    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

#[cfg(unix)]
impl CompileCache {
    /// The entry's file name: SHA-256 of the engine's compatibility hash and
    /// the component's bytes.
    fn entry_name(engine: &Engine, component: &[u8]) -> String {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update(component);
        let key: String = hasher
            .0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{key}.cwasm")
    }

    /// Loads `component`'s compiled code if the cache holds a trusted entry
    /// for it.
    pub fn load(&self, engine: &Engine, component: &[u8]) -> Result<Lookup, CacheError> {
        let Some(dir) = sys::open_dir(&self.dir, false)? else {
            return Ok(Lookup::Miss);
        };
        let name = Self::entry_name(engine, component);
        let path = self.dir.join(&name);
        let Some(entry) = sys::open_entry(&dir, &name, &path)? else {
            return Ok(Lookup::Miss);
        };
        // SAFETY: the entry is a file only this user could have written (see
        // the module's docs), and only `store` writes them, with wasmtime's
        // own output for an engine of this compatibility hash (the key).
        match unsafe { sys::deserialize(engine, entry) } {
            Ok(component) => Ok(Lookup::Hit(component, path)),
            Err(error) => Ok(Lookup::Stale(path, error)),
        }
    }

    /// Stores `compiled`, the code of `component`, creating the directory
    /// (0700) if it is missing; returns the entry's path.
    pub fn store(
        &self,
        engine: &Engine,
        component: &[u8],
        compiled: &[u8],
    ) -> Result<PathBuf, CacheError> {
        let dir = sys::open_dir(&self.dir, true)?.expect("created if missing");
        let name = Self::entry_name(engine, component);
        let path = self.dir.join(&name);
        sys::write_entry(&dir, &name, &path, compiled)?;
        Ok(path)
    }
}

/// Feeds `Hash` output into SHA-256, for the engine's compatibility hash.
#[cfg(unix)]
struct Sha256Hasher(Sha256);

#[cfg(unix)]
impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
}

#[cfg(unix)]
mod sys {
    use std::io::{self, Read, Write};
    use std::path::Path;

    use anyhow::Context;
    use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
    use cap_std::ambient_authority;
    use cap_std::fs::{Dir, File, MetadataExt, OpenOptions, OpenOptionsExt};
    use wasmtime::Engine;
    use wasmtime::component::Component;

    use super::CacheError;

    /// Write permission for the group or others.
    const WRITABLE_BY_OTHERS: u32 = 0o022;

    fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// Opens the cache directory (following links to it: where it lives is
    /// the user's choice) and checks the open directory: it belongs to this
    /// user or root and no one else can write it. Creates it, 0700, if
    /// `create` and it is missing; otherwise `None` if it is missing.
    pub(super) fn open_dir(path: &Path, create: bool) -> Result<Option<Dir>, CacheError> {
        let unusable = |error: io::Error| {
            CacheError::Unusable(format!("cache directory '{}': {error}", path.display()))
        };
        if create {
            // Missing parents are made 0700 as well; existing ones are left.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(unusable)?;
        }
        let dir = match Dir::open_ambient_dir(path, ambient_authority()) {
            // Nothing stored yet: the lookup misses, and `store` makes it.
            Err(error) if !create && error.kind() == io::ErrorKind::NotFound => return Ok(None),
            opened => opened.map_err(unusable)?,
        };
        let meta = dir.dir_metadata().map_err(unusable)?;
        let what = format!("cache directory '{}'", path.display());
        let risk = "anyone could plant code in it";
        let fix = "use a directory of your own";
        if meta.uid() != euid() && meta.uid() != 0 {
            return Err(not_yours(&what, meta.uid(), " or root", risk, fix));
        }
        if meta.mode() & WRITABLE_BY_OTHERS != 0 {
            let fix = format!("`chmod go-w` it or {fix}");
            return Err(writable(&what, meta.mode(), risk, &fix));
        }
        Ok(Some(dir))
    }

    /// Opens the entry `name` without following a link and checks the open
    /// file: a regular file of this user's that no one else can write.
    /// `None` if there is no entry.
    pub(super) fn open_entry(
        dir: &Dir,
        name: &str,
        path: &Path,
    ) -> Result<Option<File>, CacheError> {
        let what = format!("cache entry '{}'", path.display());
        let mut options = OpenOptions::new();
        options.read(true).follow(FollowSymlinks::No);
        // A FIFO in its place must not block the run.
        options.custom_flags(libc::O_NONBLOCK);
        let file = match dir.open_with(name, &options) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) if error.raw_os_error() == Some(libc::ELOOP) => {
                return Err(CacheError::Untrusted(format!(
                    "{what} is a symbolic link, which the cache never follows: remove it"
                )));
            }
            Err(error) => return Err(CacheError::Unusable(format!("{what}: {error}"))),
        };
        let meta = file
            .metadata()
            .map_err(|error| CacheError::Unusable(format!("{what}: {error}")))?;
        if !meta.is_file() {
            return Err(CacheError::Untrusted(format!(
                "{what} is not a regular file: remove it"
            )));
        }
        let risk = "its code could be anyone's";
        if meta.uid() != euid() {
            return Err(not_yours(&what, meta.uid(), "", risk, "remove it"));
        }
        if meta.mode() & WRITABLE_BY_OTHERS != 0 {
            return Err(writable(&what, meta.mode(), risk, "remove it"));
        }
        Ok(Some(file))
    }

    fn not_yours(what: &str, owner: u32, or_root: &str, risk: &str, fix: &str) -> CacheError {
        CacheError::Untrusted(format!(
            "{what} belongs to uid {owner}, not to you (uid {}){or_root}: {risk}; {fix}",
            euid()
        ))
    }

    fn writable(what: &str, mode: u32, risk: &str, fix: &str) -> CacheError {
        CacheError::Untrusted(format!(
            "{what} can be written by others than its owner (mode {:04o}): {risk}; {fix}",
            mode & 0o7777
        ))
    }

    /// Loads the compiled component from the open, checked `entry`.
    ///
    /// # Safety
    ///
    /// As [`Component::deserialize`]: `entry` holds wasmtime's own output for
    /// this engine.
    pub(super) unsafe fn deserialize(
        engine: &Engine,
        mut entry: File,
    ) -> anyhow::Result<Component> {
        // On Linux, wasmtime maps the file itself (no copy) when it opens it
        // through /proc/self/fd: that magic link is the inode already open
        // and checked, whatever the path names now.
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let by_descriptor = format!("/proc/self/fd/{}", entry.as_raw_fd());
            if Path::new(&by_descriptor).exists() {
                // SAFETY: as this function's.
                return Ok(unsafe { Component::deserialize_file(engine, &by_descriptor) }?);
            }
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).context("reading the entry")?;
        // SAFETY: as this function's.
        Ok(unsafe { Component::deserialize(engine, &bytes) }?)
    }

    /// Writes `compiled` under `name`: into a new 0600 file, then renamed
    /// into place, so a concurrent run never loads half a file.
    pub(super) fn write_entry(
        dir: &Dir,
        name: &str,
        path: &Path,
        compiled: &[u8],
    ) -> Result<(), CacheError> {
        let unusable = |error: io::Error| {
            CacheError::Unusable(format!("writing '{}': {error}", path.display()))
        };
        let partial = format!("{name}.partial-{}", std::process::id());
        // A partial file a killed run of the same pid left: ours to replace.
        let _ = dir.remove_file(&partial);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true).mode(0o600);
        let written = dir
            .open_with(&partial, &options)
            .and_then(|mut file| file.write_all(compiled).and_then(|()| file.sync_data()))
            .and_then(|()| dir.rename(&partial, dir, name));
        if let Err(error) = written {
            let _ = dir.remove_file(&partial);
            return Err(unusable(error));
        }
        Ok(())
    }
}

/// No cache on Windows: owners and ACLs are not checked there.
#[cfg(not(unix))]
impl CompileCache {
    pub fn load(&self, _: &Engine, _: &[u8]) -> Result<Lookup, CacheError> {
        Err(CacheError::Unsupported)
    }

    pub fn store(&self, _: &Engine, _: &[u8], _: &[u8]) -> Result<PathBuf, CacheError> {
        Err(CacheError::Unsupported)
    }
}
