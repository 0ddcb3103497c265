"""What flows between steps, and how results become replies.

* :class:`ErrorRecord` - a record that failed in a callback. It skips every later
  callback, still travels through ``collect`` (to the initiator), stays local at
  ``repartition``, and ends up in the execution's errors list.
* :class:`KeyedRecord` - a record with its group key, between ``extractkey`` and the
  group steps.
* :func:`format_error` - the exact RedisGears 1.2 error text of an exception.
* :func:`to_reply` - the RedisGears mapping of a Python result to a RESP reply value.
"""

from __future__ import annotations

import ast
import traceback
from types import TracebackType
from typing import Any

from gears.wire.resp import ErrorValue, Status

__all__ = [
    "AtomicConflict",
    "ErrorRecord",
    "KeyedRecord",
    "FlatError",
    "ForceStopped",
    "GearsScriptError",
    "error_headline",
    "format_error",
    "group_key",
    "readable_error",
    "to_reply",
]


class GearsScriptError(Exception):
    """``gears.error`` / ``redisgears.error``: an error raised by the Gears API in user code."""


class FlatError(Exception):
    """``flat_error(msg)``: the recorded error is exactly ``str(msg)``, no traceback."""


class AtomicConflict(Exception):
    """An ``atomic()`` block lost a race; the step calls its callback again."""


class ForceStopped(BaseException):
    """``gears.forcestopped``: injected into a running step by ``RG.ABORTEXECUTION``."""


class ErrorRecord:
    """A failed record: carries the error text to the execution's errors list."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"ErrorRecord({self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ErrorRecord, (self.message,))


class KeyedRecord:
    """A record paired with its group key (always a ``str``)."""

    __slots__ = ("key", "value")

    def __init__(self, key: str, value: Any) -> None:
        self.key = key
        self.value = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (KeyedRecord, (self.key, self.value))


def group_key(key: Any) -> str:
    """Group keys are strings: a non-``str`` extractor result goes through ``repr``.

    >>> group_key("user"), group_key(3), group_key(("a", 1))
    ('user', '3', "('a', 1)")
    """
    return key if isinstance(key, str) else repr(key)


def format_error(
    exc: BaseException,
    *,
    with_traceback: bool = True,
    tb: TracebackType | None = None,
) -> str:
    """The error text RedisGears 1.2 records for an exception raised by user code.

    ``flat_error`` (and errors of coroutines, which callers pass with
    ``with_traceback=False`` and get through :class:`FlatError` semantics) give the bare
    message. Otherwise, with ``PythonAttemptTraceback`` on, the text is the ``str`` of
    ``traceback.format_exception`` (a list repr); with it off, or when no traceback is
    available, ``"Error type: <class 'X'>, Value: msg"``.
    """
    if isinstance(exc, (FlatError, GearsScriptError)):
        return str(exc)
    if with_traceback:
        use_tb = tb if tb is not None else exc.__traceback__
        if use_tb is not None:
            return str(traceback.format_exception(type(exc), exc, use_tb))
    return f"Error type: {type(exc)}, Value: {exc}"


def readable_error(text: str) -> str:
    """A recorded error text as a person reads it: a traceback recorded by
    :func:`format_error` (a list repr) joined into its lines; any other text as it is."""
    if text.startswith("['") and text.endswith("']"):
        try:
            lines = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(lines, list) and all(isinstance(line, str) for line in lines):
            return "".join(lines).rstrip("\n")
    return text


def error_headline(text: str) -> str:
    """The line that says what went wrong: a traceback's last line (``Type: message``),
    or the last non-empty line of any other error text."""
    lines = [line for line in readable_error(text).splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


def to_reply(value: Any) -> Any:
    """Map a Python result to a reply value the way RedisGears 1.2 does.

    ``int`` (and ``bool``) → integer; ``float`` → bulk ``"%lf"``; ``str`` starting with
    ``+`` → status and with ``-`` (longer than one char) → error; other ``str`` and
    ``bytes`` → bulk; ``list`` → array (recursive); anything else → ``"PY RECORD"``.

    >>> to_reply([1, 2.5, "+OK", "text", {"a": 1}])
    [1, '2.500000', 'OK', 'text', 'PY RECORD']
    """
    if isinstance(value, str):
        if len(value) > 1 and value[0] == "+":
            return Status(value[1:])
        if len(value) > 1 and value[0] == "-":
            return ErrorValue(value[1:])
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return "%f" % value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, list):
        return [to_reply(item) for item in value]
    return "PY RECORD"
