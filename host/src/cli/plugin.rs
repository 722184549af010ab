//! `snapshot-host plugin ...`

use std::path::Path;

use anyhow::Context;
use snapshot_host::runtime::{PluginLimits, PluginRuntime, WIT_PACKAGE, WIT_VERSION};

pub fn info(path: &Path, json: bool) -> anyhow::Result<()> {
    let runtime = PluginRuntime::new().context("starting the plugin runtime")?;
    let plugin = runtime.load(path, PluginLimits::default())?;
    let info = plugin.info();
    let built_against: Vec<&str> = plugin
        .imports()
        .iter()
        .filter_map(|i| i.strip_prefix(WIT_PACKAGE)?.split_once('@').map(|(_, v)| v))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let size = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if json {
        let value = serde_json::json!({
            "file": path.display().to_string(),
            "size": size,
            "name": info.name,
            "version": info.version,
            "format": info.format,
            "format_version": info.format_version,
            "deterministic": info.deterministic,
            "sha256": info.content_hash,
            "wit": { "package": WIT_PACKAGE, "plugin_versions": built_against, "host_version": WIT_VERSION },
            "imports": plugin.imports(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!("file:           {} ({size} bytes)", path.display());
    println!("name:           {}", info.name);
    println!("version:        {}", info.version);
    println!("format:         {} v{}", info.format, info.format_version);
    println!("deterministic:  {}", info.deterministic);
    println!("sha256:         {}", info.content_hash);
    println!("WIT:            {WIT_PACKAGE}@{} (host implements @{WIT_VERSION})", built_against.join(", "));
    println!("imports:");
    // Plain names are the world's own `use`d types, not capabilities: list interfaces only.
    for import in plugin.imports().iter().filter(|i| i.contains(':')) {
        println!("  {import}");
    }
    Ok(())
}
