"""Typed wrappers over the host's keyed and operator state resources."""

import struct
from collections import namedtuple
from dataclasses import dataclass
from enum import Enum
from itertools import repeat, starmap
from operator import attrgetter

from wit_world.imports import types as wit

from .errors import StrategyError, host_call

_LENGTHS = struct.Struct("<IIII")
_PARTS = attrgetter("key", "namespace", "user_key", "value")

# The host's ``entry-lengths`` record as a tuple: built and read by C code only
# (``tuple.__new__`` over ``struct.iter_unpack``), where the generated dataclass would run a
# Python ``__init__`` per entry. The bindings read a record's fields by name, which it has.
_EntryLengths = namedtuple("_EntryLengths", ["key", "namespace", "user_key", "value"])
_new_lengths = tuple.__new__


class StateKind(Enum):
    """How the host stores a keyed state, and so how restored entries are merged: a value
    entry replaces, a list entry appends, a map entry inserts."""

    VALUE = 0
    LIST = 1
    MAP = 2

    def to_u8(self) -> int:
        """A stable one-byte code, for formats that store the kind."""
        return self.value

    @classmethod
    def from_u8(cls, code: int) -> "StateKind":
        """The kind stored as ``code``; an unknown code is an error (a corrupted snapshot)."""
        try:
            return cls(code)
        except ValueError:
            raise StrategyError(f"unknown state kind code {code} (corrupted snapshot?)") from None

    def _wit(self):
        return (wit.StateKind.VALUE, wit.StateKind.LIST, wit.StateKind.MAP)[self.value]

    @classmethod
    def _from_wit(cls, kind) -> "StateKind":
        return {wit.StateKind.VALUE: cls.VALUE, wit.StateKind.LIST: cls.LIST, wit.StateKind.MAP: cls.MAP}[kind]


class DistributionMode(Enum):
    """How an operator list state is redistributed when the parallelism changes."""

    SPLIT_DISTRIBUTE = 0
    UNION = 1
    BROADCAST = 2

    def _wit(self):
        return (wit.DistributionMode.SPLIT_DISTRIBUTE, wit.DistributionMode.UNION, wit.DistributionMode.BROADCAST)[
            self.value
        ]

    @classmethod
    def _from_wit(cls, mode) -> "DistributionMode":
        return {
            wit.DistributionMode.SPLIT_DISTRIBUTE: cls.SPLIT_DISTRIBUTE,
            wit.DistributionMode.UNION: cls.UNION,
            wit.DistributionMode.BROADCAST: cls.BROADCAST,
        }[mode]


@dataclass(frozen=True)
class PluginInfo:
    """Identifies a strategy and the format it writes. The host stores ``name``, ``version``
    and ``format`` with every checkpoint and refuses to restore another format."""

    name: str
    version: str
    format: str
    format_version: int
    deterministic: bool = True

    def _wit(self):
        return wit.PluginInfo(self.name, self.version, self.format, self.format_version, self.deterministic)


@dataclass(frozen=True)
class StateInfo:
    """A registered keyed state: its name and kind. Its position in
    :meth:`KeyedStateView.states` is its state index."""

    name: str
    kind: StateKind


@dataclass(frozen=True)
class OperatorStateInfo:
    """An operator list state: its name and distribution mode."""

    name: str
    mode: DistributionMode


class EntryBatch:
    """Entries the host packed into one buffer: iterate for ``(key, namespace, user_key,
    value)`` tuples of memoryviews into :attr:`data` (no copy per entry)."""

    def __init__(self, batch):
        self.data = batch.data
        self.lengths = batch.entries

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        view = memoryview(self.data)
        at = 0
        for e in self.lengths:
            k = at + e.key
            n = k + e.namespace
            u = n + e.user_key
            v = u + e.value
            yield view[at:k], view[k:n], view[n:u], view[u:v]
            at = v


class Entries:
    """A reader over the entries of one state in one key group, in a stable order."""

    def __init__(self, reader):
        self._reader = reader

    def next_batch(self, max_bytes: int = 256 * 1024) -> EntryBatch | None:
        """The next batch of about ``max_bytes`` bytes (at least one entry), or ``None``."""
        batch = self._reader.next_batch(max_bytes)
        return None if batch is None else EntryBatch(batch)

    def next_pending(self, max_bytes: int = 256 * 1024) -> bytes | None:
        """Like :meth:`next_batch`, but leaves the entries' bytes on the host for
        :meth:`SnapshotWriter.write_pending` and returns only their lengths, packed as four
        little-endian ``u32`` per entry (key, namespace, user key, value), or ``None``."""
        lengths = self._reader.next_batch_lengths(max_bytes)
        if lengths is None:
            return None
        return b"".join(starmap(_LENGTHS.pack, map(_PARTS, lengths)))

    def close(self) -> None:
        """Gives the reader back to the host (also done when it is garbage-collected)."""
        self._reader.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return None


class KeyedStateView:
    """A consistent, read-only view of one subtask's keyed state at the checkpoint."""

    def __init__(self, view):
        self._view = view

    def key_group_range(self) -> range:
        """The key groups this subtask owns; the snapshot must mark each of them."""
        r = self._view.key_group_range()
        return range(r.start, r.end + 1)

    def max_parallelism(self) -> int:
        """The total number of key groups of the job."""
        return self._view.max_parallelism()

    def states(self) -> list[StateInfo]:
        """Every registered state, in a stable order; the position is the state index."""
        return [StateInfo(s.name, StateKind._from_wit(s.kind)) for s in self._view.states()]

    def entries(self, state: int, key_group: int) -> Entries:
        """A reader over the entries of ``state`` in ``key_group``."""
        return Entries(host_call(self._view.entries, state, key_group))


class BatchBuilder:
    """Entries to hand to :meth:`RestoreSink.put` in one call."""

    def __init__(self):
        self._chunks = []
        self._lengths = []

    def push(self, key, namespace, user_key, value) -> None:
        """Adds one entry (bytes-like parts)."""
        self._chunks += (bytes(key), bytes(namespace), bytes(user_key), bytes(value))
        self._lengths.append(_EntryLengths(len(key), len(namespace), len(user_key), len(value)))

    def push_packed(self, packed_lengths: bytes, data) -> None:
        """Adds entries whose parts are already concatenated in ``data``, with their lengths
        packed as four little-endian ``u32`` each (the layout :meth:`Entries.next_pending`
        returns): the fast path for formats that store the host's packing."""
        if len(packed_lengths) % 16:
            raise StrategyError(f"packed lengths of {len(packed_lengths)} bytes are not whole entries")
        self._lengths.extend(map(_new_lengths, repeat(_EntryLengths), _LENGTHS.iter_unpack(packed_lengths)))
        self._chunks.append(bytes(data))

    def __len__(self) -> int:
        return len(self._lengths)

    def clear(self) -> None:
        """Empties the builder for the next batch."""
        self._chunks = []
        self._lengths = []

    def _wit(self):
        # One join, no copy at all for a single chunk (``join`` returns it as it is).
        return wit.EntryBatch(b"".join(self._chunks), self._lengths)


class RestoreSink:
    """Receives restored keyed entries; the host checks every key belongs to the key group
    being restored."""

    def __init__(self, sink):
        self._sink = sink

    def state(self, name: str, kind: StateKind) -> int:
        """Registers (or finds) state ``name`` of ``kind``; returns its index for :meth:`put`."""
        return host_call(self._sink.state, name, kind._wit())

    def put(self, state: int, batch: BatchBuilder) -> None:
        """Adds the entries of ``batch`` to ``state``."""
        host_call(self._sink.put, state, batch._wit())


class OperatorStateView:
    """A consistent, read-only view of one subtask's operator list states."""

    def __init__(self, view):
        self._view = view

    def states(self) -> list[OperatorStateInfo]:
        """Every operator state, in a stable order; the position is the state index."""
        return [OperatorStateInfo(s.name, DistributionMode._from_wit(s.mode)) for s in self._view.states()]

    def elements(self, state: int, max_bytes: int = 256 * 1024):
        """The elements of ``state`` in list order, as ``bytes`` (fetched in batches)."""
        with host_call(self._view.elements, state) as reader:
            while (batch := reader.next_batch(max_bytes)) is not None:
                data, at = batch.data, 0
                for n in batch.lengths:
                    yield data[at : at + n]
                    at += n


class OperatorSink:
    """Receives restored operator state elements."""

    def __init__(self, sink):
        self._sink = sink

    def add(self, name: str, mode: DistributionMode, elements: list) -> None:
        """Appends ``elements`` (bytes-like) to state ``name``."""
        data = b"".join(bytes(e) for e in elements)
        host_call(self._sink.add, name, mode._wit(), wit.ElementBatch(data, [len(e) for e in elements]))
