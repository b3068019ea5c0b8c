//! `lockfile compile`: fill the compile cache ahead of a run.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::plugin::{self, CompileCache};

/// Compile a plugin into the compile cache, so that `lockfile run` starts it
/// without compiling. Prints the cache entry's path.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// Where compiled plugins are cached [default: $XDG_CACHE_HOME/lockfile].
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// The plugin component.
    plugin: PathBuf,
}

pub fn run(args: CompileArgs) -> ExitCode {
    let Some(dir) = args.cache_dir.or_else(CompileCache::default_dir) else {
        eprintln!("lockfile: no cache directory: set --cache-dir, XDG_CACHE_HOME or HOME");
        return ExitCode::from(crate::exit::USAGE);
    };
    let result = plugin::engine()
        .and_then(|engine| plugin::precompile(&engine, &args.plugin, &CompileCache::new(dir)));
    match result {
        Ok(entry) => {
            println!("{}", entry.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lockfile: {error:#}");
            ExitCode::from(65)
        }
    }
}
