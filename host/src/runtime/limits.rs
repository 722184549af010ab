//! Per-plugin resource limits.

use std::time::Duration;

/// Limits applied to every invocation of a plugin. A limit hit fails that invocation with an
/// error naming the limit; the host and other subtasks carry on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLimits {
    /// Maximum linear memory of the plugin, in bytes.
    pub memory_bytes: usize,
    /// Maximum number of core instances per invocation. A Rust component uses a handful, a
    /// CPython component (componentize-py) 13 to 16, and 38 when built with `--stub-wasi`:
    /// the default admits interpreters with room, and still bounds what the host allocates per
    /// store.
    pub instances: usize,
    /// Maximum number of tables per invocation.
    pub tables: usize,
    /// Maximum number of linear memories per invocation (each also counts against
    /// [`memory_bytes`](Self::memory_bytes) and the host-wide budget).
    pub memories: usize,
    /// Bytes of stdout and of stderr kept per invocation for the host's log; the rest is
    /// dropped (and counted), so printing can neither fail a snapshot nor grow the host.
    pub max_log_bytes: usize,
    /// Wall-clock time one invocation may run.
    pub timeout: Duration,
    /// Maximum bytes one snapshot may write, if limited.
    pub max_output_bytes: Option<u64>,
    /// Bytes an invocation may produce per byte it consumed (snapshot bytes written per byte of
    /// state read; state restored per snapshot byte read), beyond a fixed allowance.
    pub max_amplification: u64,
    /// Instruction budget per invocation (deterministic CPU limit), if limited. Needs a
    /// runtime created with fuel metering ([`RuntimeOptions::fuel`](super::RuntimeOptions)).
    pub fuel: Option<u64>,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 256 << 20,
            instances: 256,
            tables: 256,
            memories: 16,
            max_log_bytes: 1 << 20,
            timeout: Duration::from_secs(300),
            max_output_bytes: None,
            max_amplification: super::budget::DEFAULT_AMPLIFICATION,
            fuel: None,
        }
    }
}
