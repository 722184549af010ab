//! Little-endian, length-prefixed encoding helpers for strategy formats.
//!
//! Strategies choose their own formats; these helpers keep the common pieces (fixed-width
//! integers, byte strings with a `u32` length) short and give truncated input a clear error.

use std::io::{self, Read, Write};

/// Writing fixed-width little-endian integers and length-prefixed byte strings.
pub trait WriteExt: Write {
    /// Writes one byte.
    fn write_u8(&mut self, v: u8) -> io::Result<()> {
        self.write_all(&[v])
    }
    /// Writes a `u16`, little-endian.
    fn write_u16(&mut self, v: u16) -> io::Result<()> {
        self.write_all(&v.to_le_bytes())
    }
    /// Writes a `u32`, little-endian.
    fn write_u32(&mut self, v: u32) -> io::Result<()> {
        self.write_all(&v.to_le_bytes())
    }
    /// Writes a `u64`, little-endian.
    fn write_u64(&mut self, v: u64) -> io::Result<()> {
        self.write_all(&v.to_le_bytes())
    }
    /// Writes `bytes` prefixed by its length as a `u32`.
    fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = u32::try_from(bytes.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "byte string over 4 GiB"))?;
        self.write_u32(len)?;
        self.write_all(bytes)
    }
}

impl<W: Write + ?Sized> WriteExt for W {}

/// Reading what [`WriteExt`] wrote. A stream that ends early is an `UnexpectedEof` error.
pub trait ReadExt: Read {
    /// Reads one byte.
    fn read_u8(&mut self) -> io::Result<u8> {
        let mut b = [0u8; 1];
        self.read_exact(&mut b)?;
        Ok(b[0])
    }
    /// Reads a little-endian `u16`.
    fn read_u16(&mut self) -> io::Result<u16> {
        let mut b = [0u8; 2];
        self.read_exact(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    /// Reads a little-endian `u32`.
    fn read_u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    /// Reads a little-endian `u64`.
    fn read_u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    /// Reads a byte string written by [`WriteExt::write_bytes`] into a new vector.
    fn read_bytes(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_bytes_into(&mut out)?;
        Ok(out)
    }
    /// Appends a byte string written by [`WriteExt::write_bytes`] to `out` and returns its
    /// length. Reads in bounded steps, so a corrupted length cannot allocate 4 GiB up front.
    fn read_bytes_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let len = self.read_u32()? as usize;
        let start = out.len();
        let mut remaining = len;
        while remaining > 0 {
            let step = remaining.min(1 << 20);
            let at = out.len();
            out.resize(at + step, 0);
            self.read_exact(&mut out[at..]).inspect_err(|_| out.truncate(start))?;
            remaining -= step;
        }
        Ok(len)
    }
}

impl<R: Read + ?Sized> ReadExt for R {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut buf = Vec::new();
        buf.write_u8(7).unwrap();
        buf.write_u16(0xBEEF).unwrap();
        buf.write_u32(0xDEAD_BEEF).unwrap();
        buf.write_u64(u64::MAX - 1).unwrap();
        buf.write_bytes(b"hello").unwrap();
        let mut r = &buf[..];
        assert_eq!(r.read_u8().unwrap(), 7);
        assert_eq!(r.read_u16().unwrap(), 0xBEEF);
        assert_eq!(r.read_u32().unwrap(), 0xDEAD_BEEF);
        assert_eq!(r.read_u64().unwrap(), u64::MAX - 1);
        assert_eq!(r.read_bytes().unwrap(), b"hello");
        let truncated = &buf[..buf.len() - 1];
        let mut r = &truncated[15..];
        assert_eq!(r.read_bytes().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
