//! Loading plugin components: one engine configuration, a compile cache on
//! disk, and clear errors for files that are not runnable command components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

/// The engine every plugin runs on. `lockfile compile` and `lockfile run` must
/// agree on it, or cached code would not load.
pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    // Lets `--timeout` interrupt plugins that compute without calling the host.
    config.epoch_interruption(true);
    Ok(Engine::new(&config)?)
}

/// Compiled plugins on disk, keyed by the component's bytes and the engine's
/// compatibility hash (wasmtime version, target, settings).
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The default directory: `$XDG_CACHE_HOME/lockfile`, else (on Windows)
    /// `%LOCALAPPDATA%\lockfile`, else `~/.cache/lockfile`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| {
                cfg!(windows)
                    .then(|| std::env::var_os("LOCALAPPDATA").map(PathBuf::from))
                    .flatten()
            })
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("lockfile"))
    }

    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn entry(&self, engine: &Engine, component: &[u8]) -> PathBuf {
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        hasher.0.update(component);
        let key: String = hasher
            .0
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(format!("{key}.cwasm"))
    }

    /// Stores compiled code under `entry`.
    fn store(&self, entry: &Path, compiled: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cache directory '{}'", self.dir.display()))?;
        // Write then rename, so a concurrent run never loads half a file.
        let partial = entry.with_extension(format!("partial-{}", std::process::id()));
        std::fs::write(&partial, compiled)
            .with_context(|| format!("writing '{}'", partial.display()))?;
        std::fs::rename(&partial, entry).with_context(|| format!("writing '{}'", entry.display()))
    }
}

/// Feeds `Hash` output into SHA-256, for the engine's compatibility hash.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the digest is used")
    }
}

/// Reads `path` and checks that it is a component, before anything compiles.
fn read_component(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read plugin '{}'", path.display()))?;
    if wasmparser::Parser::is_core_wasm(&bytes) {
        bail!(
            "'{}' is a core WebAssembly module, not a component: build plugins with `--target wasm32-wasip2`",
            path.display()
        );
    }
    if !wasmparser::Parser::is_component(&bytes) {
        let native = [
            &b"\x7fELF"[..],
            b"MZ",
            b"\xcf\xfa\xed\xfe",
            b"\xca\xfe\xba\xbe",
        ]
        .iter()
        .any(|magic| bytes.starts_with(magic));
        if native {
            bail!(
                "'{}' is a native executable, not a WebAssembly component: build plugins with `cargo build --target wasm32-wasip2` (`rustup target add wasm32-wasip2` first)",
                path.display()
            );
        }
        bail!(
            "'{}' is not a WebAssembly component: build plugins with `--target wasm32-wasip2`",
            path.display()
        );
    }
    Ok(bytes)
}

/// Loads the plugin at `path`, from the cache when it has it.
pub fn load(engine: &Engine, path: &Path, cache: Option<&CompileCache>) -> Result<Component> {
    let bytes = read_component(path)?;
    let Some(cache) = cache else {
        return compile(engine, path, &bytes);
    };
    let entry = cache.entry(engine, &bytes);
    if entry.exists() {
        // SAFETY: entries are only written by `CompileCache::store`, from
        // wasmtime's own output for an engine with this compatibility hash.
        match unsafe { Component::deserialize_file(engine, &entry) } {
            Ok(component) => {
                log::info!("compile cache hit: {}", entry.display());
                return Ok(component);
            }
            Err(error) => log::warn!(
                "ignoring unusable cache entry {}: {error:#}",
                entry.display()
            ),
        }
    }
    log::info!("compile cache miss: compiling {}", path.display());
    let compiled = precompile_bytes(engine, path, &bytes)?;
    match cache.store(&entry, &compiled) {
        Ok(()) => log::info!("stored {}", entry.display()),
        // A cache is an optimisation: an unwritable one (a read-only HOME, a
        // full disk) must not stop the plugin from running.
        Err(error) => log::warn!("running uncached: the compile cache is unusable: {error:#}"),
    }
    // SAFETY: `compiled` is wasmtime's own output for this very engine.
    Ok(unsafe { Component::deserialize(engine, &compiled) }?)
}

fn precompile_bytes(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Vec<u8>> {
    engine
        .precompile_component(bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile '{}'", path.display()))
}

/// Why [`precompile`] failed: the plugin, or the cache.
pub enum PrecompileError {
    /// The plugin cannot be read or compiled.
    Plugin(anyhow::Error),
    /// The compiled code cannot be stored.
    Cache(anyhow::Error),
}

/// Compiles the plugin into the cache, returning the entry's path.
pub fn precompile(
    engine: &Engine,
    path: &Path,
    cache: &CompileCache,
) -> Result<PathBuf, PrecompileError> {
    let bytes = read_component(path).map_err(PrecompileError::Plugin)?;
    let entry = cache.entry(engine, &bytes);
    let compiled = precompile_bytes(engine, path, &bytes).map_err(PrecompileError::Plugin)?;
    cache
        .store(&entry, &compiled)
        .map_err(PrecompileError::Cache)?;
    Ok(entry)
}

fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Component> {
    Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile '{}'", path.display()))
}
