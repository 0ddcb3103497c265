"""``with atomic():`` in a worker: an optimistic read-modify-write block.

Without a server module nothing can hold the server's lock from outside, so the block
uses Redis' optimistic transactions (see docs/atomic.md):

* a read command first ``WATCH``es its keys, then runs and returns its real reply;
* a write command is queued (its reply is ``'QUEUED'``) and its keys are watched too;
* at the end of the block the queued writes run in one ``MULTI``/``EXEC``. If any watched
  key changed meanwhile (another execution, or any outside client), ``EXEC`` does nothing
  and :class:`~gears.engine.records.AtomicConflict` is raised; the step that ran the block
  catches it and calls the user callback again (up to ``MAX_ATTEMPTS`` times).

So no update is lost, the writes of a block are all-or-nothing, and reads inside a block
see values that were still current when the writes were applied.
"""

from __future__ import annotations

from typing import Any, Literal

import hiredis

from gears.engine.records import AtomicConflict, GearsScriptError
from gears.wire.serverconn import ServerConnection, map_reply
from gears.worker.context import thread_context

__all__ = ["AtomicBlock", "CommandTable"]


class CommandTable:
    """Which commands write, from the server's ``COMMAND INFO`` (cached)."""

    def __init__(self) -> None:
        self._writes: dict[str, bool] = {}

    def is_write(self, conn: ServerConnection, name: str) -> bool:
        key = name.lower()
        if key not in self._writes:
            info = conn.call("COMMAND", "INFO", key)
            if not info or not info[0]:
                raise GearsScriptError(f"unknown command '{name}' inside atomic block")
            flags = {f.decode() if isinstance(f, bytes) else f for f in info[0][2]}
            self._writes[key] = "write" in flags
        return self._writes[key]


_TABLE = CommandTable()


def _keys(conn: ServerConnection, args: tuple[Any, ...]) -> list[bytes]:
    reply = conn.call_raw("COMMAND", "GETKEYS", *args)
    return [] if isinstance(reply, hiredis.ReplyError) else list(reply)


class AtomicBlock:
    """The context manager returned by ``atomic()`` in a worker."""

    def __init__(self, conn: ServerConnection) -> None:
        self._conn = conn
        self._writes: list[tuple[Any, ...]] = []
        self._watched: set[bytes] = set()

    def __enter__(self) -> "AtomicBlock":
        if getattr(thread_context, "atomic", None) is not None:
            raise GearsScriptError("Already inside an atomic block")
        thread_context.atomic = self
        return self

    def execute(self, args: tuple[Any, ...], *, deferred: bool = False) -> Any:
        """Run a read now (after watching its keys) or queue a write."""
        conn = self._conn
        new_keys = [k for k in _keys(conn, args) if k not in self._watched]
        if new_keys:
            conn.call("WATCH", *new_keys)
            self._watched.update(new_keys)
        if deferred or _TABLE.is_write(conn, str(args[0])):
            self._writes.append(args)
            return "QUEUED"
        reply = conn.call_raw(*args)
        if isinstance(reply, hiredis.ReplyError):
            raise GearsScriptError(str(reply))
        return map_reply(reply)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        thread_context.atomic = None
        conn = self._conn
        if exc_type is not None or not self._writes:
            conn.call("UNWATCH")
            return False
        replies = conn.pipeline([("MULTI",), *self._writes, ("EXEC",)])
        outcome = replies[-1]
        if outcome is None:
            raise AtomicConflict("a watched key changed")
        if isinstance(outcome, hiredis.ReplyError):
            raise GearsScriptError(str(outcome))
        errors = [str(r) for r in outcome if isinstance(r, hiredis.ReplyError)]
        if errors:
            raise GearsScriptError(errors[0])
        return False
