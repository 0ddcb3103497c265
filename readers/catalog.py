"""The batch readers by the name ``GB(name)`` gives, and building one for a ``run()``."""

from __future__ import annotations

from typing import Any, Callable

from gears.engine.records import GearsScriptError
from gears_readers.base import Reader
from gears_readers.keys import KeysReader
from gears_readers.keys_only import KeysOnlyReader
from gears_readers.python import PythonReader, ShardsIDReader
from gears_readers.streams import StreamReader

__all__ = ["BATCH_READERS", "make_reader"]

#: reader name → factory ``(arg, options) -> Reader``.
BATCH_READERS: dict[str, Callable[[Any, dict[str, Any]], Reader]] = {
    "KeysReader": KeysReader,
    "KeysOnlyReader": KeysOnlyReader,
    "StreamReader": StreamReader,
    "PythonReader": PythonReader,
    "ShardsIDReader": ShardsIDReader,
}


def make_reader(name: str, arg: Any, options: dict[str, Any]) -> Reader:
    """Validate the ``run()`` arguments of reader ``name`` and build it."""
    factory = BATCH_READERS.get(name)
    if factory is None:
        raise GearsScriptError("Given reader do not support run or not exists")
    return factory(arg, options)
