//! Every `snapshot-host` command the README shows exists, with every flag it shows: each one's
//! subcommand path is asked for `--help`, and each `--flag` of the line must be in that help.
//! (A README that documented `demo --restore-parallelism`, which never existed, sent users
//! into an exit status of 2.)

use std::process::Command;

/// The command lines of the README: lines of its code blocks and inline code spans that run
/// `snapshot-host` (directly, through `cargo run -p snapshot-host-cli --` or
/// `scripts/demo.sh`, which runs `demo`), as the words after `snapshot-host`.
fn readme_commands() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(suite::workspace_root().join("README.md")).unwrap();
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in readme.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            lines.push(line.to_string());
        } else {
            // Inline code spans: every other piece between backticks.
            lines.extend(line.split('`').skip(1).step_by(2).map(str::to_string));
        }
    }
    let mut commands = Vec::new();
    for line in lines {
        let text = line.split(" # ").next().unwrap_or_default().trim().trim_end_matches('\\').trim();
        let rest = if let Some(at) = text.find("snapshot-host-cli --") {
            &text[at + "snapshot-host-cli --".len()..]
        } else if let Some(rest) = text.strip_prefix("bash scripts/demo.sh") {
            // The script runs `demo` with the arguments it is given.
            commands.push((text.to_string(), std::iter::once("demo".to_string()).chain(words(rest)).collect()));
            continue;
        } else if let Some(rest) = text.strip_prefix("snapshot-host ") {
            rest
        } else {
            continue;
        };
        commands.push((text.to_string(), words(rest)));
    }
    commands
}

/// The words of a command line, with optional groups (`[--json]`) and alternatives
/// (`json|junit`) kept as words.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
        .filter(|w| !w.is_empty() && w != "|" && w != "...")
        .collect()
}

fn help(path: &[String]) -> Option<String> {
    let out = Command::new(suite::host_binary()).args(path).arg("--help").output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The subcommands a help text lists under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn every_readme_command_and_flag_exists() {
    let commands = readme_commands();
    assert!(commands.len() >= 8, "the README's commands were not found: {commands:?}");
    let mut problems = Vec::new();
    for (line, words) in &commands {
        let mut path: Vec<String> = Vec::new();
        let mut text = help(&path).unwrap();
        for word in words {
            if subcommands(&text).contains(word) {
                path.push(word.clone());
                text = help(&path).unwrap_or_else(|| panic!("{line}: `{}` has no --help", path.join(" ")));
            }
        }
        if path.is_empty() {
            problems.push(format!("{line}: no subcommand"));
        }
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let name = flag.split('=').next().unwrap_or(flag);
            // Global flags are in every subcommand's help too.
            let listed = text
                .match_indices(name)
                .any(|(at, _)| !text[at + name.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-'));
            if !listed {
                problems.push(format!("{line}: `{}` has no flag {name}", path.join(" ")));
            }
        }
    }
    assert!(problems.is_empty(), "README commands that do not exist:\n{}", problems.join("\n"));
}

/// The check itself can fail: a flag no command has is reported.
#[test]
fn a_missing_flag_is_noticed() {
    let text = help(&["demo".to_string()]).unwrap();
    assert!(text.contains("--plugin"));
    assert!(!text.contains("--restore-parallelism"));
    assert!(subcommands(&help(&[]).unwrap()).contains(&"plugin".to_string()));
    assert_eq!(
        words("plugin test x.wasm [--format json|junit] [--quick]"),
        ["plugin", "test", "x.wasm", "--format", "json|junit", "--quick"]
    );
}
