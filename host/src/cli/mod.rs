//! Command-line parsing and dispatch. Library errors get `anyhow` context here, naming the
//! input (file, option) the user should look at.

mod demo;
mod plugin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Consistent snapshots of stream-processing state through sandboxed WebAssembly strategies.
#[derive(Debug, Parser)]
#[command(name = "snapshot-host", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo job: keyed state snapshotted and restored through a strategy plugin.
    Demo(demo::DemoArgs),
    /// Inspect and work with strategy plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Show what a plugin is: name, version, format, WIT version and imports.
    Info {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The default location of a plugin built from this workspace.
pub(crate) fn default_plugin_path(name: &str) -> PathBuf {
    PathBuf::from("target/wasm32-wasip2/plugin").join(format!("{}.wasm", name.replace('-', "_")))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,snapshot_host=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Plugin {
            command: PluginCommand::Info { plugin, json },
        } => plugin::info(&plugin, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
