//! Loading plugin components: one engine configuration, the compile cache,
//! and clear errors for files that are not runnable command components.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use crate::cache::{CacheError, CompileCache, Lookup};

/// The engine every plugin runs on. `lockfile compile` and `lockfile run` must
/// agree on it, or cached code would not load.
pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    // Lets `--timeout` interrupt plugins that compute without calling the host.
    config.epoch_interruption(true);
    Ok(Engine::new(&config)?)
}

/// What a plugin is, and how each language makes one: said when a file is
/// not one.
const WHAT_A_PLUGIN_IS: &str = "`lockfile run` runs WebAssembly components (WASI 0.2 command \
     .wasm files): build one with `cargo build --target wasm32-wasip2` (Rust), componentize-py \
     (Python) or componentize-js (JavaScript), as the README's \"Write a plugin in your \
     language\" shows";

/// Reads `path` and checks that it is a component, before anything compiles.
fn read_component(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read plugin '{}'", path.display()))?;
    if wasmparser::Parser::is_core_wasm(&bytes) {
        bail!(
            "'{}' is a core WebAssembly module, not a component: build plugins with `--target wasm32-wasip2` (Rust), or make a component of it with `wasm-tools component new`",
            path.display()
        );
    }
    if wasmparser::Parser::is_component(&bytes) {
        return Ok(bytes);
    }
    let native = [
        &b"\x7fELF"[..],
        b"MZ",
        b"\xcf\xfa\xed\xfe",
        b"\xca\xfe\xba\xbe",
    ]
    .iter()
    .any(|magic| bytes.starts_with(magic));
    let source = match path.extension().and_then(|ext| ext.to_str()) {
        Some("py") => Some("Python source: make a component of it with componentize-py"),
        Some("js" | "mjs") => {
            Some("JavaScript source: make a component of it with componentize-js")
        }
        Some("rs") => {
            Some("Rust source: build its crate with `cargo build --target wasm32-wasip2`")
        }
        _ => None,
    };
    match (native, source) {
        (true, _) => bail!(
            "'{}' is a native executable, not a WebAssembly component: {WHAT_A_PLUGIN_IS}",
            path.display()
        ),
        (false, Some(source)) => bail!(
            "'{}' is {source}, which `lockfile run` then runs (see the README's \"Write a plugin in your language\")",
            path.display()
        ),
        (false, None) => bail!(
            "'{}' is not a WebAssembly component: {WHAT_A_PLUGIN_IS}",
            path.display()
        ),
    }
}

/// Loads the plugin at `path`, from the cache when it has a trusted entry.
pub fn load(engine: &Engine, path: &Path, cache: Option<&CompileCache>) -> Result<Component> {
    let bytes = read_component(path)?;
    let Some(cache) = cache else {
        return compile(engine, path, &bytes);
    };
    // A cache is an optimisation: an unusable one (a read-only HOME, a full
    // disk) or one it does not trust must not stop the plugin from running.
    let store = match cache.load(engine, &bytes) {
        Ok(Lookup::Hit(component, entry)) => {
            log::info!("compile cache hit: {}", entry.display());
            return Ok(component);
        }
        Ok(Lookup::Miss) => true,
        Ok(Lookup::Stale(entry, error)) => {
            log::warn!(
                "ignoring unusable cache entry {}: {error:#}",
                entry.display()
            );
            true
        }
        // Said to those who ask (-v): `--cache-dir` on Windows is no fault.
        #[cfg(not(unix))]
        Err(error @ CacheError::Unsupported) => {
            log::info!("{error}");
            false
        }
        Err(error) => {
            log::warn!("running uncached: {error}");
            false
        }
    };
    log::info!("compile cache miss: compiling {}", path.display());
    let compiled = precompile_bytes(engine, path, &bytes)?;
    if store {
        match cache.store(engine, &bytes, &compiled) {
            Ok(entry) => log::info!("stored {}", entry.display()),
            Err(error) => log::warn!("running uncached: {error}"),
        }
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
    Cache(CacheError),
}

/// Compiles the plugin into the cache, returning the entry's path.
pub fn precompile(
    engine: &Engine,
    path: &Path,
    cache: &CompileCache,
) -> Result<PathBuf, PrecompileError> {
    let bytes = read_component(path).map_err(PrecompileError::Plugin)?;
    let compiled = precompile_bytes(engine, path, &bytes).map_err(PrecompileError::Plugin)?;
    cache
        .store(engine, &bytes, &compiled)
        .map_err(PrecompileError::Cache)
}

fn compile(engine: &Engine, path: &Path, bytes: &[u8]) -> Result<Component> {
    Component::new(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile '{}'", path.display()))
}
