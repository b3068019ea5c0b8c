//! The `lockfile` command.

mod cache;
mod compile;
mod db;
mod duration;
mod exec;
mod exit;
mod inspect;
mod locks;
mod output;
mod plugin;
mod run;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// zc.lockfile's lock files from the command line: run a command, or a
/// WebAssembly plugin, while holding an exclusive lock that records its holder.
#[derive(Debug, Parser)]
#[command(name = "lockfile", version, propagate_version = true)]
struct Cli {
    /// Log more: -v for info, -vv for debug (RUST_LOG overrides).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::RunArgs),
    Compile(compile::CompileArgs),
    Exec(exec::ExecArgs),
    Inspect(inspect::InspectArgs),
}

fn main() -> ExitCode {
    // Each command's --help ends with its exit statuses, from `exit`'s
    // constants.
    let mut command = Cli::command();
    for name in ["run", "exec", "inspect", "compile"] {
        command =
            command.mut_subcommand(name, |sub| sub.after_long_help(exit::statuses_help(name)));
    }
    let parsed = command
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(exit::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_micros()
        .init();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Compile(args) => compile::run(args),
        Command::Exec(args) => exec::run(args),
        Command::Inspect(args) => inspect::run(args),
    }
}
