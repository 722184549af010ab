//! `snapshot-host demo`: a small keyed counting job whose state is snapshotted and restored
//! through a strategy plugin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use snapshot_host::backend::{KeyedStateBackend, StateKind};
use snapshot_host::handles::KeyGroupsStateHandle;
use snapshot_host::key_groups::{default_max_parallelism, range_for_operator, KeyGroupRange};
use snapshot_host::runtime::{PluginLimits, PluginRuntime};
use snapshot_host::streams::{CheckpointStreamFactory, FileStreamFactory, StateScope};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The strategy plugin.
    #[arg(long, default_value_os_t = super::default_plugin_path("full-keyed"))]
    plugin: PathBuf,
    /// Where checkpoint files go.
    #[arg(long, default_value = "checkpoints")]
    checkpoint_dir: PathBuf,
    /// Number of events the job processes.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 5_000)]
    keys: u64,
    /// Parallelism to restore into after the snapshot (rescaling).
    #[arg(long, default_value_t = 3)]
    restore_parallelism: u32,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let runtime = PluginRuntime::new().context("starting the plugin runtime")?;
    let plugin = runtime.load(&args.plugin, PluginLimits::default()).context("loading the strategy plugin (build it with `cargo build --profile plugin --target wasm32-wasip2 -p full-keyed`)")?;
    let info = plugin.info();
    println!(
        "strategy: {} {} (format {} v{})",
        info.name, info.version, info.format, info.format_version
    );

    // The job: count events per key, remember the last event per key, keep a per-key list of
    // the last few event ids.
    let max_parallelism = default_max_parallelism(1);
    let mut backend =
        KeyedStateBackend::new(max_parallelism, KeyGroupRange::new(0, max_parallelism - 1))?;
    let counts = backend.register_state("count", StateKind::Value)?;
    let recent = backend.register_state("recent", StateKind::List)?;
    let started = Instant::now();
    let mut generator = 0x5eed_u64;
    for event in 0..args.events {
        generator = generator
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let key = format!("key-{}", (generator >> 33) % args.keys);
        let count = backend
            .get(counts, key.as_bytes(), b"")?
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .unwrap_or(0);
        backend.put(counts, key.as_bytes(), b"", &(count + 1).to_le_bytes())?;
        if event % 10 == 0 {
            backend.add(recent, key.as_bytes(), b"", &event.to_le_bytes())?;
        }
    }
    println!(
        "processed {} events over {} keys in {:.1?}: {} entries of state",
        args.events,
        args.keys,
        started.elapsed(),
        backend.entry_count()
    );

    let dir = args.checkpoint_dir.join("demo-chk-1");
    let factory = FileStreamFactory::new(
        &dir,
        args.checkpoint_dir.join("shared"),
        FileStreamFactory::DEFAULT_INLINE_THRESHOLD,
    )
    .with_context(|| format!("preparing checkpoint directory {}", dir.display()))?;
    let started = Instant::now();
    let view = backend.snapshot();
    let pause = started.elapsed();
    let out = factory.create_output_stream(StateScope::Exclusive)?;
    let (stream, offsets) = plugin.snapshot_keyed(view, out)?;
    let stream = stream
        .close_and_get_handle()
        .context("completing the checkpoint file")?;
    let handle = KeyGroupsStateHandle::new(Arc::new(offsets), stream);
    println!(
        "snapshot: {} bytes for key groups {} in {:.1?} (synchronous pause {:.1?}) -> {}",
        handle.state_size(),
        handle.key_group_range(),
        started.elapsed(),
        pause,
        handle.stream().describe()
    );

    let started = Instant::now();
    let restored = plugin.restore_keyed(
        &handle,
        KeyedStateBackend::new(max_parallelism, KeyGroupRange::new(0, max_parallelism - 1))?,
    )?;
    let equal = restored.contents() == backend.contents();
    println!(
        "restore at parallelism 1: {} entries in {:.1?}, equal to the job's state: {equal}",
        restored.entry_count(),
        started.elapsed()
    );
    if !equal {
        bail!("the restored state differs from the job's state");
    }

    let p = args.restore_parallelism.clamp(1, max_parallelism);
    let mut total = 0;
    for index in 0..p {
        let range = range_for_operator(max_parallelism, p, index)?;
        let started = Instant::now();
        let part =
            plugin.restore_keyed(&handle, KeyedStateBackend::new(max_parallelism, range)?)?;
        println!(
            "restore at parallelism {p}, subtask {index}: key groups {range}, {} entries in {:.1?}",
            part.entry_count(),
            started.elapsed()
        );
        total += part.entry_count();
    }
    if total != backend.entry_count() {
        bail!(
            "rescaled restore yielded {total} entries, the job had {}",
            backend.entry_count()
        );
    }
    println!("rescaled restore: {total} entries over {p} subtasks, every entry exactly once");
    Ok(())
}
