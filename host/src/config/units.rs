//! Sizes and durations as Flink writes them (`MemorySize`, `Duration`), through kept parsers.

/// A size as Flink's `MemorySize` writes it, all units binary: a positive integer (bytes) or
/// a number with a unit, case-insensitive, with or without a space: `b`/`bytes`,
/// `k`/`kb`/`kibibytes`, `m`/`mb`/`mebibytes`, `g`/`gb`/`gibibytes`, `t`/`tb`/`tebibytes`,
/// and `KiB`/`MiB`/`GiB`/`TiB` (`256mb`, `1g`, `64 KiB`).
pub fn parse_size(value: &toml::Value) -> Option<u64> {
    match value {
        toml::Value::Integer(n) if *n > 0 => Some(*n as u64),
        toml::Value::String(s) => {
            let lower = s.trim().to_ascii_lowercase();
            // Flink's long unit names, which the parser does not know, as their short ones.
            let number_end = lower.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(lower.len());
            let (number, unit) = lower.split_at(number_end);
            let unit = match unit.trim() {
                "bytes" => "b",
                "kibibytes" => "k",
                "mebibytes" => "m",
                "gibibytes" => "g",
                "tebibytes" => "t",
                other => other,
            };
            let bytes = parse_size::Config::new().with_binary().parse_size(format!("{number}{unit}")).ok()?;
            (bytes > 0).then_some(bytes)
        }
        _ => None,
    }
}

/// A duration as Flink's `TimeUtils` writes it: a positive integer (milliseconds) or numbers
/// with units, with or without spaces (`500 ms`, `10 s`, `1 min`, `2h`, `1 d`, `1h 30min`).
pub fn parse_duration(value: &toml::Value) -> Option<std::time::Duration> {
    let duration = match value {
        toml::Value::Integer(n) if *n > 0 => std::time::Duration::from_millis(*n as u64),
        toml::Value::String(s) => {
            let s = s.trim();
            match s.parse::<u64>() {
                Ok(ms) => std::time::Duration::from_millis(ms),
                Err(_) => humantime::parse_duration(s).ok()?,
            }
        }
        _ => return None,
    };
    (!duration.is_zero()).then_some(duration)
}

/// A size the way [`parse_size`] reads it back: the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "tb"), (30, "gb"), (20, "mb"), (10, "kb")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// A duration the way [`parse_duration`] reads it back (`0 ms` for none).
pub fn format_duration(duration: std::time::Duration) -> String {
    if duration.is_zero() {
        "0 ms".into()
    } else {
        humantime::format_duration(duration).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_sizes_and_durations_read_back() {
        for bytes in [1u64, 1000, 1024, 256 << 20, 3 << 30, (1 << 30) + 1, 5 << 40] {
            assert_eq!(parse_size(&toml::Value::String(format_size(bytes))), Some(bytes), "{bytes}");
        }
        for ms in [1u64, 250, 1000, 15_000, 90_000, 3_600_000, 86_400_000 + 1] {
            let d = std::time::Duration::from_millis(ms);
            assert_eq!(parse_duration(&toml::Value::String(format_duration(d))), Some(d), "{ms}");
        }
        assert_eq!(format_size(256 << 20), "256 mb");
        assert_eq!(format_duration(std::time::Duration::from_secs(15)), "15s");
    }
}
