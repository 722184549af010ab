"""The Python guest SDK for snapshot-host strategies.

A strategy decides the byte format of keyed and operator state snapshots. The host owns
everything durable: it opens and closes the streams, records where every key group and every
operator partition starts, checksums the bytes and keeps the local copy. This package hides
the bindings that ``componentize-py`` generates for the ``strategy`` world, the way the Rust
SDK does:

- subclass :class:`Strategy` and implement :meth:`~Strategy.describe`,
  :meth:`~Strategy.snapshot_keyed` and :meth:`~Strategy.restore_key_group` (and the two
  operator-state methods if the strategy supports operator state);
- write through :class:`SnapshotWriter` (buffered, with codec helpers), read through
  :class:`RestoreReader`;
- export it with ``WitWorld = export(MyStrategy)`` in the app module you hand to
  ``componentize-py componentize``.

An exception raised by a strategy method fails that snapshot or restore with its message;
the host reports it, and nothing durable is touched.
"""

from .codec import Reader, Writer
from .errors import StrategyError
from .state import (
    BatchBuilder,
    DistributionMode,
    Entries,
    EntryBatch,
    KeyedStateView,
    OperatorSink,
    OperatorStateInfo,
    OperatorStateView,
    PluginInfo,
    RestoreSink,
    StateInfo,
    StateKind,
)
from .streams import RestoreReader, SnapshotWriter
from .strategy import Strategy, export

__all__ = [
    "BatchBuilder",
    "DistributionMode",
    "Entries",
    "EntryBatch",
    "KeyedStateView",
    "OperatorSink",
    "OperatorStateInfo",
    "OperatorStateView",
    "PluginInfo",
    "Reader",
    "RestoreReader",
    "RestoreSink",
    "SnapshotWriter",
    "StateInfo",
    "StateKind",
    "Strategy",
    "StrategyError",
    "Writer",
    "export",
]
