//! `snapshot-host job ...`: run the counting job until it ends (printing each completed
//! checkpoint), or verify the latest completed checkpoint. Used by the crash test, which kills
//! `job run` at random moments and checks with `job verify` that recovery is exact.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::channel;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use snapshot_host::{default_max_parallelism, CancelToken, SnapshotHost};
use snapshot_host_cli::job::{
    counts_of, expected_counts, processed_total, AttemptOptions, AttemptOutcome, JobEvent, JobRunner, JobSpec,
    JOB_STATE,
};

use super::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run (recovering from the latest completed checkpoint, if any) until the source ends.
    Run(JobArgs),
    /// Restore the latest completed checkpoint and check its counts against the source.
    Verify(JobArgs),
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// The strategy plugin.
    #[arg(long, default_value_os_t = super::default_plugin_path("full-keyed"))]
    plugin: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
    /// Job id.
    #[arg(long, default_value = "job")]
    job_id: String,
    /// Number of events in all.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 1_000)]
    keys: u64,
    /// Parallel subtasks.
    #[arg(long, default_value_t = 2)]
    parallelism: u32,
    /// Events between checkpoints.
    #[arg(long, default_value_t = 10_000)]
    checkpoint_interval: u64,
    /// Serve the checkpoint metrics (Flink's names: numberOfCompletedCheckpoints,
    /// lastCheckpointDuration, ...) in the Prometheus text format at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
}

pub fn run(command: JobCommand) -> anyhow::Result<()> {
    let (args, verify) = match command {
        JobCommand::Run(a) => (a, false),
        JobCommand::Verify(a) => (a, true),
    };
    let config = args.config.load_with_demo_defaults()?;
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr)?;
    }
    let plugin = SnapshotHost::load_plugin(&args.plugin, &config)?;
    let spec = JobSpec {
        job_id: args.job_id,
        allocation_id: "local".into(),
        parallelism: args.parallelism,
        max_parallelism: default_max_parallelism(args.parallelism),
        events: args.events,
        keys: args.keys,
        checkpoint_interval: args.checkpoint_interval,
        config,
    };
    let mut runner = JobRunner::new(spec.clone(), plugin)?;
    if verify {
        // Verifies what a restart would restore (the newest restorable checkpoint), reading
        // the primary only and changing nothing on disk.
        let restored = runner.find_restorable(false, &CancelToken::new())?;
        let Some(latest) = restored.checkpoint else { bail!("no completed checkpoint to verify") };
        for (id, why) in &restored.skipped {
            eprintln!("skipped checkpoint {id}: {why}");
        }
        let sources: Vec<String> = restored
            .events
            .iter()
            .filter_map(|e| if let JobEvent::Restored { source, .. } = e { Some(source.to_string()) } else { None })
            .collect();
        let expected = expected_counts(latest.source_offset, spec.keys);
        let (keyed, operators): (Vec<_>, Vec<_>) = restored.subtasks.into_iter().unzip();
        // The run recorded what it was (its broadcast state): verifying it against other
        // --events or --keys would compare with another source.
        let asked = runner.job_description();
        for o in &operators {
            let recorded: Vec<String> =
                o.get(JOB_STATE)?.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect();
            if recorded != [asked.clone()] {
                bail!(
                    "checkpoint {} was written by a run of {}, not of {asked}: pass the --events and --keys of that run",
                    latest.checkpoint_id,
                    recorded.join(", ")
                );
            }
        }
        if processed_total(&operators) != latest.source_offset {
            bail!(
                "checkpoint {} restored operator state that counted {} processed events, its offset is {}",
                latest.checkpoint_id,
                processed_total(&operators),
                latest.source_offset
            );
        }
        if counts_of(&keyed) != expected {
            bail!(
                "checkpoint {} (offset {}) restored counts that differ from the source's first {} events",
                latest.checkpoint_id,
                latest.source_offset,
                latest.source_offset
            );
        }
        println!(
            "verified checkpoint {} offset {} from {}",
            latest.checkpoint_id,
            latest.source_offset,
            sources.join(",")
        );
        return Ok(());
    }
    let (tx, rx) = channel();
    let printer = std::thread::spawn(move || {
        let mut out = std::io::stdout().lock();
        for event in rx {
            let line = match event {
                JobEvent::Completed { checkpoint_id, .. } => format!("completed checkpoint {checkpoint_id}"),
                JobEvent::Restored { subtask, source, .. } => format!("restored subtask {subtask} from {source}"),
                JobEvent::Aborted { checkpoint_id, reason } => format!("aborted checkpoint {checkpoint_id}: {reason}"),
                JobEvent::Progress { .. } => continue,
            };
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    });
    let stop = super::exit::stop_on_signals()?;
    let outcome = runner.run_attempt_until(AttemptOptions::default(), &tx, &stop);
    drop(tx);
    let _ = printer.join();
    let outcome = outcome?;
    if let AttemptOutcome::Stopped { at, by, last_completed } = &outcome {
        match last_completed {
            Some(m) => println!(
                "stopped at event {at}; last completed checkpoint {} (offset {}), the next run resumes from it",
                m.checkpoint_id, m.source_offset
            ),
            None => println!("stopped at event {at}; no checkpoint completed, the next run starts from the beginning"),
        }
        return Err(super::exit::Interrupted(*by).into());
    }
    if let AttemptOutcome::Finished { checkpoints, .. } = outcome {
        if checkpoints.triggered > 0 && checkpoints.completed == 0 {
            bail!(
                "the job finished, but none of its {} checkpoints completed (last failure: {})",
                checkpoints.triggered,
                checkpoints.last_failure.unwrap_or_else(|| "none recorded".into())
            );
        }
    }
    println!("finished");
    Ok(())
}

/// Installs the Prometheus exporter as the process's metrics recorder, serving on `addr`
/// until the process ends. Fails (naming the address) when it cannot listen there.
fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .with_context(|| format!("--metrics-addr {addr}: cannot serve metrics there"))?;
    snapshot_host::metrics::describe();
    tracing::info!(%addr, "serving checkpoint metrics at http://{addr}/metrics");
    Ok(())
}
