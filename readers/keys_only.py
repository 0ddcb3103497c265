"""KeysOnlyReader: just the names of the local keys matching a pattern.

As in RedisGears 1.2 it is a Python generator with its own options
(``count``, ``noScan``, ``patternGenerator``); option errors found while reading
(a bad ``count``, a non-callable ``patternGenerator``) are execution errors.
"""

from __future__ import annotations

from typing import Any, Iterator

from gears.engine.records import GearsScriptError

from gears_readers.base import ReaderContext
from gears_readers.keys import INTERNAL_PREFIX

__all__ = ["KeysOnlyReader"]

_OPTIONS = ("count", "noScan", "patternGenerator")


class KeysOnlyReader:
    """``GB('KeysOnlyReader').run(pattern, count=1000, noScan=False, patternGenerator=None)``."""

    def __init__(self, arg: Any, options: dict[str, Any]) -> None:
        for name in options:
            if name not in _OPTIONS:
                # RedisGears passes every kwarg to createKeysOnlyReader(), so an unknown one
                # (even ``mode``) is a TypeError at script level.
                raise TypeError(f"createKeysOnlyReader() got an unexpected keyword argument '{name}'")
        if not isinstance(arg, str):
            raise GearsScriptError("regex argument must be a string")
        self.pattern = arg
        self.count = options.get("count", 1000)
        self.no_scan = options.get("noScan", False)
        self.pattern_generator = options.get("patternGenerator")

    def records(self, ctx: ReaderContext) -> Iterator[Any]:
        pattern, no_scan = self.pattern, self.no_scan
        if self.pattern_generator is not None:
            pattern, no_scan = self.pattern_generator()
        conn = ctx.conn
        if no_scan:
            if ctx.owns(pattern) and conn.call("EXISTS", pattern):
                yield pattern
            return
        for keys in conn.scan(pattern, self.count):
            for key in keys:
                name = key.decode("utf-8", "surrogateescape")
                if not name.startswith(INTERNAL_PREFIX):
                    yield name
