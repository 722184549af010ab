//! What the `snapshot-host` commands and the workspace tests share: the demo's counting job
//! (written against the [`snapshot_host`] facade alone, as an embedder would) and an embedded
//! S3-compatible server for the object-store primary.
#![warn(missing_docs)]

pub mod embedded_s3;
pub mod job;

#[cfg(test)]
mod tests {
    /// The demo job and the commands that run it use the library's public surface only (the
    /// crate root and its documented modules): whatever they need, an embedder has too. The
    /// implementation modules are still `pub` for the workspace's white-box tests, so the
    /// compiler cannot enforce this; this test does.
    #[test]
    fn the_demo_job_uses_only_the_public_surface() {
        let public = ["config", "harness", "plugin", "inspect", "metrics"];
        let sources = [
            ("job.rs", include_str!("job.rs")),
            ("commands/demo.rs", include_str!("commands/demo.rs")),
            ("commands/job.rs", include_str!("commands/job.rs")),
            ("commands/checkpoint.rs", include_str!("commands/checkpoint.rs")),
            ("commands/exit.rs", include_str!("commands/exit.rs")),
            ("commands/plugin.rs", include_str!("commands/plugin.rs")),
            ("commands/mod.rs", include_str!("commands/mod.rs")),
            ("embedded_s3.rs", include_str!("embedded_s3.rs")),
        ];
        let mut back_doors = Vec::new();
        for (file, text) in sources {
            for (line, content) in text.lines().enumerate() {
                for (at, _) in content.match_indices("snapshot_host::") {
                    let rest = &content[at + "snapshot_host::".len()..];
                    let module: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
                    let is_module_path = rest[module.len()..].starts_with("::");
                    if !module.is_empty() && is_module_path && !public.contains(&module.as_str()) {
                        back_doors.push(format!("{file}:{}: snapshot_host::{module}", line + 1));
                    }
                }
            }
        }
        assert!(back_doors.is_empty(), "hidden modules used: {back_doors:#?}");
    }
}
