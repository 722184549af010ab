"""``python-keyed``: a full snapshot of keyed and operator state, written in Python.

Format ``python-keyed``, version 1 (little-endian)::

    stream   := header group*                      one group per key group, ascending
    header   := "SHPY" u16:format-version
    group    := u32:key-group section* u8:0         offset of group recorded by the host
    section  := u8:1 bytes:state-name u8:kind batch* u32:0
    batch    := u32:count lengths{count} data
    lengths  := u32:key u32:namespace u32:user-key u32:value
    data     := the parts of every entry, concatenated in entry order
    bytes    := u32:length byte{length}

Operator state (same header): ``element := u32:length byte{length}``, one per element, each
marked as a partition by the host.

Every group names its states, so each group decodes alone from its offset (restoring a
sub-range after rescaling reads nothing else). A batch keeps the host's packing: on snapshot
the entries' bytes never enter Python (``next_pending`` + ``write_pending``), on restore a
batch's bytes go back to the host in one ``put``.
"""

from snapshot_guest import (
    BatchBuilder,
    PluginInfo,
    StateKind,
    Strategy,
    StrategyError,
    export,
)

MAGIC = b"SHPY"
FORMAT_VERSION = 1
SECTION = 1
END = 0
#: How many bytes of entries to ask the host for at once.
BATCH_BYTES = 256 * 1024
#: A corrupted count must not make restore allocate gigabytes before noticing.
MAX_BATCH_ENTRIES = 1 << 24


class PythonKeyed(Strategy):
    def describe(self):
        return PluginInfo("python-keyed", "0.1.0", "python-keyed", FORMAT_VERSION)

    def snapshot_keyed(self, state, out):
        out.write(MAGIC)
        out.write_u16(FORMAT_VERSION)
        states = state.states()
        for key_group in state.key_group_range():
            out.begin_key_group(key_group)
            out.write_u32(key_group)
            for index, info in enumerate(states):
                with state.entries(index, key_group) as entries:
                    lengths = entries.next_pending(BATCH_BYTES)
                    if lengths is None:
                        continue
                    out.write_u8(SECTION)
                    out.write_bytes(info.name.encode())
                    out.write_u8(info.kind.to_u8())
                    while lengths is not None:
                        out.write_u32(len(lengths) // 16)
                        out.write(lengths)
                        out.write_pending(entries)
                        lengths = entries.next_pending(BATCH_BYTES)
                    out.write_u32(0)
            out.write_u8(END)

    def restore_key_group(self, key_group, input, sink):
        at = input.position()
        found = input.read_u32()
        if found != key_group:
            raise StrategyError(
                f"unexpected key group at offset {at}: expected {key_group}, found {found} "
                "(wrong offsets or a corrupted snapshot)"
            )
        batch = BatchBuilder()
        while True:
            marker = input.read_u8()
            if marker == END:
                return
            if marker != SECTION:
                raise StrategyError(f"key group {key_group} at offset {at}: unknown section marker {marker}")
            try:
                name = input.read_bytes(1 << 20).decode()
            except UnicodeDecodeError:
                raise StrategyError(f"key group {key_group} at offset {at}: state name is not UTF-8") from None
            index = sink.state(name, StateKind.from_u8(input.read_u8()))
            while (count := input.read_u32()) != 0:
                if count > MAX_BATCH_ENTRIES:
                    raise StrategyError(f"state {name!r}: batch of {count} entries exceeds {MAX_BATCH_ENTRIES}")
                lengths = input.read_exact(16 * count)
                total = sum(memoryview(lengths).cast("I"))
                batch.clear()
                batch.push_packed(lengths, input.read_exact(total))
                sink.put(index, batch)

    def snapshot_operator(self, state, out):
        out.write(MAGIC)
        out.write_u16(FORMAT_VERSION)
        for index, _ in enumerate(state.states()):
            for element in state.elements(index):
                out.begin_partition(index)
                out.write_bytes(element)

    def restore_operator_partition(self, name, mode, input, sink):
        at = input.position()
        try:
            element = input.read_bytes()
        except StrategyError as e:
            raise StrategyError(f"operator state {name!r}: element at offset {at}: {e}") from None
        sink.add(name, mode, [element])


WitWorld = export(PythonKeyed)
