"""RESP2 reply values and their encoding.

A command handler returns plain Python values and the front door encodes them:

==================  =========================================
Python value        RESP2
==================  =========================================
``Status("OK")``    ``+OK``
``ErrorValue(m)``   ``-m`` (an error, also inside arrays)
``bool`` / ``int``  ``:n``
``str`` / ``bytes`` bulk string
``float``           bulk string ``repr`` (``%.17g``)
``None``            nil bulk ``$-1``
``list``/``tuple``  array (recursive)
``NilArray``        nil array ``*-1``
``RawReply(b)``     ``b`` sent as is (already RESP)
==================  =========================================
"""

from __future__ import annotations

from typing import Any, Iterable

from gears.errors import GearsError

__all__ = [
    "Status",
    "ErrorValue",
    "RawReply",
    "NIL_ARRAY",
    "OK",
    "encode",
    "encode_error",
    "encode_command",
    "encode_per_key",
]


class Status(str):
    """A simple-string reply (``+text``)."""


class ErrorValue(str):
    """An error reply value; encoded as ``-text`` wherever it appears."""


class RawReply(bytes):
    """Bytes that are already a complete RESP reply."""


class _NilArray:
    def __repr__(self) -> str:
        return "NIL_ARRAY"


NIL_ARRAY = _NilArray()
OK = Status("OK")

_CRLF = b"\r\n"


def _bulk(data: bytes, out: list[bytes]) -> None:
    out.append(b"$%d\r\n" % len(data))
    out.append(data)
    out.append(_CRLF)


def _encode_into(value: Any, out: list[bytes]) -> None:
    if isinstance(value, RawReply):
        out.append(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        _bulk(bytes(value), out)
    elif isinstance(value, Status):
        out.append(b"+" + _one_line(value).encode() + _CRLF)
    elif isinstance(value, ErrorValue):
        out.append(b"-" + _one_line(value).encode() + _CRLF)
    elif isinstance(value, str):
        _bulk(value.encode("utf-8", "surrogateescape"), out)
    elif isinstance(value, bool):
        out.append(b":1\r\n" if value else b":0\r\n")
    elif isinstance(value, int):
        out.append(b":%d\r\n" % value)
    elif isinstance(value, float):
        _bulk(repr(value).encode(), out)
    elif value is None:
        out.append(b"$-1\r\n")
    elif value is NIL_ARRAY:
        out.append(b"*-1\r\n")
    elif isinstance(value, (list, tuple)):
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, out)
    elif isinstance(value, GearsError):
        out.append(b"-" + value.reply_text().encode() + _CRLF)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as a RESP reply")


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")


def encode(value: Any) -> bytes:
    """Encode one reply value (see the module table)."""
    out: list[bytes] = []
    _encode_into(value, out)
    return b"".join(out)


def encode_error(err: BaseException) -> bytes:
    """Encode an exception as an error reply; non-Gears exceptions get an ``ERR`` code."""
    if isinstance(err, GearsError):
        text = err.reply_text()
    else:
        text = "ERR " + _one_line(f"{type(err).__name__}: {err}")
    return b"-" + text.encode("utf-8", "replace") + _CRLF


def encode_per_key(command: bytes, keys: Iterable[bytes], tail: tuple[bytes, ...] = ()) -> bytes:
    """``command key *tail`` for every key, as one pipelined payload (a fast path of
    :func:`encode_command` for the readers)."""
    head = b"*%d\r\n$%d\r\n%s\r\n" % (2 + len(tail), len(command), command)
    end = b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in tail)
    return b"".join(b"%s$%d\r\n%s\r\n%s" % (head, len(key), key, end) for key in keys)


def encode_command(args: Iterable[Any]) -> bytes:
    """Encode a command as a RESP array of bulk strings (``str(x)`` for non-bytes)."""
    parts: list[bytes] = []
    items = list(args)
    parts.append(b"*%d\r\n" % len(items))
    for arg in items:
        if isinstance(arg, (bytes, bytearray, memoryview)):
            data = bytes(arg)
        elif isinstance(arg, str):
            data = arg.encode("utf-8", "surrogateescape")
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n" % len(data))
        parts.append(data)
        parts.append(_CRLF)
    return b"".join(parts)
