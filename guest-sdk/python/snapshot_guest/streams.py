"""Buffered adapters over the host's snapshot and restore streams.

Every host call crosses the component boundary and copies its bytes; a strategy that wrote
each integer with its own call would spend its time there. Both adapters batch into 64 KiB
chunks, as the Rust SDK does.
"""

from .codec import Reader, Writer
from .errors import StrategyError, host_call

#: Size of the adapters' buffers.
BUFFER_SIZE = 64 * 1024
#: The most one read asks of the host, so a huge value arrives in pieces that are joined
#: once, rather than whole and then copied again.
READ_CHUNK = 1 << 20


class SnapshotWriter(Writer):
    """The snapshot output stream, buffered.

    :meth:`position` counts buffered bytes too, so it is the offset the next byte will have
    in the finished snapshot. The host opens and closes the stream: a strategy only writes.
    """

    def __init__(self, stream):
        self._stream = stream
        self._buffer = bytearray()

    def write(self, data) -> None:
        """Appends ``data`` (bytes-like)."""
        if len(self._buffer) + len(data) > BUFFER_SIZE:
            self._flush_buffer()
        if len(data) >= BUFFER_SIZE:
            host_call(self._stream.write, bytes(data))
        else:
            self._buffer += data

    def begin_key_group(self, key_group: int) -> None:
        """Announces that the bytes of ``key_group`` start here (flushes first: the host
        records the offset from its own position)."""
        self._flush_buffer()
        host_call(self._stream.begin_key_group, key_group)

    def begin_partition(self, state: int) -> None:
        """Announces that one element of operator state ``state`` starts here."""
        self._flush_buffer()
        host_call(self._stream.begin_partition, state)

    def write_pending(self, entries) -> None:
        """Appends the packed bytes of the batch ``entries`` last returned from
        :meth:`Entries.next_pending`, copied on the host: they never enter Python."""
        self._flush_buffer()
        host_call(self._stream.write_pending, entries._reader)

    def position(self) -> int:
        """Offset of the next byte written."""
        return self._stream.position() + len(self._buffer)

    def sync(self) -> None:
        """Hands buffered bytes to the host and asks it to make them durable (the host syncs
        at the end of every snapshot anyway)."""
        self._flush_buffer()
        host_call(self._stream.sync)

    def _flush_buffer(self) -> None:
        if self._buffer:
            host_call(self._stream.write, bytes(self._buffer))
            self._buffer.clear()

    def _finish(self) -> None:
        self._flush_buffer()


class RestoreReader(Reader):
    """The restore input stream, buffered.

    The host positions it at the offset it recorded for the key group or partition being
    restored. Reading ahead past the group's end is fine: the host verifies every byte read.
    """

    def __init__(self, stream):
        self._stream = stream
        self._buffer = b""
        self._consumed = 0

    def position(self) -> int:
        """Offset of the next byte :meth:`read_exact` returns."""
        return self._stream.position() - (len(self._buffer) - self._consumed)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; empty at the end of the stream."""
        if self._consumed == len(self._buffer):
            self._buffer = host_call(self._stream.read, max(n, BUFFER_SIZE))
            self._consumed = 0
        chunk = self._buffer[self._consumed : self._consumed + n]
        self._consumed += len(chunk)
        return chunk

    def read_exact(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`StrategyError` at the end of the stream."""
        available = len(self._buffer) - self._consumed
        if n <= available:
            chunk = self._buffer[self._consumed : self._consumed + n]
            self._consumed += n
            return chunk
        parts = [self._buffer[self._consumed :]]
        self._consumed = len(self._buffer)
        missing = n - available
        while missing > 0:
            # Large reads go to the host in one call instead of 64 KiB at a time.
            chunk = host_call(self._stream.read, min(max(missing, BUFFER_SIZE), READ_CHUNK))
            if not chunk:
                raise StrategyError(f"unexpected end of snapshot: {missing} of {n} bytes missing")
            if len(chunk) > missing:
                self._buffer = chunk
                self._consumed = missing
                parts.append(chunk[:missing])
                missing = 0
            else:
                parts.append(chunk)
                missing -= len(chunk)
        return b"".join(parts)
