//! Errors of loading and invoking plugins. Every variant names the plugin (its file, or its
//! described name once loaded) and what went wrong with it.

use std::path::PathBuf;

/// Why a plugin could not be loaded or an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin file does not exist or cannot be read.
    #[error("plugin {path}: cannot read the file: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not WebAssembly at all.
    #[error("plugin {path}: not a WebAssembly file (it does not start with the \\0asm magic bytes)")]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error("plugin {path}: is a core WebAssembly module, not a component; build the plugin for the wasm32-wasip2 target (or wrap the module with `wasm-tools component new`)")]
    CoreModule {
        /// The file.
        path: PathBuf,
    },
    /// The file is not a valid component (truncated, corrupted, or using unsupported features).
    #[error("plugin {path}: not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the validator found.
        reason: String,
    },
    /// The component imports interfaces the host does not provide: neither the strategy world
    /// nor WASI 0.2 (whose capabilities are linked but grant nothing).
    #[error("plugin {path}: imports {}, which this host does not provide (it links the strategy world and WASI 0.2 only)", imports.join(", "))]
    Capability {
        /// The file.
        path: PathBuf,
        /// Every import that cannot be satisfied.
        imports: Vec<String>,
    },
    /// The component was built for another world or an incompatible version of this one.
    #[error("plugin {path}: incompatible with this host (which implements world strategy of snapshot:strategy {host_version}): {reason}")]
    Incompatible {
        /// The file.
        path: PathBuf,
        /// The WIT versions the host links.
        host_version: &'static str,
        /// What did not match.
        reason: String,
    },
    /// The plugin described itself inconsistently.
    #[error("plugin {path}: describe() returned an invalid description: {reason}")]
    BadDescription {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The guest trapped (panic, unreachable, out of bounds, a host resource misused).
    #[error(
        "plugin {plugin}: {operation} trapped: {message}{}{}",
        block("", backtrace),
        block("guest stderr:\n", guest_output)
    )]
    Trap {
        /// The plugin.
        plugin: String,
        /// What was being done.
        operation: String,
        /// The cause, first (`wasm trap: ...`, `unknown handle index 7`), then a guest panic's
        /// message and location: one line, what a reader needs to find the bug.
        message: String,
        /// The wasm backtrace, printed after the cause (empty if there is none).
        backtrace: String,
        /// The guest's stderr, without the panic already in `message`.
        guest_output: String,
    },
    /// The strategy returned an error.
    #[error("plugin {plugin}: {operation} failed: {message}")]
    Failed {
        /// The plugin.
        plugin: String,
        /// What was being done.
        operation: String,
        /// The strategy's message.
        message: String,
    },
    /// The strategy misused a host resource.
    #[error("plugin {plugin}: {operation}: contract violation: {message}")]
    Contract {
        /// The plugin.
        plugin: String,
        /// What was being done.
        operation: String,
        /// What rule was broken.
        message: String,
    },
    /// A configured limit was hit.
    #[error("plugin {plugin}: {operation}: {message}")]
    Limit {
        /// The plugin.
        plugin: String,
        /// What was being done.
        operation: String,
        /// Which limit and its value.
        message: String,
    },
    /// Checkpoint storage failed underneath the strategy.
    #[error("plugin {plugin}: {operation}: checkpoint storage failed: {source}")]
    Storage {
        /// The plugin.
        plugin: String,
        /// What was being done.
        operation: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes being restored do not match the checksums recorded when they were written
    /// (or cannot be verified): the state is damaged, whatever the strategy made of it.
    #[error("{source}")]
    Corrupt {
        /// What was being restored.
        operation: String,
        /// The mismatch or read failure.
        #[source]
        source: crate::handles::VerifyError,
    },
    /// The invocation was cancelled.
    #[error("plugin {plugin}: {operation} was cancelled")]
    Cancelled {
        /// The plugin.
        plugin: String,
        /// What was being done.
        operation: String,
    },
    /// An internal wasmtime error not attributable to the plugin.
    #[error("plugin runtime: {0}")]
    Runtime(String),
}

impl PluginError {
    /// The first line of the message: for a trap, its cause and the guest's panic, without
    /// the backtrace and the guest's output. What a table of results shows.
    pub fn summary(&self) -> String {
        match self {
            PluginError::Trap { plugin, operation, message, .. } => {
                format!("plugin {plugin}: {operation} trapped: {message}")
            }
            other => other.to_string().lines().next().unwrap_or_default().to_string(),
        }
    }
}

/// `text` on lines of its own after the message, under `heading` if one is given; nothing
/// when there is no text.
fn block(heading: &str, text: &str) -> String {
    match text.trim() {
        "" => String::new(),
        trimmed => format!("\n{heading}{trimmed}"),
    }
}
