//! `snapshot-host config`: the configuration a run would use, key by key, and where each
//! value came from.

use std::io::Write;

use snapshot_host::config::EffectiveValue;

/// Prints `config` as a table (or JSON lines of [`EffectiveValue`] with `json`).
pub fn print(config: &snapshot_host::Config, json: bool) -> anyhow::Result<()> {
    let values = config.effective();
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&values)?)?;
        return Ok(());
    }
    let width = values.iter().map(|v| v.key.len()).max().unwrap_or(0);
    let value_width = values.iter().map(|v| v.value.len()).max().unwrap_or(0).min(48);
    for EffectiveValue { key, value, source, deprecated_name } in &values {
        let deprecated = deprecated_name.as_ref().map(|d| format!(" (written as deprecated {d})")).unwrap_or_default();
        writeln!(out, "{key:width$}  {value:value_width$}  {source}{deprecated}")?;
    }
    Ok(())
}
