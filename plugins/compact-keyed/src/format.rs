//! The `compact-keyed` byte format, as plain functions over byte slices.
//!
//! ```text
//! stream   := header group*                    one group per key group, ascending
//! header   := "SHCK" u16:format-version        (little-endian)
//! group    := varint:key-group section* 0x00    offset of group recorded by the host
//! section  := 0x01 varint:len state-name u8:kind run* varint:0
//! run      := varint:count entry{count}
//! entry    := part:key part:namespace [part:user-key, map states only] part:value
//! part     := varint:len byte{len}
//! ```
//!
//! Lengths are LEB128 varints: an entry of a 10-byte key and a 16-byte value costs 2 bytes of
//! framing instead of the 16 of `full-keyed`. Unlike `full-keyed`, whose batches the host
//! copies verbatim, every entry passes through the strategy: this is the path of any format
//! that transforms what it writes.

/// Magic bytes at the start of every snapshot.
pub const MAGIC: &[u8; 4] = b"SHCK";
/// The version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Starts a state's section in a group.
pub const SECTION: u8 = 1;
/// Ends a group.
pub const END: u8 = 0;
/// The state-kind code of map states, the only kind whose entries carry a user key.
pub const MAP_KIND: u8 = 2;

/// Appends `value` as an LEB128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends one part: its varint length, then its bytes.
#[inline]
pub fn put_part(out: &mut Vec<u8>, part: &[u8]) {
    put_varint(out, part.len() as u64);
    out.extend_from_slice(part);
}

/// Appends one entry.
#[inline]
pub fn put_entry(out: &mut Vec<u8>, map: bool, key: &[u8], namespace: &[u8], user_key: &[u8], value: &[u8]) {
    put_part(out, key);
    put_part(out, namespace);
    if map {
        put_part(out, user_key);
    }
    put_part(out, value);
}

/// Why bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a varint or a part.
    Truncated,
    /// A varint longer than ten bytes or over the allowed value.
    BadVarint,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated entry"),
            DecodeError::BadVarint => f.write_str("malformed length"),
        }
    }
}

/// Reads a varint from the front of `input`, advancing it.
#[inline]
pub fn take_varint(input: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    Err(if input.len() < 10 { DecodeError::Truncated } else { DecodeError::BadVarint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        for value in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut input = out.as_slice();
            assert_eq!(take_varint(&mut input), Ok(value));
            assert!(input.is_empty());
            assert_eq!(take_varint(&mut &out[..out.len() - 1]), Err(DecodeError::Truncated));
        }
    }
}
