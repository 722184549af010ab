//! Command-line parsing and dispatch. Library errors get `anyhow` context here, naming the
//! input (file, option) the user should look at.

mod bench;
mod checkpoint;
mod config;
mod demo;
mod exit;
mod job;
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
    /// More log lines on stderr: -v adds the checkpoint and restore lifecycle (INFO), -vv
    /// debugging detail. `RUST_LOG` (e.g. `RUST_LOG=snapshot_host=debug`) overrides both.
    /// For `plugin test`: each failure's detail (wasm backtrace, guest output, host log).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Log lines as text (coloured only on a terminal) or as JSON objects, one per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr at the level `-v`/`-q` ask for, unless `RUST_LOG` says otherwise.
fn init_logging(verbose: u8, quiet: bool, format: LogFormat) {
    use std::io::IsTerminal;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(true);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the demo job: keyed state snapshotted and restored through a strategy plugin.
    Demo(demo::DemoArgs),
    /// Measure snapshot, restore and plugin costs as ratios measured side by side.
    Bench(bench::BenchArgs),
    /// List, show, verify and dump a job's checkpoints (on any primary).
    Checkpoint {
        #[command(subcommand)]
        command: checkpoint::CheckpointCommand,
    },
    /// Run or verify the counting job (used by the crash test).
    Job {
        #[command(subcommand)]
        command: job::JobCommand,
    },
    /// Print the configuration `demo` and `job run` would use, and where each value came from
    /// (a default, the file, the command line, a deprecated key name).
    Config {
        /// The file and overrides to read, as for `demo` and `job run`.
        #[command(flatten)]
        config: ConfigArgs,
        /// Start from the library's defaults instead of the demo's and `job run`'s.
        #[arg(long)]
        library_defaults: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        /// The plugin limits to load it with (`plugin.*` keys).
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Test a plugin against the reference host: the conformance cases of the strategy world.
    Test {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: plugin::ReportFormat,
        /// Smaller states (a 4 MiB value instead of 64 MiB, 50,000 tiny entries instead of two
        /// million; still every shape and length boundary), for quick iterations.
        #[arg(long)]
        quick: bool,
        /// The plugin limits (`plugin.*` keys). The harness starts from its own: a deadline of
        /// 15 s per invocation and 512 MiB of output per snapshot, e.g.
        /// `--set plugin.timeout=60s` for a slow interpreter.
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Create a plugin crate from a template that builds and passes `plugin test`.
    New {
        /// The plugin's name (a crate name: lowercase letters, digits, '-').
        name: String,
        /// Directory to create the crate in (default: ./<name>).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A checkout of the guest SDK to build against (written as a relative path). Default: the
        /// SDK of the enclosing repository when the plugin is created inside one, else the
        /// SDK by version from the crates registry.
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Precompile a plugin into the compiled-plugin cache and report compile, cached-load and
    /// instantiation times.
    Compile {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// Cache directory (default: $XDG_CACHE_HOME/snapshot-host or ~/.cache/snapshot-host).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
}

/// `--config FILE` and `--set key=value`, shared by the commands that run jobs.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArgs {
    /// A configuration file: YAML when named `*.yaml`/`*.yml` (as Flink's `config.yaml`), else
    /// TOML; keys like `execution.state-recovery.from-local`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Overrides one configuration key, e.g. `--set execution.state-recovery.from-local=false`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl ConfigArgs {
    /// The configuration: the demo's defaults (primary in `./checkpoints`, local recovery on
    /// with local copies in `./local-state`), then the file, then the overrides.
    pub(crate) fn load_with_demo_defaults(&self) -> anyhow::Result<snapshot_host::Config> {
        self.load_over(demo_defaults())
    }

    /// `base`, then the file, then the overrides.
    pub(crate) fn load_over(&self, mut config: snapshot_host::Config) -> anyhow::Result<snapshot_host::Config> {
        if let Some(path) = &self.config {
            config.apply_file(path)?;
        }
        for assignment in &self.overrides {
            config.apply_override(assignment)?;
        }
        Ok(config)
    }
}

/// The library's defaults with the demo's own on top: primary in `./checkpoints`, local
/// copies written and restored from under `./local-state`, two checkpoints retained.
fn demo_defaults() -> snapshot_host::Config {
    use snapshot_host::config::{FROM_LOCAL, LOCAL_BACKUP_DIRS, NUM_RETAINED};
    let mut config = snapshot_host::Config::default();
    for assignment in
        [format!("{FROM_LOCAL}=true"), format!("{LOCAL_BACKUP_DIRS}=local-state"), format!("{NUM_RETAINED}=2")]
    {
        config.apply_assignment(&assignment, "the demo's defaults").expect("valid demo defaults");
    }
    config
}

/// An error and its causes, each said once: `a: b: c`, leaving out a cause whose text the
/// message before it already contains (many errors quote their cause in their own message).
pub(crate) fn render_error(error: &anyhow::Error) -> String {
    let mut out = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

/// The default location of a plugin built from this workspace.
pub(crate) fn default_plugin_path(name: &str) -> PathBuf {
    // Where `scripts/setup.sh` builds plugins: the workspace's target directory, or
    // CARGO_TARGET_DIR when the build was told to use another one.
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("target"));
    target.join("wasm32-wasip2/plugin").join(format!("{}.wasm", name.replace('-', "_")))
}

/// Parses the command line and runs the command. Exit statuses: see [`exit`].
pub fn main() -> ExitCode {
    exit::run_quiet_on_broken_pipe(run)
}

fn run() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet, cli.log_format);
    let verbose = cli.verbose;
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Job { command } => job::run(command),
        Command::Checkpoint { command } => checkpoint::run(command),
        Command::Bench(args) => bench::run(args),
        Command::Config { config, library_defaults, json } => {
            let base = if library_defaults { snapshot_host::Config::default() } else { demo_defaults() };
            config.load_over(base).and_then(|c| config::print(&c, json))
        }
        Command::Plugin { command: PluginCommand::Info { plugin, json, config } } => {
            config.load_over(snapshot_host::Config::default()).and_then(|config| plugin::info(&plugin, json, &config))
        }
        Command::Plugin { command: PluginCommand::Compile { plugin, cache_dir } } => {
            plugin::compile(&plugin, cache_dir)
        }
        Command::Plugin { command: PluginCommand::Test { plugin, format, quick, config } } => {
            let verbose = verbose > 0;
            let base = snapshot_host::Config {
                plugin_limits: snapshot_host::harness::harness_limits(),
                ..snapshot_host::Config::default()
            };
            config.load_over(base).and_then(|config| plugin::test(&plugin, format, quick, verbose, &config))
        }
        Command::Plugin { command: PluginCommand::New { name, dir, sdk } } => plugin::new(&name, dir, sdk),
    };
    match result {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(e) if exit::is_closed_stdout(&e) => ExitCode::from(exit::BROKEN_PIPE),
        Err(e) => {
            eprintln!("error: {}", render_error(&e));
            ExitCode::from(exit::status_of(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    /// Clap's own consistency checks (unique names, also of global flags across subcommands).
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
