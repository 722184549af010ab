"""Little-endian codec helpers shared by the snapshot writer and the restore reader.

Formats written with them are self-describing the way the example strategies are: fixed-width
integers and ``u32``-length-prefixed byte strings.
"""

import struct

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class Writer:
    """Encoding on top of a ``write(bytes)`` method."""

    def write(self, data) -> None:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def write_u8(self, value: int) -> None:
        """Writes one byte."""
        self.write(bytes((value,)))

    def write_u16(self, value: int) -> None:
        """Writes a little-endian ``u16``."""
        self.write(_U16.pack(value))

    def write_u32(self, value: int) -> None:
        """Writes a little-endian ``u32``."""
        self.write(_U32.pack(value))

    def write_u64(self, value: int) -> None:
        """Writes a little-endian ``u64``."""
        self.write(_U64.pack(value))

    def write_bytes(self, data) -> None:
        """Writes ``data`` prefixed with its length as a ``u32``."""
        self.write(_U32.pack(len(data)))
        self.write(data)


class Reader:
    """Decoding on top of a ``read_exact(n)`` method."""

    def read_exact(self, n: int) -> bytes:  # pragma: no cover - provided by the subclass
        raise NotImplementedError

    def read_u8(self) -> int:
        """Reads one byte."""
        return self.read_exact(1)[0]

    def read_u16(self) -> int:
        """Reads a little-endian ``u16``."""
        return _U16.unpack(self.read_exact(2))[0]

    def read_u32(self) -> int:
        """Reads a little-endian ``u32``."""
        return _U32.unpack(self.read_exact(4))[0]

    def read_u64(self) -> int:
        """Reads a little-endian ``u64``."""
        return _U64.unpack(self.read_exact(8))[0]

    def read_bytes(self, limit: int = 1 << 30) -> bytes:
        """Reads a ``u32``-length-prefixed byte string; a length over ``limit`` is an error
        (a corrupted length must not make restore allocate gigabytes first)."""
        n = self.read_u32()
        if n > limit:
            from .errors import StrategyError

            raise StrategyError(f"length {n} exceeds the limit of {limit} bytes (corrupted snapshot?)")
        return self.read_exact(n)
