"""KeysReader: the local keys matching a pattern, with their type and value.

Keys are found with ``SCAN`` on the local server node and read in batches of 1000
with one Lua call per batch (``TYPE`` plus ``GET``/``HGETALL``/``LRANGE``), so reading
costs one round trip per thousand keys, never one per key. The read of the next batch
is sent (on a second connection) before the current batch's records are handed to the
steps, so the server reads while Python computes.
"""

from __future__ import annotations

from typing import Any, Iterator

from gears.records import GearsScriptError
from gears.serverconn import ServerError

from .base import BATCH_READERS, ReaderContext, check_bool

__all__ = ["KeysReader", "read_keys", "key_record"]

BATCH = 1000

# For each key in ARGV: {type, value}; value only for string, hash and list keys.
_READ_SCRIPT = """
local out = {}
for i, key in ipairs(ARGV) do
  local t = redis.call('TYPE', key)['ok']
  local v = false
  if t == 'string' then v = redis.call('GET', key)
  elseif t == 'hash' then v = redis.call('HGETALL', key)
  elseif t == 'list' then v = redis.call('LRANGE', key, 0, -1) end
  out[i] = {t, v}
end
return out
"""

_TYPE_NAMES = {
    "string": "string",
    "hash": "hash",
    "list": "list",
    "set": "set",
    "zset": "zset",
    "stream": "unknown",
    "none": "empty",
}


def key_record(key: str, type_name: str, raw: Any, event: str | None) -> dict[str, Any]:
    """The KeysReader record of one key: ``{'key', 'value', 'type', 'event'}``.

    ``raw`` comes from a decoding connection (``str`` values)."""
    kind = _TYPE_NAMES.get(type_name, "module")
    if kind == "hash" and raw:
        value: Any = dict(zip(raw[::2], raw[1::2]))
    elif kind in ("string", "list"):
        value = raw
    else:
        value = None
    return {"key": key, "value": value, "type": kind, "event": event}


#: The engine's own keys (sessions, timers); readers never yield them.
INTERNAL_PREFIX = "__gears:"


def _records(keys: list[str], replies: Any, event: str | None) -> list[dict[str, Any]]:
    if isinstance(replies, Exception):
        raise ServerError(str(replies))
    return [
        key_record(key, type_name, raw, event)
        for key, (type_name, raw) in zip(keys, replies)
        if not key.startswith(INTERNAL_PREFIX)
    ]


def read_keys(conn: Any, keys: list[str], event: str | None = None) -> list[dict[str, Any]]:
    """Read type and value of ``keys`` with a decoding connection, in one call."""
    return _records(keys, conn.call_raw("EVAL", _READ_SCRIPT, 0, *keys), event)


class KeysReader:
    """``GB('KeysReader').run(pattern, noScan=False, readValue=True)``."""

    def __init__(self, arg: Any, options: dict[str, Any]) -> None:
        if not isinstance(arg, str):
            raise GearsScriptError("regex argument must be a string")
        self.pattern = arg
        self.no_scan = check_bool(options, "noScan", False, "exactMatch value is not boolean")
        self.read_value = check_bool(options, "readValue", True, "readValue value is not boolean")

    def records(self, ctx: ReaderContext) -> Iterator[Any]:
        if self.no_scan and not ctx.owns(self.pattern):
            return  # with noScan the pattern is one key name; only its shard reads it
        scans = ctx.open_connection(decode=True)
        reads = ctx.open_connection(decode=True) if self.read_value else None
        try:
            batches = [[self.pattern]] if self.no_scan else scans.scan(self.pattern, BATCH)
            if reads is None:
                for keys in batches:
                    for key in keys:
                        if not key.startswith(INTERNAL_PREFIX):
                            yield {"key": key, "event": None}
                return
            pending: list[str] | None = None
            for keys in batches:
                reads.send("EVAL", _READ_SCRIPT, 0, *keys)
                if pending is not None:
                    yield from _records(pending, reads.read(), None)
                pending = keys
            if pending is not None:
                yield from _records(pending, reads.read(), None)
        finally:
            scans.close()
            if reads is not None:
                reads.close()


BATCH_READERS["KeysReader"] = KeysReader
