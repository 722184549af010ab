//! `snapshot-host checkpoint list/show/verify/dump` as an operator uses them, on a directory
//! primary and on S3: after a job run, list names the checkpoints and their local copies,
//! show their key groups, verify passes, dump decodes exactly the counts the source implies.
//! Then a random bit of every file of the newest checkpoint is flipped in turn, primary and
//! local: verify must fail with the status of the copy that is damaged and name the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use suite::Primary;

const KEYS: u64 = 20_000;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn host(dir: &Path, args: &[&str], overrides: &[String]) -> Run {
    let mut command = Command::new(suite::host_binary());
    command.current_dir(dir).args(args);
    for o in overrides {
        command.args(["--set", o]);
    }
    let out = command.output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn checkpoint(dir: &Path, args: &[&str], overrides: &[String]) -> Run {
    let mut all = vec!["checkpoint"];
    all.extend_from_slice(args);
    host(dir, &all, overrides)
}

/// Every file below `dir`, sorted.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_below(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A dumped value `{"hex": "..."}` read as the little-endian u64 the job stores.
fn le_u64(value: &Value) -> u64 {
    let hex = value["hex"].as_str().unwrap_or_else(|| panic!("not hex: {value}"));
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    u64::from_le_bytes(bytes.try_into().unwrap())
}

fn flip_bit(file: &Path, rng: &mut suite::Rng) -> (usize, u8) {
    let mut bytes = std::fs::read(file).unwrap();
    assert!(!bytes.is_empty(), "{} is empty", file.display());
    let at = rng.below(bytes.len() as u64) as usize;
    let mask = 1u8 << rng.below(8);
    bytes[at] ^= mask;
    std::fs::write(file, &bytes).unwrap();
    (at, mask)
}

fn unflip(file: &Path, (at, mask): (usize, u8)) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at] ^= mask;
    std::fs::write(file, &bytes).unwrap();
}

fn operators_can_list_show_verify_and_dump(primary: Primary) {
    let dir = tempfile::tempdir().unwrap();
    let (overrides, root) = primary.overrides(dir.path());
    let plugin = suite::plugin_path("full-keyed");
    let plugin_arg = plugin.to_str().unwrap();
    let keys = KEYS.to_string();
    let run = host(
        dir.path(),
        &["job", "run", "--events", "60000", "--keys", &keys, "--checkpoint-interval", "20000", "--plugin", plugin_arg],
        &overrides,
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);

    // list: the completed checkpoints, the plugin, and the newest one's local copies.
    let list = checkpoint(dir.path(), &["list", "--json"], &overrides);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let rows: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
    assert!(!rows.is_empty(), "{}", list.stdout);
    let on_disk: Vec<u64> = std::fs::read_dir(root.join("job"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("_metadata").exists())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chk-")?.parse().ok())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let listed: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(listed, on_disk, "list shows exactly the checkpoints with metadata");
    let newest = rows.last().unwrap();
    let id = newest["id"].as_u64().unwrap();
    assert_eq!(newest["plugin"]["name"], "full-keyed");
    assert_eq!(newest["subtasks"], 2);
    assert!(newest["size"].as_u64().unwrap() > 100_000, "{newest}");
    assert!(newest["completed_at"].as_f64().unwrap() > 1.7e9, "{newest}");
    assert_eq!(newest["local_copies"], serde_json::json!([0, 1]), "{newest}");
    let text = checkpoint(dir.path(), &["list"], &overrides);
    assert!(text.stdout.contains("full-keyed 0.1.0") && text.stdout.contains("all 2 subtasks"), "{}", text.stdout);

    // show: the subtasks' key groups tile all key groups, offsets ascend, files are named.
    let id_arg = id.to_string();
    let show = checkpoint(dir.path(), &["show", &id_arg, "--json"], &overrides);
    assert_eq!(show.code, 0, "{}", show.stderr);
    let details: Value = serde_json::from_str(&show.stdout).unwrap();
    let max_parallelism = details["max_parallelism"].as_u64().unwrap();
    let mut groups = Vec::new();
    for s in details["subtask_state"].as_array().unwrap() {
        let keyed = &s["keyed"];
        let offsets: Vec<u64> =
            keyed["key_groups"].as_array().unwrap().iter().map(|g| g["offset"].as_u64().unwrap()).collect();
        assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
        groups.extend(keyed["key_groups"].as_array().unwrap().iter().map(|g| g["key_group"].as_u64().unwrap()));
        assert!(!keyed["stream"]["location"].as_str().unwrap().starts_with("<inline"), "{keyed}");
        let states: Vec<&str> =
            s["operator"]["states"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
        assert_eq!(states, ["job", "processed"]);
        assert_eq!(s["local_copies"].as_array().unwrap().len(), 1, "{s}");
    }
    assert_eq!(groups, (0..max_parallelism).collect::<Vec<_>>());

    // verify: intact.
    let verify = checkpoint(dir.path(), &["verify"], &overrides);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    assert!(verify.stdout.contains(&format!("checkpoint {id}: intact")), "{}", verify.stdout);

    // dump: exactly the counts of the source's first `offset` events, and the operator state.
    let dump = checkpoint(dir.path(), &["dump", &id_arg, "--json", "--plugin", plugin_arg], &overrides);
    assert_eq!(dump.code, 0, "{}", dump.stderr);
    let offset = newest["source_offset"].as_u64().unwrap();
    let mut counts = std::collections::BTreeMap::new();
    let mut processed = 0;
    for line in dump.stdout.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        match row["state"].as_str().unwrap() {
            "count" => {
                let key = row["key"].as_str().unwrap().as_bytes().to_vec();
                let key_group = row["key_group"].as_u64().unwrap() as u32;
                assert_eq!(key_group, snapshot_host::key_group_for_key(&key, max_parallelism as u32));
                counts.insert(key, le_u64(&row["value"]));
            }
            "processed" => processed += le_u64(&row["value"]),
            "job" => assert_eq!(row["value"], format!("job=job keys={KEYS} events=60000")),
            other => panic!("unexpected state {other}"),
        }
    }
    assert_eq!(counts, snapshot_host_cli::job::expected_counts(offset, KEYS));
    assert_eq!(processed, offset);
    // Filters: one state, a few key groups.
    let some = checkpoint(
        dir.path(),
        &["dump", &id_arg, "--json", "--plugin", plugin_arg, "--state", "count", "--key-groups", "3-9"],
        &overrides,
    );
    assert_eq!(some.code, 0, "{}", some.stderr);
    let rows: Vec<Value> = some.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["state"] == "count" && (3..=9).contains(&r["key_group"].as_u64().unwrap())));
    let expected = counts
        .keys()
        .filter(|k| (3..=9).contains(&snapshot_host::key_group_for_key(k, max_parallelism as u32)))
        .count();
    assert_eq!(rows.len(), expected);
    // Without --plugin, the plugin the checkpoint names is found where the workspace builds it.
    let text = checkpoint(dir.path(), &["dump", &id_arg, "--state", "job"], &overrides);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("state=\"job\" kind=operator"), "{}", text.stdout);

    // Damage: every file of the newest checkpoint, primary and local, one random bit at a time.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("damage seed {seed}");
    let mut rng = suite::Rng::new(seed);
    let primary_files = files_below(&root.join("job").join(format!("chk-{id}")));
    let local_files: Vec<PathBuf> = files_below(&dir.path().join("local-state"))
        .into_iter()
        .filter(|f| f.parent().unwrap().ends_with(format!("chk_{id}")))
        .collect();
    assert!(primary_files.len() >= 3 && local_files.len() == 6, "{primary_files:?} {local_files:?}");
    for (file, status) in primary_files.iter().map(|f| (f, 4)).chain(local_files.iter().map(|f| (f, 5))) {
        let name = file.file_name().unwrap().to_str().unwrap();
        let flipped = flip_bit(file, &mut rng);
        let verify = checkpoint(dir.path(), &["verify", &id_arg], &overrides);
        assert_eq!(verify.code, status, "{name} at {flipped:?}: {}{}", verify.stdout, verify.stderr);
        let damaged: Vec<&str> = verify.stdout.lines().filter(|l| l.starts_with("DAMAGED")).collect();
        assert!(damaged.len() == 1 && damaged[0].contains(name), "{name} at {flipped:?}: {}", verify.stdout);
        let json = checkpoint(dir.path(), &["verify", &id_arg, "--json"], &overrides);
        let reports: Vec<Value> = serde_json::from_str(&json.stdout).unwrap();
        let bad: Vec<&Value> =
            reports[0]["files"].as_array().unwrap().iter().filter(|f| !f["damage"].is_null()).collect();
        assert_eq!(bad.len(), 1, "{}", json.stdout);
        assert_eq!(bad[0]["copy"], if status == 4 { "primary" } else { "local" });
        unflip(file, flipped);
    }
    let verify = checkpoint(dir.path(), &["verify", &id_arg], &overrides);
    assert_eq!(verify.code, 0, "{}", verify.stdout);

    // Damaged metadata: list still lists the checkpoint, says why it is unreadable.
    let metadata = root.join("job").join(format!("chk-{id}/_metadata"));
    let flipped = flip_bit(&metadata, &mut rng);
    let list = checkpoint(dir.path(), &["list"], &overrides);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.lines().any(|l| l.trim_start().starts_with(&id_arg) && l.contains("unreadable")),
        "{}",
        list.stdout
    );
    unflip(&metadata, flipped);

    // Wrong inputs name what is wrong.
    let missing = checkpoint(dir.path(), &["show", "999"], &overrides);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no completed checkpoint 999") && missing.stderr.contains(&id_arg),
        "{}",
        missing.stderr
    );
    let job = checkpoint(dir.path(), &["list", "--job-id", "other"], &overrides);
    assert!(
        job.code == 1 && job.stderr.contains("no job \"other\"") && job.stderr.contains("jobs there: job"),
        "{}",
        job.stderr
    );
    let groups = checkpoint(dir.path(), &["dump", &id_arg, "--key-groups", "9-3"], &overrides);
    assert_eq!(groups.code, 2, "{}", groups.stderr);
}

#[test]
fn operators_can_inspect_a_directory_primary() {
    operators_can_list_show_verify_and_dump(Primary::Directory);
}

#[test]
fn operators_can_inspect_an_s3_primary() {
    operators_can_list_show_verify_and_dump(Primary::S3);
}

#[test]
fn a_closed_stdout_ends_a_dump_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (overrides, _) = Primary::Directory.overrides(dir.path());
    let plugin = suite::plugin_path("full-keyed");
    let run = host(
        dir.path(),
        &[
            "job",
            "run",
            "--events",
            "30000",
            "--keys",
            "5000",
            "--checkpoint-interval",
            "10000",
            "--plugin",
            plugin.to_str().unwrap(),
        ],
        &overrides,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut command = Command::new(suite::host_binary());
    command.current_dir(dir.path()).args(["checkpoint", "dump", "1", "--plugin", plugin.to_str().unwrap()]);
    for o in &overrides {
        command.args(["--set", o]);
    }
    let mut child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_demo_run_can_be_listed_verified_and_dumped() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = suite::plugin_path("full-keyed");
    let demo = host(
        dir.path(),
        &[
            "demo",
            "--primary",
            "checkpoints",
            "--events",
            "80000",
            "--keys",
            "20000",
            "--plugin",
            plugin.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(demo.code, 0, "{}{}", demo.stdout, demo.stderr);
    let at = ["--primary", "checkpoints"];
    // The demo's job is found on its own: it is the only one there.
    let list = checkpoint(dir.path(), &["list", "--json", at[0], at[1]], &[]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    let rows: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
    let newest = rows.last().unwrap_or_else(|| panic!("{}", list.stdout));
    let id = newest["id"].as_u64().unwrap().to_string();
    assert_eq!(newest["subtasks"], 4);
    let verify = checkpoint(dir.path(), &["verify", at[0], at[1]], &[]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    let dump = checkpoint(dir.path(), &["dump", &id, "--state", "count", at[0], at[1]], &[]);
    assert_eq!(dump.code, 0, "{}", dump.stderr);
    let offset = newest["source_offset"].as_u64().unwrap();
    assert_eq!(dump.stdout.lines().count(), expected_keys(offset, 20_000), "one line per counted key");

    // A flipped bit in one of its state files: verify fails and names the file.
    let files: Vec<PathBuf> = files_below(&dir.path().join("checkpoints/demo").join(format!("chk-{id}")))
        .into_iter()
        .filter(|f| f.file_name().unwrap() != "_metadata")
        .collect();
    let mut rng = suite::Rng::new(std::process::id() as u64);
    let file = &files[rng.below(files.len() as u64) as usize];
    flip_bit(file, &mut rng);
    let verify = checkpoint(dir.path(), &["verify", &id, at[0], at[1]], &[]);
    assert_eq!(verify.code, 4, "{}", verify.stdout);
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(verify.stdout.lines().any(|l| l.starts_with("DAMAGED") && l.contains(name)), "{}", verify.stdout);
    assert!(verify.stderr.contains("damaged in the primary"), "{}", verify.stderr);
}

fn expected_keys(offset: u64, keys: u64) -> usize {
    snapshot_host_cli::job::expected_counts(offset, keys).len()
}
