//! The effective configuration, key by key, with where each value came from: what
//! `snapshot-host config` prints, so that an operator can see what a run will use before it
//! runs (and why: a default, a file, the command line, or a deprecated name).

use super::units::{format_duration, format_size};
use super::*;
use crate::storage::s3;

/// One key's effective value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EffectiveValue {
    /// The key's current name.
    pub key: &'static str,
    /// The value, written so that the configuration reads it back (secrets as `***`).
    pub value: String,
    /// `default`, `configuration file PATH`, `command line`, or what an embedder named.
    pub source: String,
    /// The deprecated name the value was written under, if it was.
    pub deprecated_name: Option<String>,
}

impl Config {
    /// Every key the host reads, with its effective value and its source, in a stable order.
    pub fn effective(&self) -> Vec<EffectiveValue> {
        let limits = &self.plugin_limits;
        let optional = |v: Option<String>| v.unwrap_or_else(|| "(not set)".into());
        let dirs = self.local_recovery.root_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>();
        let values: Vec<(&'static str, String)> = vec![
            (CHECKPOINT_DIR_2X, self.checkpoint_storage.to_string()),
            (NUM_RETAINED, self.retained_checkpoints.to_string()),
            (LOCAL_BACKUP, self.local_recovery.enabled.to_string()),
            (FROM_LOCAL, self.local_recovery.restores_from_local().to_string()),
            (LOCAL_BACKUP_DIRS, dirs.join(",")),
            (MAX_CONCURRENT_CHECKPOINTS, self.checkpointing.max_concurrent.to_string()),
            (MIN_PAUSE, format_duration(self.checkpointing.min_pause)),
            (TOLERABLE_FAILED_CHECKPOINTS, self.checkpointing.tolerable_failed.to_string()),
            (INCREMENTAL, self.checkpointing.incremental.enabled.to_string()),
            (INCREMENTAL_MAX_CHAIN, self.checkpointing.incremental.max_chain_length.to_string()),
            (
                INCREMENTAL_MAX_DELTA_RATIO,
                format!("{}", self.checkpointing.incremental.max_delta_permille as f64 / 1000.0),
            ),
            (START_EMPTY_IF_UNRESTORABLE, self.start_empty_if_unrestorable.to_string()),
            (PLUGIN_MEMORY, format_size(limits.memory_bytes as u64)),
            (PLUGIN_TIMEOUT, format_duration(limits.timeout)),
            (PLUGIN_MAX_OUTPUT, optional(limits.max_output_bytes.map(format_size))),
            (PLUGIN_FUEL, optional(limits.fuel.map(|f| f.to_string()))),
            (PLUGIN_MEMORY_BUDGET, format_size(self.plugin_memory_budget as u64)),
            (PLUGIN_MAX_AMPLIFICATION, limits.max_amplification.to_string()),
            (PLUGIN_MAX_INSTANCES, limits.instances.to_string()),
            (PLUGIN_MAX_TABLES, limits.tables.to_string()),
            (PLUGIN_MAX_MEMORIES, limits.memories.to_string()),
            (PLUGIN_MAX_LOG_BYTES, format_size(limits.max_log_bytes as u64)),
            (s3::ENDPOINT, optional(self.s3.endpoint.clone())),
            (s3::ACCESS_KEY, optional(self.s3.access_key.clone())),
            (s3::SECRET_KEY, optional(self.s3.secret_key.as_ref().map(|_| "***".into()))),
            (s3::REGION, optional(self.s3.region.clone())),
            (s3::PATH_STYLE_ACCESS, optional(self.s3.path_style_access.map(|b| b.to_string()))),
            (s3::PART_SIZE, format_size(self.s3.part_size as u64)),
            (s3::MAX_CONCURRENT_UPLOADS, self.s3.max_concurrent_uploads.to_string()),
            (s3::REQUEST_TIMEOUT, format_duration(self.s3.request_timeout)),
            (s3::MAX_RETRIES, self.s3.max_retries.to_string()),
            (s3::RETRY_TIMEOUT, format_duration(self.s3.retry_timeout)),
        ];
        values
            .into_iter()
            .map(|(key, value)| {
                let source = self.sources.get(key);
                let follows = (key == LOCAL_BACKUP).then(|| self.sources.get(FROM_LOCAL)).flatten();
                let default = match (source, follows) {
                    (None, Some(from_local)) => format!("follows {FROM_LOCAL} ({})", from_local.origin),
                    _ => "default".into(),
                };
                EffectiveValue {
                    key,
                    value,
                    source: source.map(|s| s.origin.clone()).unwrap_or(default),
                    deprecated_name: source.filter(|s| s.written_as != key).map(|s| s.written_as.clone()),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_listed_once_with_its_source() {
        let mut c = Config::default();
        c.apply_toml("plugin.timeout = \"1 min\"", Path::new("job.toml")).unwrap();
        c.apply_override("state.checkpoints.num-retained=3").unwrap();
        c.apply_override("s3.secret-key=topsecret").unwrap();
        let all = c.effective();
        let keys: std::collections::BTreeSet<_> = all.iter().map(|v| v.key).collect();
        assert_eq!(keys.len(), all.len());
        for key in KNOWN {
            assert!(keys.contains(key), "{key} is not listed");
        }
        let get = |key: &str| all.iter().find(|v| v.key == key).unwrap().clone();
        assert_eq!(
            (get(PLUGIN_TIMEOUT).value, get(PLUGIN_TIMEOUT).source),
            ("1m".into(), "configuration file job.toml".into())
        );
        let retained = get(NUM_RETAINED);
        assert_eq!((retained.value.as_str(), retained.source.as_str()), ("3", "command line"));
        assert_eq!(retained.deprecated_name.as_deref(), Some(RETAINED_CHECKPOINTS));
        assert_eq!(get(FROM_LOCAL).source, "default");
        c.apply_override("execution.state-recovery.from-local=true").unwrap();
        let backup = c.effective().into_iter().find(|v| v.key == LOCAL_BACKUP).unwrap();
        assert_eq!(
            (backup.value.as_str(), backup.source.as_str()),
            ("true", "follows execution.state-recovery.from-local (command line)")
        );
        assert!(!format!("{all:?}").contains("topsecret"));
    }

    #[test]
    fn effective_values_read_back_to_the_same_configuration() {
        let mut c = Config::default();
        c.apply_toml("plugin.memory-limit = \"96mb\"\nplugin.max-output-bytes = \"3g\"\nexecution.checkpointing.min-pause = \"2s\"\nexecution.checkpointing.local-backup.dirs = \"/a,/b\"", Path::new("c.toml")).unwrap();
        let mut again = Config::default();
        for v in c.effective() {
            if v.value != "(not set)" {
                again.apply_override(&format!("{}={}", v.key, v.value)).unwrap();
            }
        }
        again.sources.clear();
        c.sources.clear();
        // "Follows local-backup.enabled" and "said to be the same" restore alike.
        for config in [&mut again, &mut c] {
            config.local_recovery.from_local = Some(config.local_recovery.restores_from_local());
        }
        assert_eq!(again, c);
    }
}
