"""PythonReader and ShardsIDReader.

PythonReader iterates what its function returns (called on every shard in ``async``
mode). ShardsIDReader yields one record per shard: the shard's id.
"""

from __future__ import annotations

import types
from typing import Any, Iterator

from gears.engine.records import GearsScriptError

from gears_readers.base import ReaderContext

__all__ = ["PythonReader", "ShardsIDReader"]


class PythonReader:
    """``GB('PythonReader').run(generator_function)``."""

    def __init__(self, arg: Any, options: dict[str, Any]) -> None:
        if not isinstance(arg, types.FunctionType):
            raise GearsScriptError("pyreader argument must be a function")
        self.function = arg

    def records(self, ctx: ReaderContext) -> Iterator[Any]:
        yield from self.function()


class ShardsIDReader:
    """``GB('ShardsIDReader').run()``: the shard's id (``'1'`` outside cluster mode)."""

    def __init__(self, arg: Any, options: dict[str, Any]) -> None:
        pass

    def records(self, ctx: ReaderContext) -> Iterator[Any]:
        yield ctx.shard_id
