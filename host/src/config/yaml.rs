//! Flink's `config.yaml`: its values as the TOML values the keys are read from (both are maps
//! of scalars and lists), so that one reader serves both formats.

use std::path::Path;

use super::ConfigError;

/// A YAML value as the TOML value the keys are read from (both are maps of scalars and lists).
pub(super) fn yaml_to_toml(value: serde_yaml_ng::Value, key: &str, path: &Path) -> Result<toml::Value, ConfigError> {
    use serde_yaml_ng::Value as Y;
    let unsupported = |problem: &str| ConfigError::Unsupported {
        path: path.into(),
        key: if key.is_empty() { "(top level)".into() } else { key.into() },
        problem: problem.into(),
    };
    Ok(match value {
        Y::Null => return Err(unsupported("no value")),
        Y::Bool(b) => toml::Value::Boolean(b),
        Y::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) => toml::Value::Float(f),
            _ => return Err(unsupported("a number out of range")),
        },
        Y::String(s) => toml::Value::String(s),
        Y::Sequence(items) => {
            toml::Value::Array(items.into_iter().map(|item| yaml_to_toml(item, key, path)).collect::<Result<_, _>>()?)
        }
        Y::Mapping(map) => {
            let mut table = toml::Table::new();
            for (k, v) in map {
                let name = match k {
                    Y::String(s) => s,
                    Y::Bool(b) => b.to_string(),
                    Y::Number(n) => n.to_string(),
                    _ => return Err(unsupported("a map key that is not text")),
                };
                let full = if key.is_empty() { name.clone() } else { format!("{key}.{name}") };
                table.insert(name, yaml_to_toml(v, &full, path)?);
            }
            toml::Value::Table(table)
        }
        Y::Tagged(tagged) => return Err(unsupported(&format!("a tagged value ({}) is not a setting", tagged.tag))),
    })
}
