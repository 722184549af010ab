//! How the program ends: one exit status per kind of ending, so that scripts can tell a usage
//! mistake from a runtime failure from a plugin that failed its tests, and a closed stdout
//! (`snapshot-host demo | head -2`) from any of them.

use std::process::ExitCode;

/// Success.
pub(crate) const SUCCESS: u8 = 0;
/// A runtime error: storage, a plugin that cannot be loaded, a job that failed.
pub(crate) const RUNTIME: u8 = 1;
/// The command line is wrong (clap's own status for the same).
pub(crate) const USAGE: u8 = 2;
/// `plugin test` ran and the plugin failed at least one case.
pub(crate) const TESTS_FAILED: u8 = 3;
/// `checkpoint verify` found the primary damaged: the checkpoint cannot be restored.
pub(crate) const PRIMARY_DAMAGED: u8 = 4;
/// `checkpoint verify` found the primary intact and a local copy damaged: restores fall back
/// to the primary, but the machine's disk deserves a look.
pub(crate) const LOCAL_COPY_DAMAGED: u8 = 5;
/// The reader of stdout went away: what a Unix tool killed by SIGPIPE reports (128 + 13).
pub(crate) const BROKEN_PIPE: u8 = 141;

/// A plugin that failed conformance cases: reported like any error, but with its own status.
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin} failed {} conformance case(s): {}", failed.len(), failed.join(", "))]
pub(crate) struct PluginFailedTests {
    /// The plugin file.
    pub(crate) plugin: String,
    /// The names of the failed cases.
    pub(crate) failed: Vec<String>,
}

/// Stopped by a signal (its number): exit status 128 + the number, as a shell reports it.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {}", signal_name(*.0))]
pub(crate) struct Interrupted(pub(crate) usize);

fn signal_name(signal: usize) -> String {
    match signal as i32 {
        signal_hook::consts::SIGINT => "SIGINT".into(),
        signal_hook::consts::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

/// A flag that SIGINT and SIGTERM set to their number, for a command to stop cleanly at its
/// next check. A second signal of the same kind ends the process at once (a user who presses
/// Ctrl-C twice means it), with the same status.
pub(crate) fn stop_on_signals() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicUsize>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for signal in [SIGINT, SIGTERM] {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Registered first, so it runs before the flag below is set: on the second signal.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, flag.clone())?;
        signal_hook::flag::register(signal, flag)?;
        signal_hook::flag::register_usize(signal, stop.clone(), signal as usize)?;
    }
    Ok(stop)
}

/// `checkpoint verify` found damage: the files are named in its report; the status says whether
/// the primary or only local copies are damaged.
#[derive(Debug, thiserror::Error)]
#[error("{}", if *.primary { format!("{} checkpoint(s) damaged in the primary: cannot be restored", .checkpoints.len()) } else { format!("local copies of {} checkpoint(s) damaged (the primary is intact; restores fall back to it)", .checkpoints.len()) })]
pub(crate) struct CheckpointDamaged {
    /// Whether the primary (not only local copies) is damaged.
    pub(crate) primary: bool,
    /// The checkpoints with damage.
    pub(crate) checkpoints: Vec<u64>,
}

/// A command line that clap accepted but that does not make sense (e.g. `--set` without `=`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UsageError(pub(crate) String);

/// The exit status for an error.
pub(crate) fn status_of(error: &anyhow::Error) -> u8 {
    if let Some(Interrupted(signal)) = error.downcast_ref::<Interrupted>() {
        u8::try_from(128 + signal).unwrap_or(RUNTIME)
    } else if error.downcast_ref::<PluginFailedTests>().is_some() {
        TESTS_FAILED
    } else if let Some(damaged) = error.downcast_ref::<CheckpointDamaged>() {
        if damaged.primary {
            PRIMARY_DAMAGED
        } else {
            LOCAL_COPY_DAMAGED
        }
    } else if error.downcast_ref::<UsageError>().is_some()
        || matches!(
            error.downcast_ref::<snapshot_host::config::ConfigError>(),
            Some(snapshot_host::config::ConfigError::BadOverride(_))
        )
    {
        USAGE
    } else {
        RUNTIME
    }
}

/// Whether `error` is a write to stdout that failed because its reader went away (commands
/// that write with `writeln!` and `?` get it as an error, not as `println!`'s panic).
pub(crate) fn is_closed_stdout(error: &anyhow::Error) -> bool {
    let broken = |e: &std::io::Error| e.kind() == std::io::ErrorKind::BrokenPipe;
    error.downcast_ref::<std::io::Error>().is_some_and(broken)
        || matches!(error.downcast_ref::<snapshot_host::inspect::InspectError>(),
            Some(snapshot_host::inspect::InspectError::Output(e)) if broken(e))
}

/// The text `println!` panics with when stdout is a closed pipe.
fn is_broken_stdout(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    text.starts_with("failed printing to stdout") && text.contains("Broken pipe")
}

/// Runs `command` so that a closed stdout ends it quietly: the panic `println!` raises then is
/// not printed, it unwinds (so whatever the command holds is dropped and cleaned up as on any
/// error), and the program exits with [`BROKEN_PIPE`]. Other panics keep the default report.
pub(crate) fn run_quiet_on_broken_pipe(command: impl FnOnce() -> ExitCode) -> ExitCode {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_stdout(info.payload()) {
            default_hook(info);
        }
    }));
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(command)) {
        Ok(code) => code,
        Err(payload) if is_broken_stdout(payload.as_ref()) => ExitCode::from(BROKEN_PIPE),
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_kind_of_error() {
        let failed = anyhow::Error::new(PluginFailedTests { plugin: "p.wasm".into(), failed: vec!["a/b".into()] });
        assert_eq!(status_of(&failed), TESTS_FAILED);
        assert_eq!(failed.to_string(), "plugin p.wasm failed 1 conformance case(s): a/b");
        assert_eq!(status_of(&anyhow::Error::new(UsageError("x".into()))), USAGE);
        let bad_set = snapshot_host::Config::default().apply_override("no-equals-sign").unwrap_err();
        assert_eq!(status_of(&anyhow::Error::new(bad_set)), USAGE);
        assert_eq!(status_of(&anyhow::anyhow!("disk full")), RUNTIME);
        assert_eq!(status_of(&anyhow::Error::new(Interrupted(signal_hook::consts::SIGINT as usize))), 130);
        assert_eq!(status_of(&anyhow::Error::new(Interrupted(signal_hook::consts::SIGTERM as usize))), 143);
        assert_ne!(SUCCESS, RUNTIME);
    }

    #[test]
    fn only_the_broken_stdout_panic_is_recognised() {
        let pipe: Box<dyn std::any::Any + Send> =
            Box::new("failed printing to stdout: Broken pipe (os error 32)".to_string());
        assert!(is_broken_stdout(pipe.as_ref()));
        let other: Box<dyn std::any::Any + Send> = Box::new("index out of bounds");
        assert!(!is_broken_stdout(other.as_ref()));
    }
}
