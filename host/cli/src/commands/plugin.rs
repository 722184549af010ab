//! `snapshot-host plugin ...`

use std::path::{Path, PathBuf};

use anyhow::Context;
use snapshot_host::plugin::{grant_of, PluginLimits, PluginRuntime, WIT_PACKAGE, WIT_VERSIONS};
use snapshot_host::{Config, SnapshotHost};

pub fn info(path: &Path, json: bool, config: &Config) -> anyhow::Result<()> {
    let plugin = SnapshotHost::load_plugin(path, config)?;
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
            "incremental": info.incremental,
            "sha256": info.content_hash,
            "wit": {
                "package": WIT_PACKAGE,
                "version": info.wit_version,
                "plugin_versions": built_against,
                "host_versions": WIT_VERSIONS,
            },
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
    println!(
        "incremental:    {}",
        if info.incremental {
            "yes (writes deltas when execution.checkpointing.incremental is on)"
        } else if info.wit_version == snapshot_host::plugin::WIT_LEGACY_VERSION {
            "no (a 0.1.0 strategy: full snapshots only)"
        } else {
            "no (full snapshots only)"
        }
    );
    println!("sha256:         {}", info.content_hash);
    println!("WIT:            {WIT_PACKAGE}@{} (host implements @{})", info.wit_version, WIT_VERSIONS.join(" and @"));
    println!("imports:");
    // Plain names are the world's own `use`d types, not capabilities: list interfaces only.
    let width = interfaces.iter().map(|(i, _)| i.len()).max().unwrap_or(0);
    for (import, granted) in &interfaces {
        println!("  {import:width$}  {granted}");
    }
    Ok(())
}

pub fn compile(path: &Path, cache_dir: Option<PathBuf>) -> anyhow::Result<()> {
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

pub fn test(path: &Path, format: ReportFormat, quick: bool, verbose: bool, config: &Config) -> anyhow::Result<()> {
    use snapshot_host::harness::{run_cases, Options, Sizes};
    use std::io::IsTerminal;
    let plugin = SnapshotHost::load_plugin(path, config)?;
    let options =
        Options { sizes: if quick { Sizes::QUICK } else { Sizes::FULL }, limits: config.plugin_limits.clone() };
    // A progress line per case, on a terminal only: full runs take a while per case.
    let progress = !quick && std::io::stderr().is_terminal();
    let report = run_cases(&plugin, path, &options, |index, count, name| {
        if progress {
            eprint!("\r\x1b[2K[{}/{count}] {name}", index + 1);
        }
    });
    if progress {
        eprint!("\r\x1b[2K");
    }
    match format {
        ReportFormat::Table => print!("{}", report.to_table(verbose)),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Junit => print!("{}", report.to_junit()),
    }
    if report.failed() {
        let failed = report.failures().into_iter().map(str::to_string).collect();
        return Err(super::exit::PluginFailedTests { plugin: path.display().to_string(), failed }.into());
    }
    Ok(())
}

pub fn new(name: &str, dir: Option<PathBuf>, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        anyhow::bail!("invalid plugin name {name:?}: use lowercase letters, digits and '-', starting with a letter");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() {
        anyhow::bail!("{} already exists; choose another name or --dir", dir.display());
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let parent = parent
        .canonicalize()
        .with_context(|| format!("the directory {} to create the plugin in does not exist", parent.display()))?;
    let crate_dir = parent.join(dir.file_name().context("--dir must name a directory")?);
    let dependency = sdk_dependency(&crate_dir, sdk.as_deref())?;
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{file}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &dependency.toml)
    };
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("Cargo.toml"), fill(include_str!("../../templates/plugin/Cargo.toml.tmpl")))?;
    std::fs::write(dir.join("src/lib.rs"), fill(include_str!("../../templates/plugin/lib.rs.tmpl")))?;
    println!("created {} (strategy {name}, keyed and operator state)", dir.display());
    println!("guest SDK: {}", dependency.describe);
    let wasm = format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_"));
    let me = host_command();
    println!("next steps (the target once: rustup target add wasm32-wasip2):");
    println!("  cd {}", quote(&dir.display().to_string()));
    println!("  cargo build --release --target wasm32-wasip2");
    println!("  {me} plugin test {wasm}");
    println!("  {me} demo --plugin {wasm}");
    Ok(())
}

/// How a generated plugin names the guest SDK.
struct SdkDependency {
    /// The TOML value after `snapshot-guest-sdk = `.
    toml: String,
    /// Where it comes from, for the user.
    describe: String,
}

/// The SDK by version, so a plugin builds wherever the SDK is published; with a relative path
/// override when `--sdk` names a checkout of it or when the plugin is created inside this
/// repository. Never an absolute path: the generated crate must build on another machine too.
fn sdk_dependency(crate_dir: &Path, sdk: Option<&Path>) -> anyhow::Result<SdkDependency> {
    let version = env!("CARGO_PKG_VERSION");
    let sdk = match sdk {
        Some(given) => {
            let canonical =
                given.canonicalize().with_context(|| format!("--sdk {}: no such directory", given.display()))?;
            if !is_guest_sdk(&canonical) {
                anyhow::bail!(
                    "--sdk {}: not the guest SDK (no Cargo.toml with package snapshot-guest-sdk there)",
                    given.display()
                );
            }
            Some(canonical)
        }
        None => crate_dir.ancestors().skip(1).map(|a| a.join("guest-sdk")).find(|candidate| is_guest_sdk(candidate)),
    };
    Ok(match sdk {
        Some(sdk) => {
            let relative = pathdiff::diff_paths(&sdk, crate_dir).context("no relative path to the SDK")?;
            let relative = relative.to_string_lossy().replace('\\', "/");
            SdkDependency {
                toml: format!("{{ version = \"{version}\", path = \"{relative}\" }}"),
                describe: format!("snapshot-guest-sdk {version} from {relative}"),
            }
        }
        None => SdkDependency {
            toml: format!("\"{version}\""),
            describe: format!(
                "snapshot-guest-sdk {version} from the crates registry (where it is not published, create the plugin with --sdk path/to/guest-sdk of a snapshot-host checkout)"
            ),
        },
    })
}

fn is_guest_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| t.get("package")?.get("name")?.as_str().map(|n| n == "snapshot-guest-sdk"))
        .unwrap_or(false)
}

/// The command that runs this binary: its name when that is what `PATH` finds, its full path
/// otherwise, so the printed next steps work as pasted.
fn host_command() -> String {
    let me = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok());
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|d| d.join("snapshot-host")).find(|c| c.is_file())?.canonicalize().ok()
    });
    match me {
        Some(me) if on_path.as_ref() != Some(&me) => quote(&me.display().to_string()),
        _ => "snapshot-host".into(),
    }
}

fn quote(text: &str) -> String {
    shlex::try_quote(text).map(|q| q.into_owned()).unwrap_or_else(|_| text.to_string())
}
