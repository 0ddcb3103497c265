"""KeysReader: the local keys matching a pattern, with their type and value.

Keys are found with ``SCAN`` on the local server node and read in batches of 1000
with one Lua call per batch (``TYPE`` plus ``GET``/``HGETALL``/``LRANGE``), so reading
costs one round trip per thousand keys, never one per key.
"""

from __future__ import annotations

from typing import Any, Iterator

from gears.records import GearsScriptError

from .base import BATCH_READERS, ReaderContext, check_bool, decode_value

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
    b"string": "string",
    b"hash": "hash",
    b"list": "list",
    b"set": "set",
    b"zset": "zset",
    b"stream": "unknown",
    b"none": "empty",
}


def key_record(key: str, type_name: bytes, raw: Any, event: str | None) -> dict[str, Any]:
    """The KeysReader record of one key: ``{'key', 'value', 'type', 'event'}``."""
    kind = _TYPE_NAMES.get(type_name, "module")
    if kind == "hash" and raw:
        value: Any = {decode_value(raw[i]): decode_value(raw[i + 1]) for i in range(0, len(raw), 2)}
    elif kind in ("string", "list") and raw is not None:
        value = decode_value(raw)
    else:
        value = None
    return {"key": key, "value": value, "type": kind, "event": event}


def read_keys(conn: Any, keys: list[bytes], event: str | None = None) -> list[dict[str, Any]]:
    """Read type and value of ``keys`` from the local server in one call."""
    replies = conn.call("EVAL", _READ_SCRIPT, 0, *keys)
    return [
        key_record(key.decode("utf-8", "surrogateescape"), type_name, raw, event)
        for key, (type_name, raw) in zip(keys, replies)
    ]


class KeysReader:
    """``GB('KeysReader').run(pattern, noScan=False, readValue=True)``."""

    def __init__(self, arg: Any, options: dict[str, Any]) -> None:
        if not isinstance(arg, str):
            raise GearsScriptError("regex argument must be a string")
        self.pattern = arg
        self.no_scan = check_bool(options, "noScan", False, "exactMatch value is not boolean")
        self.read_value = check_bool(options, "readValue", True, "readValue value is not boolean")

    def records(self, ctx: ReaderContext) -> Iterator[Any]:
        conn = ctx.conn
        if self.no_scan and not ctx.owns(self.pattern):
            return  # with noScan the pattern is one key name; only its shard reads it
        batches = [[self.pattern.encode()]] if self.no_scan else conn.scan(self.pattern, BATCH)
        for keys in batches:
            if not self.read_value:
                for key in keys:
                    yield {"key": key.decode("utf-8", "surrogateescape"), "event": None}
                continue
            yield from read_keys(conn, keys)


BATCH_READERS["KeysReader"] = KeysReader
