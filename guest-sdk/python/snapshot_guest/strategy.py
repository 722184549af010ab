"""The strategy base class and its export as the component's ``strategy`` world."""

import traceback

from componentize_py_types import Err

from .errors import StrategyError
from .state import DistributionMode, KeyedStateView, OperatorSink, OperatorStateView, PluginInfo, RestoreSink
from .streams import RestoreReader, SnapshotWriter


class Strategy:
    """A snapshot strategy. Subclass it and pass the subclass to :func:`export`.

    Every method runs in a fresh, sandboxed instance: nothing survives from one call to the
    next, so a strategy keeps no state of its own between calls.
    """

    def describe(self) -> PluginInfo:
        """Names the strategy and the format it writes."""
        raise NotImplementedError

    def snapshot_keyed(self, state: KeyedStateView, out: SnapshotWriter) -> None:
        """Writes all of ``state``, calling ``out.begin_key_group`` before each key group of
        ``state.key_group_range()``."""
        raise NotImplementedError

    def restore_key_group(self, key_group: int, input: RestoreReader, sink: RestoreSink) -> None:
        """Reads the bytes of one key group (``input`` starts at its offset) into ``sink``."""
        raise NotImplementedError

    def snapshot_operator(self, state: OperatorStateView, out: SnapshotWriter) -> None:
        """Writes every element of every operator state, calling ``out.begin_partition``
        before each. The default refuses: the strategy supports keyed state only."""
        raise StrategyError(f"strategy {self.describe().name} does not support operator state")

    def restore_operator_partition(
        self, name: str, mode: DistributionMode, input: RestoreReader, sink: OperatorSink
    ) -> None:
        """Reads one element of operator state ``name`` (``input`` starts at its offset)."""
        raise StrategyError(f"strategy {self.describe().name} does not support operator state")


def _failure(e: BaseException) -> Err:
    if isinstance(e, StrategyError):
        return Err(str(e))
    # A bug in the strategy: say where, briefly (the innermost frame), not only what.
    frames = traceback.extract_tb(e.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return Err(f"{type(e).__name__}: {e}{where}")


def export(strategy_class: type) -> type:
    """The class ``componentize-py`` instantiates for the ``strategy`` world, delegating to
    ``strategy_class``. Use it in the app module as ``WitWorld = export(MyStrategy)``."""
    strategy = strategy_class()

    def guarded(body):
        try:
            body()
        except Exception as e:  # every failure becomes the call's error result
            raise _failure(e) from None

    def snapshot(method, view, out):
        def body():
            writer = SnapshotWriter(out)
            method(view, writer)
            writer._finish()

        guarded(body)

    class WitWorld:
        def describe(self):
            return strategy.describe()._wit()

        def snapshot_keyed(self, state, out):
            snapshot(strategy.snapshot_keyed, KeyedStateView(state), out)

        def restore_key_group(self, key_group, input, sink):
            guarded(lambda: strategy.restore_key_group(key_group, RestoreReader(input), RestoreSink(sink)))

        def snapshot_operator(self, state, out):
            snapshot(strategy.snapshot_operator, OperatorStateView(state), out)

        def restore_operator_partition(self, name, mode, input, sink):
            guarded(
                lambda: strategy.restore_operator_partition(
                    name, DistributionMode._from_wit(mode), RestoreReader(input), OperatorSink(sink)
                )
            )

    WitWorld.__name__ = f"WitWorld[{strategy_class.__name__}]"
    return WitWorld
