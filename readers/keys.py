"""KeysReader: the local keys matching a pattern, with their type and value.

Keys are found with ``SCAN`` on the local server node and read in batches of 1000 with
two pipelined round trips per batch (``TYPE`` of every key, then ``GET``/``HGETALL``/
``LRANGE`` by type), never one round trip per key. The batches are pipelined two deep:
while the steps process one batch, the server already reads the next. (Pipelined native
commands cost the server about half what one Lua call per batch does.)
"""

from __future__ import annotations

from typing import Any, Iterator

from gears.engine.records import GearsScriptError
from gears.wire.resp import encode_per_key
from gears.wire.serverconn import ServerError

from gears_readers.base import ReaderContext, check_bool

__all__ = ["KeysReader", "read_keys", "key_record", "INTERNAL_PREFIX"]

BATCH = 1000

#: The engine's own keys (sessions, timers); readers never yield them.
INTERNAL_PREFIX = "__gears:"

_READ_BY_TYPE = {"string": (b"GET", ()), "hash": (b"HGETALL", ()), "list": (b"LRANGE", (b"0", b"-1"))}

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


def _encode(keys: list[str]) -> list[bytes]:
    return [key.encode("utf-8", "surrogateescape") for key in keys]


def _send_reads(conn: Any, raw_keys: list[bytes], types: list[Any]) -> list[tuple[int, str]]:
    """Send the value reads of one batch; return ``(key index, type)`` of each read sent."""
    if isinstance(types, Exception):
        raise ServerError(str(types))
    by_type: dict[str, list[int]] = {}
    for index, type_name in enumerate(types):
        if type_name in _READ_BY_TYPE:
            by_type.setdefault(type_name, []).append(index)
    sent: list[tuple[int, str]] = []
    payload: list[bytes] = []
    for type_name, indexes in by_type.items():
        command, tail = _READ_BY_TYPE[type_name]
        payload.append(encode_per_key(command, [raw_keys[i] for i in indexes], tail))
        sent.extend((i, type_name) for i in indexes)
    if payload:
        conn.send_payload(b"".join(payload))
    return sent


def _records(conn: Any, keys: list[str], types: list[str], sent: list[tuple[int, str]], event: str | None) -> list[dict[str, Any]]:
    """Read the replies of ``sent`` reads and build the batch's records."""
    values: dict[int, Any] = {}
    for index, _type_name in sent:
        reply = conn.read()
        if isinstance(reply, Exception):  # the key changed type between TYPE and the read
            reply = None
        values[index] = reply
    return [
        key_record(key, types[i], values.get(i), event)
        for i, key in enumerate(keys)
        if not key.startswith(INTERNAL_PREFIX)
    ]


def read_keys(conn: Any, keys: list[str], event: str | None = None) -> list[dict[str, Any]]:
    """Read type and value of ``keys`` with a decoding connection (two round trips)."""
    raw_keys = _encode(keys)
    conn.send_payload(encode_per_key(b"TYPE", raw_keys))
    types = [conn.read() for _ in keys]
    sent = _send_reads(conn, raw_keys, types)
    return _records(conn, keys, types, sent, event)


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
            yield from self._pipelined(reads, batches)
        finally:
            scans.close()
            if reads is not None:
                reads.close()

    @staticmethod
    def _pipelined(conn: Any, batches: Iterator[list[str]]) -> Iterator[dict[str, Any]]:
        """TYPE of batch n and the reads of batch n-1 travel together; batch n-1's records
        are yielded while the server reads batch n."""
        previous: tuple[list[str], list[str], list[tuple[int, str]]] | None = None
        for keys in batches:
            raw_keys = _encode(keys)
            conn.send_payload(encode_per_key(b"TYPE", raw_keys))
            ready = _records(conn, *previous, None) if previous is not None else None
            types = [conn.read() for _ in keys]
            previous = (keys, types, _send_reads(conn, raw_keys, types))
            if ready is not None:
                yield from ready
        if previous is not None:
            yield from _records(conn, *previous, None)
