//! `snapshot-host checkpoint ...`: what an operator asks of a job's checkpoints at 3 a.m.
//! Which is the newest, how big, which plugin wrote it, are its local copies here, are its
//! checksums intact, what state does it hold. Reads only; works on every primary.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use snapshot_host::inspect::{CheckpointInspector, DumpFilter, DumpRow, GroupPart, VerifyReport};
use snapshot_host::{KeyGroupRange, SnapshotHost, StorageLocation};

use super::exit::{CheckpointDamaged, UsageError};
use super::ConfigArgs;

#[derive(Debug, Subcommand)]
pub enum CheckpointCommand {
    /// The job's completed checkpoints: id, time, size, subtasks, plugin, local copies here.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One checkpoint per subtask: key-group ranges with offsets and lengths, operator
    /// partitions, the files holding them and their local copies.
    Show {
        /// The checkpoint id.
        id: u64,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read every byte of a checkpoint (all checkpoints without an id), primary and local
    /// copies, against its checksums. Exit status 0: intact; 4: the primary is damaged (it
    /// cannot be restored); 5: only local copies are damaged (restores fall back to the
    /// primary).
    Verify {
        /// The checkpoint id (default: every completed checkpoint).
        id: Option<u64>,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The state of a checkpoint decoded through a plugin of its format, one line per entry:
    /// state, key group, key, namespace, user key, value (text when printable, else hex).
    Dump {
        /// The checkpoint id.
        id: u64,
        #[command(flatten)]
        target: Target,
        /// The plugin to decode with: any plugin of the checkpoint's format (default: the
        /// plugin the checkpoint names, built in this workspace).
        #[arg(long)]
        plugin: Option<PathBuf>,
        /// Only this state (repeatable).
        #[arg(long = "state", value_name = "NAME")]
        states: Vec<String>,
        /// Only these key groups: `N` or `FIRST-LAST` (keyed state only).
        #[arg(long, value_name = "N|FIRST-LAST")]
        key_groups: Option<String>,
        /// JSON lines instead of text lines.
        #[arg(long)]
        json: bool,
    },
}

/// Which job's checkpoints, where.
#[derive(Debug, Args)]
pub struct Target {
    /// The job (default: the only job at the primary).
    #[arg(long)]
    job_id: Option<String>,
    /// The primary: a directory or a URI (`s3://bucket/prefix` with the `s3.*` keys,
    /// `file:///dir`). Default: `execution.checkpointing.dir`.
    #[arg(long)]
    primary: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
}

impl Target {
    fn open(&self) -> anyhow::Result<(CheckpointInspector, snapshot_host::Config)> {
        let mut config = self.config.load_with_demo_defaults()?;
        if let Some(primary) = &self.primary {
            config.checkpoint_storage =
                StorageLocation::parse(primary).map_err(|e| UsageError(format!("--primary {primary}: {e}")))?;
        }
        let location = config.checkpoint_storage.clone();
        let job = match &self.job_id {
            Some(job) => job.clone(),
            None => {
                let jobs = CheckpointInspector::jobs(&location, &config.s3)
                    .with_context(|| format!("listing the jobs at {location}"))?;
                match jobs.as_slice() {
                    [only] => only.clone(),
                    [] => anyhow::bail!(
                        "no job has checkpoints at {location} (set the primary with --primary or execution.checkpointing.dir; the demo's default primary, an embedded S3 server, lives only while the demo runs: run it with --primary ./checkpoints to keep its checkpoints)"
                    ),
                    many => {
                        return Err(UsageError(format!(
                            "{} jobs have checkpoints at {location} ({}): say which with --job-id",
                            many.len(),
                            many.join(", ")
                        ))
                        .into())
                    }
                }
            }
        };
        let inspector = CheckpointInspector::open(&config, &job)?;
        Ok((inspector, config))
    }
}

pub fn run(command: CheckpointCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        CheckpointCommand::List { target, json } => {
            let (inspector, _) = target.open()?;
            let rows = inspector.list()?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
                return Ok(());
            }
            writeln!(out, "job {} at {}", inspector.job_id(), inspector.storage().url())?;
            if rows.is_empty() {
                writeln!(out, "no completed checkpoint")?;
                return Ok(());
            }
            writeln!(
                out,
                "{:>6}  {:20}  {:>10}  {:>8}  {:>8}  {:32}  local copies here",
                "id", "completed (UTC)", "size", "subtasks", "offset", "plugin (format)"
            )?;
            for r in rows {
                if let Some(e) = &r.error {
                    writeln!(out, "{:>6}  {:20}  unreadable: {e}", r.id, r.completed_at_rfc3339.unwrap_or_default())?;
                    continue;
                }
                let plugin = format!(
                    "{} {} ({} v{})",
                    r.plugin.name, r.plugin.version, r.plugin.format, r.plugin.format_version
                );
                let local = match r.local_copies.len() as u32 {
                    0 => "none".to_string(),
                    n if n == r.subtasks => format!("all {n} subtasks"),
                    _ => format!("subtasks {}", join(&r.local_copies)),
                };
                writeln!(
                    out,
                    "{:>6}  {:20}  {:>10}  {:>8}  {:>8}  {plugin:32}  {local}",
                    r.id,
                    r.completed_at_rfc3339.unwrap_or_default(),
                    human_bytes(r.size),
                    r.subtasks,
                    r.source_offset
                )?;
            }
        }
        CheckpointCommand::Show { id, target, json } => {
            let (inspector, _) = target.open()?;
            let d = inspector.show(id)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&d)?)?;
                return Ok(());
            }
            let s = &d.summary;
            writeln!(out, "checkpoint {} of job {} at {}", s.id, d.job_id, inspector.storage().url())?;
            writeln!(out, "completed:  {}", s.completed_at_rfc3339.clone().unwrap_or_else(|| "unknown".into()))?;
            writeln!(out, "size:       {} ({} bytes)", human_bytes(s.size), s.size)?;
            writeln!(
                out,
                "plugin:     {} {} (format {} v{}, sha256 {})",
                s.plugin.name, s.plugin.version, s.plugin.format, s.plugin.format_version, s.plugin.content_hash
            )?;
            writeln!(
                out,
                "job:        {} subtasks, {} key groups, source offset {}",
                s.subtasks, s.max_parallelism, s.source_offset
            )?;
            for t in &d.subtask_state {
                writeln!(out, "subtask {}:", t.subtask)?;
                match &t.keyed {
                    Some(k) => {
                        let range = match (k.first_key_group, k.last_key_group) {
                            (Some(a), Some(b)) => format!("key groups {a}-{b}"),
                            _ => "no key groups".into(),
                        };
                        writeln!(out, "  keyed:    {range} in {} ({} bytes)", k.stream.location, k.stream.size)?;
                        let groups: Vec<String> = k
                            .key_groups
                            .iter()
                            .map(|g| {
                                let delta = if g.part == GroupPart::Delta { "*" } else { "" };
                                format!("{}@{}+{}{delta}", g.key_group, g.offset, g.len)
                            })
                            .collect();
                        writeln!(out, "            key group@offset+length: {}", groups.join(" "))?;
                        if !k.earlier.is_empty() {
                            let deltas = k.key_groups.iter().filter(|g| g.part == GroupPart::Delta).count();
                            writeln!(
                                out,
                                "            incremental: {deltas} of {} key groups are deltas (*) on the chain:",
                                k.key_groups.len()
                            )?;
                        }
                        for e in &k.earlier {
                            writeln!(
                                out,
                                "            chk {:>4}: {} ({} bytes; {} full, {} delta)",
                                e.checkpoint_id, e.stream.location, e.stream.size, e.full_groups, e.delta_groups
                            )?;
                        }
                    }
                    None => writeln!(out, "  keyed:    none")?,
                }
                match &t.operator {
                    Some(o) => {
                        writeln!(out, "  operator: {} ({} bytes)", o.stream.location, o.stream.size)?;
                        for st in &o.states {
                            writeln!(
                                out,
                                "            {:?} {:?}: {} partitions at offsets {}",
                                st.name,
                                st.mode,
                                st.offsets.len(),
                                join(&st.offsets)
                            )?;
                        }
                    }
                    None => writeln!(out, "  operator: none")?,
                }
                if t.local_copies.is_empty() {
                    writeln!(out, "  local:    none on this machine")?;
                }
                for c in &t.local_copies {
                    writeln!(out, "  local:    {} ({})", c.dir.display(), c.state)?;
                }
            }
        }
        CheckpointCommand::Verify { id, target, json } => {
            let (inspector, _) = target.open()?;
            let ids = match id {
                Some(id) => vec![id],
                None => inspector.completed()?,
            };
            if ids.is_empty() {
                anyhow::bail!(
                    "job {} has no completed checkpoint at {}",
                    inspector.job_id(),
                    inspector.storage().url()
                );
            }
            let mut reports = Vec::new();
            for id in ids {
                let report = inspector.verify(id)?;
                if !json {
                    print_verify(&mut out, &report)?;
                }
                reports.push(report);
            }
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&reports)?)?;
            }
            out.flush()?;
            let damaged: Vec<&VerifyReport> = reports.iter().filter(|r| !r.intact()).collect();
            if !damaged.is_empty() {
                return Err(CheckpointDamaged {
                    primary: damaged.iter().any(|r| !r.primary_intact()),
                    checkpoints: damaged.iter().map(|r| r.checkpoint_id).collect(),
                }
                .into());
            }
        }
        CheckpointCommand::Dump { id, target, plugin, states, key_groups, json } => {
            let (inspector, config) = target.open()?;
            let metadata = inspector.metadata(id)?;
            let written = &metadata.plugin;
            let path = match &plugin {
                Some(p) => p.clone(),
                None => {
                    let tried = plugin_candidates(&written.name);
                    match tried.iter().find(|p| p.exists()) {
                        Some(p) => p.clone(),
                        None => anyhow::bail!(
                            "checkpoint {id} was written by plugin {} (format {} v{}), which is not at {}: pass --plugin with a plugin of format {}",
                            written.name,
                            written.format,
                            written.format_version,
                            tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or "),
                            written.format
                        ),
                    }
                }
            };
            let plugin = SnapshotHost::load_plugin(&path, &config)
                .with_context(|| format!("loading the plugin {}", path.display()))?;
            let filter = DumpFilter {
                states,
                key_groups: key_groups.as_deref().map(|k| parse_key_groups(k, metadata.max_parallelism)).transpose()?,
            };
            let mut emit = |row: &DumpRow| -> std::io::Result<()> {
                if json {
                    serde_json::to_writer(&mut out, row)?;
                    writeln!(out)
                } else {
                    writeln!(out, "{}", text_row(row))
                }
            };
            let rows = inspector.dump(id, &plugin, &filter, &mut emit)?;
            out.flush()?;
            tracing::info!(checkpoint = id, rows, "dumped checkpoint {id}: {rows} rows");
        }
    }
    Ok(())
}

/// Where a plugin named `name` built in this workspace is: below the working directory's
/// target directory (as `demo` looks), or in the build tree this binary was built into
/// (`target/<profile>/snapshot-host` beside `target/wasm32-wasip2/plugin/`).
fn plugin_candidates(name: &str) -> Vec<PathBuf> {
    let default = super::default_plugin_path(name);
    let mut out = vec![default.clone()];
    if let Some(target) = std::env::current_exe().ok().and_then(|e| Some(e.parent()?.parent()?.to_path_buf())) {
        let beside = target.join("wasm32-wasip2/plugin").join(default.file_name().unwrap_or_default());
        if !out.contains(&beside) {
            out.push(beside);
        }
    }
    out
}

fn print_verify(out: &mut impl Write, report: &VerifyReport) -> std::io::Result<()> {
    for f in &report.files {
        let mut who = match f.subtask {
            Some(s) => format!("subtask {s} {} {}", f.copy, f.part),
            None => format!("{} {}", f.copy, f.part),
        };
        if let Some(id) = f.written_by {
            who.push_str(&format!(" of chk {id}"));
        }
        let note = f.note.as_ref().map(|n| format!(" [{n}]")).unwrap_or_default();
        match &f.damage {
            None if f.part.contains("metadata") => writeln!(out, "ok       {who:32} {}{note}", f.file)?,
            None => writeln!(out, "ok       {who:32} {} ({} bytes, {} segments){note}", f.file, f.bytes, f.segments)?,
            Some(d) => writeln!(out, "DAMAGED  {who:32} {}{note}", d.reason)?,
        }
    }
    let verdict = if report.intact() {
        "intact".to_string()
    } else if report.primary_intact() {
        "primary intact, local copy damaged (restores fall back to the primary)".to_string()
    } else {
        "DAMAGED: the primary cannot be restored".to_string()
    };
    writeln!(out, "checkpoint {}: {verdict}", report.checkpoint_id)
}

fn text_row(row: &DumpRow) -> String {
    let mut parts = vec![format!("state={:?}", row.state), format!("kind={}", row.kind)];
    if let Some(kg) = row.key_group {
        parts.push(format!("key_group={kg}"));
    }
    for (name, value) in [("key", &row.key), ("namespace", &row.namespace), ("user_key", &row.user_key)] {
        if let Some(v) = value {
            parts.push(format!("{name}={v}"));
        }
    }
    if let Some(s) = row.subtask {
        parts.push(format!("subtask={s}"));
    }
    if let Some(m) = row.mode {
        parts.push(format!("mode={m:?}"));
    }
    if let Some(i) = row.index {
        parts.push(format!("index={i}"));
    }
    parts.push(format!("value={}", row.value));
    parts.join(" ")
}

/// `N` or `FIRST-LAST`, within the checkpoint's key groups.
fn parse_key_groups(text: &str, max_parallelism: u32) -> anyhow::Result<KeyGroupRange> {
    let bad = |why: String| UsageError(format!("--key-groups {text}: {why}"));
    let number = |s: &str| s.trim().parse::<u32>().map_err(|e| bad(format!("{s:?} is not a key group ({e})")));
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let n = number(text)?;
            (n, n)
        }
    };
    if first > last {
        return Err(bad(format!("{first} is after {last}")).into());
    }
    if last >= max_parallelism {
        return Err(bad(format!("the checkpoint has key groups 0-{}", max_parallelism - 1)).into());
    }
    Ok(KeyGroupRange::new(first, last))
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
