//! Resource cases: time and memory on one huge value, and memory proportional to what a
//! streaming strategy needs on a state of many entries.

use std::time::Instant;

use super::data;
use super::keyed::{restore, snapshot};
use super::{CaseError, CaseOutput, Context, Passed};

/// Peak guest memory and time per MiB on one huge value, against the plugin's limits.
pub fn memory_and_time(cx: &Context) -> CaseOutput {
    let plugin = cx.plugin;
    let backend = data::huge_value(cx.sizes.huge_value.max(8 << 20));
    let limit = plugin.limits().memory_bytes;
    plugin.reset_peak_memory();
    let started = Instant::now();
    let handle = snapshot(plugin, &backend)?;
    let elapsed = started.elapsed();
    let snapshot_peak = plugin.peak_memory();
    plugin.reset_peak_memory();
    let started = Instant::now();
    restore(plugin, std::slice::from_ref(&handle), backend.key_group_range())?;
    let restore_elapsed = started.elapsed();
    let restore_peak = plugin.peak_memory();
    let mib = (handle.state_size() as f64 / 1048576.0).max(1e-9);
    let summary = format!(
        "peak guest memory {} MiB snapshot / {} MiB restore of {} MiB limit; {:.2} / {:.2} ms per MiB",
        snapshot_peak >> 20,
        restore_peak >> 20,
        limit >> 20,
        elapsed.as_secs_f64() * 1e3 / mib,
        restore_elapsed.as_secs_f64() * 1e3 / mib
    );
    if snapshot_peak.max(restore_peak) > limit / 2 {
        return Ok(Passed::warn(handle.state_size(), format!("{summary}: over half the memory limit")));
    }
    if elapsed.max(restore_elapsed) > plugin.limits().timeout / 2 {
        return Ok(Passed::warn(handle.state_size(), format!("{summary}: over half the time limit")));
    }
    Ok(Passed::info(handle.state_size(), summary))
}

/// Peak guest memory on a state of many entries, none over 64 KiB, compared with what the
/// plugin needs for a nearly empty state. A strategy that streams needs a few batches; one
/// that collects the snapshot (or a restored group) in guest memory before writing needs the
/// whole state, and fails here, long before a production state meets the memory limit.
pub fn proportional(cx: &Context) -> CaseOutput {
    let plugin = cx.plugin;
    let total = cx.sizes.many_entries_bytes;
    let small = data::every_kind(10);
    plugin.reset_peak_memory();
    let h = snapshot(plugin, &small)?;
    restore(plugin, std::slice::from_ref(&h), small.key_group_range())?;
    let baseline = plugin.peak_memory();

    let backend = data::many_entries(total);
    let largest = 64usize << 10;
    plugin.reset_peak_memory();
    let handle = snapshot(plugin, &backend)?;
    let snapshot_peak = plugin.peak_memory();
    plugin.reset_peak_memory();
    restore(plugin, std::slice::from_ref(&handle), backend.key_group_range())?;
    let restore_peak = plugin.peak_memory();
    // Room for generous batches and an allocator's slack, far below the state itself.
    let allowance = (total / 4).max(64 * largest);
    let summary = format!(
        "peak guest memory {} MiB snapshot / {} MiB restore over a {} MiB baseline, for {} MiB of state whose largest entry is {} KiB",
        snapshot_peak.saturating_sub(baseline) >> 20,
        restore_peak.saturating_sub(baseline) >> 20,
        baseline >> 20,
        total >> 20,
        largest >> 10
    );
    for (what, peak) in [("snapshot", snapshot_peak), ("restore", restore_peak)] {
        let grown = peak.saturating_sub(baseline);
        if grown > allowance {
            return Err(CaseError::msg(format!(
                "the {what} grew guest memory by {} MiB for {} MiB of state: the strategy holds the {} in memory instead of streaming it (allowed: {} MiB, from entries of at most {} KiB); {summary}",
                grown >> 20,
                total >> 20,
                if what == "snapshot" { "snapshot" } else { "restored state" },
                allowance >> 20,
                largest >> 10
            )));
        }
    }
    Ok(Passed::info(handle.state_size(), summary))
}
