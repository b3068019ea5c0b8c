//! `lockfile compile`: fill the compile cache ahead of a run.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::cache::CompileCache;
use crate::exit;
use crate::plugin::{self, PrecompileError};

/// Compile a plugin into the compile cache, so that `lockfile run` starts it
/// without compiling. Prints the cache entry's path. The cache directory must
/// be yours and writable by no one else (it is created 0700); it is not used
/// on Windows.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// Where compiled plugins are cached [default: $XDG_CACHE_HOME/lockfile]: a
    /// directory of yours that no one else can write (see the README); none on
    /// Windows.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// The plugin component.
    plugin: PathBuf,
}

pub fn run(args: CompileArgs) -> ExitCode {
    let Some(dir) = args.cache_dir.or_else(CompileCache::default_dir) else {
        eprintln!(
            "lockfile: no cache directory: set --cache-dir, XDG_CACHE_HOME or HOME (the cache is not used on Windows)"
        );
        return ExitCode::from(exit::USAGE);
    };
    let engine = match plugin::engine() {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("lockfile: {error:#}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    match plugin::precompile(&engine, &args.plugin, &CompileCache::new(dir)) {
        Ok(entry) => {
            crate::output::line(entry.display());
            ExitCode::SUCCESS
        }
        Err(PrecompileError::Plugin(error)) => {
            eprintln!("lockfile: {error:#}");
            ExitCode::from(exit::BAD_PLUGIN)
        }
        Err(PrecompileError::Cache(error)) => {
            eprintln!("lockfile: {error}");
            ExitCode::from(exit::IOERR)
        }
    }
}
