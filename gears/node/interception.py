"""Registrations that act on commands arriving through the front door.

* **Hooks** (``CommandReader`` with ``hook=``): the command runs the registration
  instead; ``call_next(...)`` runs the next hook or the original command on the client's
  own connection; the hook's single result is the reply.
* **Read-through** (``KeysReader`` with ``commands=[...]`` and a ``keymiss`` event): when
  such a command (``GET``, ``SMEMBERS``, ``HGETALL``, ``EXISTS`` ...) is about to read a
  missing key, the registration runs first; its ``override_reply(...)`` value is the
  reply, or else the command runs after it and sees what it wrote. The miss is decided
  by the key's existence (as the server's ``keymiss`` event is), not by the reply's
  shape, so commands whose miss reply is an empty array trigger it too.
* **sync registrations**: after a write command, the reply is held until the worker has
  handled every keyspace event the command caused.

:class:`RegistrationInterceptor` is the front door's interceptor; the node refreshes it
whenever registrations change.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

from gears.wire.protocol import WorkerCall
from gears.errors import CommandError

if TYPE_CHECKING:  # pragma: no cover
    from gears.node.services import NodeServices

__all__ = ["RegistrationInterceptor", "CommandTable"]

#: No hook took the command (a hook's reply may itself be ``None``).
_NO_HOOK = object()

class CommandTable:
    """Command flags and first-key positions, read once from the server's ``COMMAND``."""

    def __init__(self, commands: dict[Any, dict[str, Any]]) -> None:
        """``commands``: redis-py's parsed ``COMMAND`` reply (name → info)."""
        self.writes: set[str] = set()
        self.first_key: dict[str, int] = {}
        for name, info in commands.items():
            upper = _text(name).upper()
            if "write" in {_text(f) for f in info.get("flags", [])}:
                self.writes.add(upper)
            first = int(info.get("first_key_pos", 0))
            if first > 0:
                self.first_key[upper] = first

    def key_of(self, args: list[bytes]) -> bytes | None:
        """The command's first key (``None`` for a keyless command)."""
        position = self.first_key.get(_text(args[0]).upper())
        return args[position] if position is not None and position < len(args) else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RegistrationInterceptor:
    """The front door's view of this shard's command-bound registrations."""

    def __init__(self, node: "NodeServices") -> None:
        self._node = node
        self.commands: frozenset[str] = frozenset()
        self._hooks: dict[str, list[dict[str, Any]]] = {}
        self._read_through: dict[str, list[dict[str, Any]]] = {}
        #: The workers running ``sync`` KeysReader registrations (they hold writes' replies).
        self._sync_workers: list[Any] = []
        self._contexts: dict[int, Any] = {}
        self._ids = itertools.count(1)

    def refresh(self, metas: list[dict[str, Any]], table: CommandTable | None) -> None:
        """Recompute which commands to intercept from the registrations' descriptions."""
        hooks: dict[str, list[dict[str, Any]]] = {}
        read_through: dict[str, list[dict[str, Any]]] = {}
        sync_registrations: list[str] = []
        for meta in metas:
            if meta["reader"] == "CommandReader" and meta.get("hook"):
                hooks.setdefault(meta["hook"].upper(), []).append(meta)
            elif meta["reader"] == "KeysReader" and meta.get("commands"):
                for name in meta["commands"]:
                    read_through.setdefault(name.upper(), []).append(meta)
            elif meta["reader"] == "KeysReader" and meta["mode"] == "sync":
                sync_registrations.append(meta["id"])
        self._hooks, self._read_through = hooks, read_through
        self._sync_workers = list({id(w): w for w in map(self._node.sessions.worker_of, sync_registrations)}.values())
        names = set(hooks) | set(read_through)
        if sync_registrations and table is not None:
            names |= table.writes
        self.commands = frozenset(names)

    async def before(self, ctx: Any, args: list[bytes]) -> Any | None:
        """A command hook's reply, a read-through's override, or ``None`` to forward."""
        name = _text(args[0]).upper()
        hooks = self._hooks.get(name)
        if hooks:
            reply = await self._hook(ctx, args, hooks)
            if reply is not _NO_HOOK:
                return reply
        read_through = self._read_through.get(name)
        if read_through:
            return await self._read_through_miss(ctx, args, read_through)
        return None

    # ---------------------------------------------------------------- hooks
    async def _hook(self, ctx: Any, args: list[bytes], hooks: list[dict[str, Any]]) -> Any:
        """The reply of the hook that takes the command, or :data:`_NO_HOOK`."""
        node = self._node
        key = node.command_table.key_of(args) if node.command_table else None
        if key is not None and not node.key_is_local(key):
            return None  # the server answers MOVED; hooks run on the key's own shard
        for meta in reversed(hooks):  # the last registered hook runs first
            prefix = meta.get("keyprefix")
            if prefix is None or (key is not None and key.decode("utf-8", "surrogateescape").startswith(prefix)):
                return await self._run_hook(meta, ctx, args)
        return _NO_HOOK

    async def _run_hook(self, meta: dict[str, Any], ctx: Any, args: list[bytes]) -> Any:
        context_id = next(self._ids)
        self._contexts[context_id] = ctx
        try:
            results, errors = await self._node.sessions.worker_of(meta["id"]).call(
                "hook", meta["id"], [a.decode("utf-8", "surrogateescape") for a in args], context_id
            )
        finally:
            del self._contexts[context_id]
        if errors:
            raise CommandError(errors[0])
        if len(results) != 1:
            raise CommandError("Command hook must return exactly one result")
        return results[0]

    async def call_next(self, context_id: int, args: list[str]) -> Any:
        """``call_next`` from a hook: the original command on the client's own connection."""
        ctx = self._contexts.get(context_id)
        if ctx is None:
            raise CommandError("Can not get CommandHook ctx")
        return await ctx.call_server(*args)

    # ------------------------------------------------------- read-through
    async def _read_through_miss(self, ctx: Any, args: list[bytes], metas: list[dict[str, Any]]) -> Any | None:
        """Run the keymiss registrations of a command about to read a missing key."""
        node = self._node
        key_bytes = node.command_table.key_of(args) if node.command_table else (args[1] if len(args) > 1 else None)
        if key_bytes is None or ctx.in_transaction or not node.key_is_local(key_bytes):
            return None  # keyless, queued in MULTI, or another shard's key (the server answers MOVED)
        key = key_bytes.decode("utf-8", "surrogateescape")
        matching = [
            meta for meta in metas
            if (meta.get("eventTypes") is None or "keymiss" in meta["eventTypes"]) and _matches(meta["prefix"], key)
        ]
        # (asked on the node's own connection: the client may be allowed GET but not EXISTS)
        if not matching or await node.server.exists(key_bytes):
            return None
        argv = [a.decode("utf-8", "surrogateescape") for a in args]
        for meta in matching:
            override = await node.sessions.worker_of(meta["id"]).call(WorkerCall.COMMAND_EVENT, meta["id"], key, "keymiss", argv)
            if override is not None:
                return override
        return None

    # ------------------------------------------------------- after the reply
    async def after(self, ctx: Any, args: list[bytes], raw_reply: bytes) -> Any | None:
        """Hold a write's reply until a sync registration has handled its events."""
        node = self._node
        if self._sync_workers and node.command_table is not None and _text(args[0]).upper() in node.command_table.writes:
            await asyncio.gather(*(worker.call(WorkerCall.BARRIER) for worker in self._sync_workers))
        return None


def _matches(prefix: str, key: str) -> bool:
    return key.startswith(prefix[:-1]) if prefix.endswith("*") else key == prefix

