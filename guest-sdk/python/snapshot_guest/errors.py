"""Errors a strategy raises, and the translation of the host's errors into them."""

from componentize_py_types import Err


class StrategyError(Exception):
    """Fails the current snapshot or restore with this message.

    Host resource errors arrive as this exception too, with the host's error kind (``io``,
    ``invalid``, ``limit``, ``closed``) in :attr:`kind`. The host also remembers the first
    error it handed out and reports it itself, so swallowing one does not make a broken
    snapshot succeed.
    """

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


def host_call(call, *args):
    """Calls a host resource method, turning its ``result`` error into :class:`StrategyError`."""
    try:
        return call(*args)
    except Err as e:
        error = e.value
        kind = getattr(getattr(error, "kind", None), "name", "").lower() or None
        raise StrategyError(getattr(error, "message", str(error)), kind) from None
