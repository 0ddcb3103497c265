"""The reader contract and the registry of batch readers.

A reader is built on the initiator when ``run()`` is called (argument validation gives
the script-level errors of RedisGears), travels inside the plan to every shard, and
there yields the shard's *local* records through :meth:`Reader.records`.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

from gears.engine.records import GearsScriptError

__all__ = ["ReaderContext", "Reader", "check_bool"]


class ReaderContext(Protocol):
    """What a reader needs on the shard it runs on."""

    @property
    def conn(self) -> Any:
        """A :class:`gears.wire.serverconn.ServerConnection` to the local server node."""

    @property
    def shard_id(self) -> str:
        """This shard's id (``'1'`` outside cluster mode)."""

    def owns(self, key: str | bytes) -> bool:
        """Whether ``key``'s slot belongs to this shard."""

    def open_connection(self, decode: bool = False) -> Any:
        """A new connection to the local server node (the caller closes it); ``decode``:
        replies as ``str`` (see :class:`gears.wire.serverconn.ServerConnection`)."""


class Reader(Protocol):
    """A batch reader: validated on the initiator, run on each shard."""

    def records(self, ctx: ReaderContext) -> Iterator[Any]:
        """Yield this shard's records."""


def check_bool(options: dict[str, Any], name: str, default: bool, message: str) -> bool:
    """A boolean reader option, with RedisGears' error text when it is not a bool."""
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise GearsScriptError(message)
    return value
