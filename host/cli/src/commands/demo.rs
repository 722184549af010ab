//! `snapshot-host demo`: the keyed counting job with checkpoints through the strategy plugin,
//! a task failure recovered from local state, a failure with local state lost recovered from
//! the primary, and a final check against a failure-free run.

use std::path::PathBuf;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use snapshot_host::plugin::WIT_PACKAGE;
use snapshot_host::{default_max_parallelism, RestoreSource, SnapshotHost, StorageLocation};
use snapshot_host_cli::embedded_s3::{EmbeddedS3, Shaping};
use snapshot_host_cli::job::{
    counts_of, expected_counts, processed_total, AttemptOptions, AttemptOutcome, JobEvent, JobRunner, JobSpec,
    JOB_STATE,
};

use super::exit::UsageError;
use super::ConfigArgs;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The strategy plugin.
    #[arg(long, default_value_os_t = super::default_plugin_path("full-keyed"))]
    plugin: PathBuf,
    #[command(flatten)]
    config: ConfigArgs,
    /// Number of events the job processes.
    #[arg(long, default_value_t = 400_000)]
    events: u64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 20_000)]
    keys: u64,
    /// Number of parallel subtasks.
    #[arg(long, default_value_t = 4)]
    parallelism: u32,
    /// Events between checkpoints (default: a sixteenth of --events, so that checkpoints
    /// complete before each injected failure).
    #[arg(long)]
    checkpoint_interval: Option<u64>,
    /// The durable primary: `embedded-s3` (an S3-compatible server the demo starts in this
    /// process, shaped like a remote store), a directory, or a URI (`s3://bucket/prefix` with
    /// the `s3.*` keys, `file:///dir`). Default: `execution.checkpointing.dir` when configured,
    /// else `embedded-s3`.
    #[arg(long)]
    primary: Option<String>,
    /// First-byte latency of the embedded S3 server, in milliseconds.
    #[arg(long, default_value_t = 10)]
    s3_latency_ms: u64,
    /// Bandwidth per connection of the embedded S3 server, in MiB/s (0: unlimited).
    #[arg(long, default_value_t = 200)]
    s3_bandwidth_mib: u64,
    /// Checkpoint keyed state incrementally (`execution.checkpointing.incremental=true`):
    /// key groups are written as deltas on the checkpoint before when the plugin can.
    #[arg(long)]
    incremental: bool,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut config = args.config.load_with_demo_defaults()?;
    if args.incremental {
        config.apply_assignment(&format!("{}=true", snapshot_host::config::INCREMENTAL), "--incremental")?;
    }
    if args.keys == 0 || args.events < 10 {
        return Err(UsageError("--keys must be at least 1 and --events at least 10".into()).into());
    }
    let checkpoint_interval = args.checkpoint_interval.unwrap_or((args.events / 16).max(1));
    // Failures are injected at 40% and 70% of the events: each must come after a checkpoint.
    if checkpoint_interval == 0 || checkpoint_interval.saturating_mul(5) >= args.events * 2 {
        return Err(UsageError(format!(
            "--checkpoint-interval {checkpoint_interval} is too long for --events {}: the first failure (at 40% of the events) must come after a checkpoint; use at most {}",
            args.events,
            (args.events * 2 / 5).saturating_sub(1).max(1)
        ))
        .into());
    }
    let primary = match &args.primary {
        Some(p) => p.clone(),
        None if config.checkpoint_storage != StorageLocation::default() => config.checkpoint_storage.to_string(),
        None => "embedded-s3".into(),
    };
    // Kept alive until the demo ends.
    let mut _server = None;
    let mut primary_note = String::new();
    if primary == "embedded-s3" {
        let shaping = Shaping {
            first_byte_latency: Duration::from_millis(args.s3_latency_ms),
            bandwidth: (args.s3_bandwidth_mib > 0).then_some(args.s3_bandwidth_mib << 20),
        };
        let server = EmbeddedS3::start(shaping).context("starting the embedded S3 server")?;
        server.create_bucket("checkpoints").context("creating the demo bucket")?;
        for o in server.config_overrides() {
            config.apply_override(&o)?;
        }
        config.checkpoint_storage = StorageLocation::parse("s3://checkpoints/demo").map_err(anyhow::Error::msg)?;
        primary_note = format!(" (embedded S3-compatible server at {}, {shaping})", server.endpoint());
        _server = Some(server);
    } else {
        config.checkpoint_storage =
            StorageLocation::parse(&primary).map_err(|e| anyhow::anyhow!("--primary {primary}: {e}"))?;
    }
    let plugin = SnapshotHost::load_plugin(&args.plugin, &config)
        .context("loading the strategy plugin (build it with `cargo build --profile plugin --target wasm32-wasip2 -p full-keyed`)")?;
    let info = plugin.info().clone();
    let spec = JobSpec {
        job_id: "demo".into(),
        allocation_id: "local".into(),
        parallelism: args.parallelism,
        max_parallelism: default_max_parallelism(args.parallelism),
        events: args.events,
        keys: args.keys,
        checkpoint_interval,
        config: config.clone(),
    };
    // Refuses a plugin that cannot keep the job's state before anything is written or cleared.
    let mut runner = JobRunner::new(spec.clone(), plugin.clone())?;
    println!(
        "strategy:   {} {} (format {} v{}, {WIT_PACKAGE}@{})",
        info.name, info.version, info.format, info.format_version, info.wit_version
    );
    let incremental = &config.checkpointing.incremental;
    println!(
        "keyed:      {}",
        match (incremental.enabled, info.incremental) {
            (true, true) => format!(
                "incremental checkpoints (a key group is rewritten in full after {} parts or deltas over {}% of it)",
                incremental.max_chain_length,
                incremental.max_delta_permille / 10
            ),
            (true, false) => "full checkpoints: incremental is on, but the plugin does not write deltas".into(),
            (false, _) => "full checkpoints".into(),
        }
    );
    println!(
        "job:        {} events over {} keys, parallelism {}, {} key groups, a checkpoint every {} events",
        spec.events, spec.keys, spec.parallelism, spec.max_parallelism, spec.checkpoint_interval
    );
    println!("primary:    {}{primary_note}", config.checkpoint_storage);
    println!(
        "local:      {} ({})",
        config.local_recovery.root_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        if config.local_recovery.enabled { "local recovery on" } else { "local recovery off" }
    );

    // Start from nothing, so that every run of the demo shows the same story.
    SnapshotHost::builder(spec.job_id.clone())
        .config(config.clone())
        .plugin(plugin.clone())
        .build()
        .and_then(|host| Ok(host.checkpoints().clear()?))
        .with_context(|| format!("clearing earlier checkpoints in {}", config.checkpoint_storage))?;
    runner.delete_local_state().context("clearing earlier local state")?;

    // Ctrl-C or SIGTERM stops the attempt running: its checkpoints in flight are cancelled and
    // their files removed, as `job run` does.
    let stop = super::exit::stop_on_signals()?;
    let started = Instant::now();
    let expected = expected_counts(spec.events, spec.keys);
    println!("reference:  failure-free counts computed in {:.1?}\n", started.elapsed());

    let fail_1 = spec.events * 2 / 5;
    let fail_2 = spec.events * 7 / 10;
    println!("attempt 1:  run, with a task failure injected at event {fail_1}");
    let (outcome, _, _) = attempt(&mut runner, Some(fail_1), &stop)?;
    expect_failure(&outcome)?;

    println!("attempt 2:  recover (local copies present), with a task failure injected at event {fail_2}");
    let (outcome, sources, local_restore) = attempt(&mut runner, Some(fail_2), &stop)?;
    expect_failure(&outcome)?;
    if config.local_recovery.enabled && sources.iter().any(|s| *s != RestoreSource::Local) {
        bail!("local recovery is on, but attempt 2 did not restore every subtask from its local copy: {sources:?}");
    }

    runner.delete_local_state().context("deleting local state")?;
    println!("            local state deleted (as if the machine holding it was lost)");
    println!("attempt 3:  recover (no local copies), run to the end");
    let (outcome, sources, primary_restore) = attempt(&mut runner, None, &stop)?;
    if sources.iter().any(|s| *s != RestoreSource::Primary) {
        bail!("with local state deleted, attempt 3 must restore from the primary: {sources:?}");
    }
    if config.local_recovery.enabled && !local_restore.is_zero() && !primary_restore.is_zero() {
        println!(
            "restore:    slowest subtask {local_restore:.1?} from its local copy vs {primary_restore:.1?} from the primary ({}): {:.1}x faster locally",
            config.checkpoint_storage,
            primary_restore.as_secs_f64() / local_restore.as_secs_f64().max(1e-9)
        );
    }
    let AttemptOutcome::Finished { backends, operators, checkpoints } = outcome else {
        return Err(stopped(&outcome).unwrap_or_else(|| anyhow::anyhow!("attempt 3 did not finish")));
    };
    if checkpoints.triggered > 0 && checkpoints.completed == 0 {
        bail!(
            "attempt 3 finished, but none of its {} checkpoints completed (last failure: {})",
            checkpoints.triggered,
            checkpoints.last_failure.unwrap_or_else(|| "none recorded".into())
        );
    }

    let actual = counts_of(&backends);
    let total: u64 = actual.values().sum();
    if actual != expected {
        let differing = expected.iter().filter(|(k, v)| actual.get(*k) != Some(v)).count();
        bail!("final counts differ from a failure-free run for {differing} keys");
    }
    let processed = processed_total(&operators);
    if processed != spec.events {
        bail!("the operator state counted {processed} processed events, the source emitted {}", spec.events);
    }
    let description = runner.job_description().into_bytes();
    if operators.iter().any(|o| o.get(JOB_STATE).map(|e| e != [description.clone()]).unwrap_or(true)) {
        bail!("a subtask lost or duplicated the broadcast job state");
    }
    println!("\nresult:     {} keys, {total} events counted: equal to a failure-free run (exactly once)", actual.len());
    Ok(())
}

/// Prints above the progress bar, or plainly when there is no terminal (a hidden bar drops
/// what it is asked to print).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

fn expect_failure(outcome: &AttemptOutcome) -> anyhow::Result<()> {
    match outcome {
        AttemptOutcome::Failed { at } => {
            println!("            task failure at event {at}: pending checkpoints aborted\n");
            Ok(())
        }
        AttemptOutcome::Finished { .. } => bail!("the injected failure did not happen"),
        AttemptOutcome::Stopped { .. } => Err(stopped(outcome).expect("a stopped outcome")),
    }
}

/// For an attempt stopped by a signal: says where it stopped and what is durable, and returns
/// the error that exits with the signal's status.
fn stopped(outcome: &AttemptOutcome) -> Option<anyhow::Error> {
    let AttemptOutcome::Stopped { at, by, last_completed } = outcome else { return None };
    match last_completed {
        Some(m) => println!(
            "            stopped at event {at}; last completed checkpoint {} (offset {})",
            m.checkpoint_id, m.source_offset
        ),
        None => println!("            stopped at event {at}; no checkpoint completed"),
    }
    Some(super::exit::Interrupted(*by).into())
}

/// Runs one attempt, printing its events; returns the outcome and where each subtask was
/// restored from.
/// Restore time is that of the slowest subtask (they restore in parallel).
fn attempt(
    runner: &mut JobRunner,
    fail_at: Option<u64>,
    stop: &std::sync::atomic::AtomicUsize,
) -> anyhow::Result<(AttemptOutcome, Vec<RestoreSource>, Duration)> {
    let events_total = runner.spec().events;
    let bar = ProgressBar::new(events_total);
    bar.set_style(
        ProgressStyle::with_template("            [{bar:40}] {pos}/{len} events")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let (tx, rx) = channel();
    let mut sources = Vec::new();
    let mut slowest = Duration::ZERO;
    let outcome = std::thread::scope(|scope| {
        let job = scope.spawn(move || runner.run_attempt_until(AttemptOptions { fail_at }, &tx, stop));
        for event in rx {
            match event {
                JobEvent::Restored { subtask, source, alternative, alternatives, operator_source, duration } => {
                    sources.push(source);
                    slowest = slowest.max(duration);
                    say(&bar, format!("            subtask {subtask}: keyed state from alternative {alternative}/{alternatives} ({source}), operator state from {operator_source}, in {duration:.1?}"));
                }
                JobEvent::Completed { checkpoint_id, size, duration, max_sync_pause, delta_groups } => {
                    let deltas = match delta_groups {
                        Some((deltas, groups)) => format!("; {deltas} of {groups} key groups as deltas"),
                        None => String::new(),
                    };
                    say(&bar, format!("            checkpoint {checkpoint_id:>3}: {size:>9} bytes in {duration:>9.1?} (synchronous pause {max_sync_pause:.1?}{deltas})"));
                }
                JobEvent::Aborted { checkpoint_id, reason } => {
                    say(&bar, format!("            checkpoint {checkpoint_id:>3}: aborted ({reason})"))
                }
                JobEvent::Progress { offset } => bar.set_position(offset),
            }
        }
        job.join().expect("the job thread panicked")
    });
    bar.finish_and_clear();
    Ok((outcome?, sources, slowest))
}
