//! `snapshot-host plugin ...`

use std::path::Path;

use anyhow::Context;
use snapshot_host::plugin::{grant_of, PluginLimits, PluginRuntime, WIT_PACKAGE, WIT_VERSION};
use snapshot_host::{Config, SnapshotHost};

pub fn info(path: &Path, json: bool) -> anyhow::Result<()> {
    let plugin = SnapshotHost::load_plugin(path, &Config::default())?;
    let info = plugin.info();
    let built_against: Vec<&str> = plugin
        .imports()
        .iter()
        .filter_map(|i| i.strip_prefix(WIT_PACKAGE)?.split_once('@').map(|(_, v)| v))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let interfaces: Vec<(&str, &str)> = plugin
        .imports()
        .iter()
        .filter(|i| i.contains(':'))
        .map(|i| (i.as_str(), grant_of(i).map(|g| g.grants).unwrap_or("the strategy world")))
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
            "grants": interfaces
                .iter()
                .map(|(import, granted)| serde_json::json!({ "import": import, "granted": granted }))
                .collect::<Vec<_>>(),
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
    let width = interfaces.iter().map(|(i, _)| i.len()).max().unwrap_or(0);
    for (import, granted) in &interfaces {
        println!("  {import:width$}  {granted}");
    }
    Ok(())
}

pub fn compile(path: &Path, cache_dir: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use snapshot_host::plugin::{CacheOutcome, CompiledCache, RuntimeOptions};
    use std::time::Instant;
    let dir = cache_dir.or_else(CompiledCache::default_dir).context("no cache directory: pass --cache-dir")?;
    let cache = CompiledCache::new(&dir);
    let bytes = std::fs::read(path).with_context(|| format!("reading plugin {}", path.display()))?;
    // Validate the plugin first: a bad file gets the loader's clear error, not a compile error.
    let plain = PluginRuntime::new().context("starting the plugin runtime")?;
    plain.load_bytes(path, &bytes, PluginLimits::default())?;

    let started = Instant::now();
    plain.compile(&bytes).map_err(|e| anyhow::anyhow!("compiling: {e:#}"))?;
    let cold = started.elapsed();

    let runtime =
        PluginRuntime::with_options(RuntimeOptions { cache: Some(cache.clone()), ..RuntimeOptions::default() })?;
    let (_, outcome) = runtime.compile(&bytes).map_err(|e| anyhow::anyhow!("compiling into the cache: {e:#}"))?;
    let started = Instant::now();
    let (_, again) = runtime.compile(&bytes).map_err(|e| anyhow::anyhow!("loading from the cache: {e:#}"))?;
    let cached = started.elapsed();
    if again != CacheOutcome::Hit {
        anyhow::bail!("the cache entry just written in {} could not be loaded back ({again:?})", dir.display());
    }
    let plugin = runtime.load_bytes(path, &bytes, PluginLimits::default())?;
    let rounds: u32 = if bytes.len() > 4 << 20 { 20 } else { 1000 };
    plugin.instantiate_once()?;
    let started = Instant::now();
    for _ in 0..rounds {
        plugin.instantiate_once()?;
    }
    let instantiate = started.elapsed() / rounds;
    println!("plugin:            {} {} ({} bytes)", plugin.info().name, plugin.info().version, bytes.len());
    println!(
        "cache:             {} ({}, limit {} MiB)",
        dir.display(),
        if outcome == CacheOutcome::Hit { "was already cached" } else { "compiled and stored" },
        cache.size_limit() >> 20
    );
    println!("cold compile:      {cold:.2?}");
    println!("cached load:       {cached:.2?}");
    println!("instantiation:     {instantiate:.2?} per invocation (fresh store, mean of {rounds})");
    Ok(())
}

/// How `plugin test` prints its report.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReportFormat {
    /// A readable table.
    Table,
    /// JSON.
    Json,
    /// JUnit XML.
    Junit,
}

pub fn test(path: &Path, format: ReportFormat, quick: bool) -> anyhow::Result<()> {
    use snapshot_host::harness::{test_plugin, Sizes};
    let report = test_plugin(path, if quick { Sizes::QUICK } else { Sizes::FULL })?;
    match format {
        ReportFormat::Table => print!("{}", report.to_table()),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Junit => print!("{}", report.to_junit()),
    }
    if report.failed() {
        let failed: Vec<_> = report
            .cases
            .iter()
            .filter(|c| c.outcome == snapshot_host::harness::Outcome::Fail)
            .map(|c| c.name.as_str())
            .collect();
        anyhow::bail!("plugin {} failed {} conformance case(s): {}", path.display(), failed.len(), failed.join(", "));
    }
    Ok(())
}

pub fn new(name: &str, dir: Option<std::path::PathBuf>, sdk: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        anyhow::bail!("invalid plugin name {name:?}: use lowercase letters, digits and '-', starting with a letter");
    }
    let dir = dir.unwrap_or_else(|| std::path::PathBuf::from(name));
    if dir.exists() {
        anyhow::bail!("{} already exists; choose another name or --dir", dir.display());
    }
    let sdk = sdk.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk"));
    let sdk =
        sdk.canonicalize().with_context(|| format!("the guest SDK was not found at {} (pass --sdk)", sdk.display()))?;
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{file}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("Cargo.toml"), fill(include_str!("../../templates/plugin/Cargo.toml.tmpl")))?;
    std::fs::write(dir.join("src/lib.rs"), fill(include_str!("../../templates/plugin/lib.rs.tmpl")))?;
    println!("created {} ({})", dir.display(), name);
    println!("build:  cd {} && cargo build --release --target wasm32-wasip2", dir.display());
    println!(
        "test:   snapshot-host plugin test {}/target/wasm32-wasip2/release/{}.wasm",
        dir.display(),
        name.replace('-', "_")
    );
    Ok(())
}
