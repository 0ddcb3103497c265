"""The reader contract and the registry of batch readers.

A reader is built on the initiator when ``run()`` is called (argument validation gives
the script-level errors of RedisGears), travels inside the plan to every shard, and
there yields the shard's *local* records through :meth:`Reader.records`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol

from gears.records import GearsScriptError

__all__ = ["ReaderContext", "Reader", "BATCH_READERS", "make_reader", "check_bool"]


class ReaderContext(Protocol):
    """What a reader needs on the shard it runs on."""

    @property
    def conn(self) -> Any:
        """A :class:`gears.serverconn.ServerConnection` to the local server node."""

    @property
    def shard_id(self) -> str:
        """This shard's id (``'1'`` outside cluster mode)."""

    def owns(self, key: str | bytes) -> bool:
        """Whether ``key``'s slot belongs to this shard."""

    def open_connection(self, decode: bool = False) -> Any:
        """A new connection to the local server node (the caller closes it); ``decode``:
        replies as ``str`` (see :class:`gears.serverconn.ServerConnection`)."""


class Reader(Protocol):
    """A batch reader: validated on the initiator, run on each shard."""

    def records(self, ctx: ReaderContext) -> Iterator[Any]:
        """Yield this shard's records."""


#: reader name → factory ``(arg, options) -> Reader``; filled by the reader modules.
BATCH_READERS: dict[str, Callable[[Any, dict[str, Any]], Reader]] = {}


def make_reader(name: str, arg: Any, options: dict[str, Any]) -> Reader:
    """Validate the ``run()`` arguments of reader ``name`` and build it."""
    from . import keys, keys_only, python, streams  # noqa: F401 - fill the registry

    factory = BATCH_READERS.get(name)
    if factory is None:
        raise GearsScriptError("Given reader do not support run or not exists")
    return factory(arg, options)


def check_bool(options: dict[str, Any], name: str, default: bool, message: str) -> bool:
    """A boolean reader option, with RedisGears' error text when it is not a bool."""
    value = options.get(name, default)
    if not isinstance(value, bool):
        raise GearsScriptError(message)
    return value
