"""Sessions with registrations, as a gears node keeps them (see docs/triggers.md).

A session is stored on every shard as the hash ``__gears:session{<shard hashtag>}:<id>``
(``blob``: the pickled registrations; ``description``; ``registrations``, ``removed`` and
``requirements`` as JSON lists), so Redis persists and replicates it. :class:`SessionStore`
applies sessions to the worker of their user environment (the base one, or the one of
their requirement set: :mod:`gears.node.worker_pool`), writes and deletes those keys, and loads
them again when the node (or a worker) starts.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gears.wire.protocol import WorkerCall
from gears.errors import CommandError
from gears.engine.records import GearsScriptError
from gears.environments.requirements import RequirementSet, dump_entries
from gears.node.worker_pool import Environment

if TYPE_CHECKING:  # pragma: no cover
    from gears.node.services import NodeServices
    from gears.node.worker_handle import WorkerHandle

__all__ = ["SessionRecord", "SessionStore", "SESSION_KEY"]

log = logging.getLogger(__name__)

SESSION_KEY = "__gears:session{%s}:%s"
SESSION_PATTERN = "__gears:session{%s}:*"


@dataclass
class SessionRecord:
    """One session on this shard."""

    id: str
    blob: bytes
    description: str | None = None
    registrations: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    metas: list[dict[str, Any]] = field(default_factory=list)
    #: The ACL user who registered the session: its registrations run with that user's rights.
    user: str | None = None
    #: Its ``REQUIREMENTS`` (normalised): the user environment its code runs in.
    requirements: list[str] = field(default_factory=list)

    @property
    def environment(self) -> Environment:
        return Environment.of(self.requirements)

    def to_worker(self) -> dict[str, Any]:
        return {
            "id": self.id, "blob": self.blob, "description": self.description, "removed": self.removed,
            "user": self.user, "requirements": self.requirements,
        }

    def to_peer(self) -> dict[str, Any]:
        """What another shard needs to apply it (``SessionRecord(**to_peer())``)."""
        return {
            "id": self.id, "blob": self.blob, "description": self.description, "registrations": self.registrations,
            "removed": self.removed, "user": self.user, "requirements": self.requirements,
        }

    def to_hash(self) -> dict[str, Any]:
        return {
            "blob": self.blob,
            "description": self.description or "",
            "registrations": json.dumps(self.registrations),
            "removed": json.dumps(self.removed),
            "user": self.user or "",
            "requirements": json.dumps(self.requirements),
        }

    @classmethod
    def from_hash(cls, session_id: str, fields: dict[bytes, bytes]) -> "SessionRecord":
        return cls(
            session_id,
            fields[b"blob"],
            fields.get(b"description", b"").decode() or None,
            json.loads(fields.get(b"registrations", b"[]")),
            json.loads(fields.get(b"removed", b"[]")),
            user=fields.get(b"user", b"").decode() or None,
            requirements=json.loads(fields.get(b"requirements", b"[]")),
        )

    @property
    def active(self) -> list[str]:
        return [r for r in self.registrations if r not in self.removed]


class SessionStore:
    """The sessions of one shard: applied to its worker, kept in its server node."""

    def __init__(self, node: "NodeServices") -> None:
        self._node = node
        self.sessions: dict[str, SessionRecord] = {}
        #: Set while the worker has every session (cleared from a worker's death until
        #: its successor got them all back), so listings never show a partial set.
        self.restored = asyncio.Event()

    def _key(self, session_id: str) -> str:
        return SESSION_KEY % (self._node.view.shard_map.hashtag, session_id)

    def check_new(self, session_id: str | None, upgrade: bool, replace_with: str | None) -> None:
        """The ID / UPGRADE / REPLACE_WITH rules of RG.PYEXECUTE."""
        if replace_with is not None:
            if replace_with not in self.sessions:
                raise CommandError(f"Can not replace with {replace_with}, session does not exists.")
            if session_id is not None and session_id in self.sessions and session_id != replace_with:
                raise CommandError(f"Can not replace an existing session {session_id} with {replace_with}")
        elif session_id is not None and session_id in self.sessions and not upgrade:
            raise CommandError(f"Session {session_id} already exists")

    def worker_of(self, reg_id: str) -> "WorkerHandle":
        """The worker running registration ``reg_id`` (the base worker for one not known
        here, which answers as RedisGears did for an unknown registration)."""
        record = next((r for r in self.sessions.values() if reg_id in r.registrations), None)
        workers = self._node.workers
        worker = workers.get(record.environment.key) if record is not None else None
        return worker or workers.base

    def worker_of_trigger(self, trigger: str) -> "WorkerHandle":
        """The worker running the ``CommandReader`` registration of ``trigger`` (the base
        worker when none is known, which answers that it is not found)."""
        reg_id = next(
            (meta["id"] for record in self.sessions.values() for meta in record.metas if meta.get("trigger") == trigger),
            None,
        )
        return self.worker_of(reg_id) if reg_id is not None else self._node.workers.base

    async def apply(self, record: SessionRecord, replaces: str | None) -> None:
        """Install ``record`` on this shard (worker first, then the session key).

        A session replacing one of another user environment (an upgrade that changed its
        requirements) is installed in its own worker first; the old one's registrations
        then leave the old worker."""
        worker = await self._node.worker_for(record.requirements)
        previous = self.sessions.get(replaces) if replaces else self.sessions.get(record.id)
        moved = previous if previous is not None and previous.environment != record.environment else None
        record.metas = await worker.call(WorkerCall.APPLY_SESSION, record.to_worker(), None if moved else replaces)
        try:
            self._check_triggers(record, replaced={replaces, record.id})
        except GearsScriptError:
            for reg_id in record.active:
                await worker.call(WorkerCall.UNREGISTER, reg_id, False)
            raise
        if moved is not None:
            old_worker = self._node.workers.get(moved.environment.key)
            for reg_id in moved.active if old_worker is not None else ():
                await old_worker.call(WorkerCall.UNREGISTER, reg_id, False)
        old = self.sessions.pop(replaces, None) if replaces else None
        self.sessions[record.id] = record
        server = self._node.server
        if self._node.view.shard_map.my_role == "master":
            await server.hset(self._key(record.id), mapping=record.to_hash())
            if old is not None and old.id != record.id:
                await server.delete(self._key(old.id))
        self._node.registrations_changed()

    def _check_triggers(self, record: SessionRecord, replaced: set[str | None]) -> None:
        """A ``CommandReader`` trigger name is unique on a shard, across user environments
        too (each worker checks its own sessions)."""
        mine = {meta["trigger"] for meta in record.metas if meta.get("trigger") is not None}
        for other in self.sessions.values():
            if other.id in replaced or other.environment == record.environment:
                continue
            if any(meta.get("trigger") in mine for meta in other.metas):
                raise GearsScriptError("trigger already registered")

    async def remove(self, session_id: str) -> None:
        """Forget a session (rollback of a failed apply elsewhere)."""
        record = self.sessions.pop(session_id, None)
        if record is None:
            return
        worker = self._node.workers.get(record.environment.key)
        for reg_id in record.active if worker is not None else ():
            await worker.call(WorkerCall.UNREGISTER, reg_id, False)
        if self._node.view.shard_map.my_role == "master":
            await self._node.server.delete(self._key(session_id))
        self._node.registrations_changed()

    async def unregister(self, reg_id: str, abort_pending: bool) -> bool:
        """Remove one registration here; ``False`` when this shard does not have it."""
        outcome = await self.worker_of(reg_id).call(WorkerCall.UNREGISTER, reg_id, abort_pending)
        if outcome is None:
            return False
        record = self.sessions.get(outcome["session"])
        if record is not None:
            record.removed.append(reg_id)
            record.metas = [m for m in record.metas if m["id"] != reg_id]
            if self._node.view.shard_map.my_role == "master":
                if record.active:
                    await self._node.server.hset(self._key(record.id), "removed", json.dumps(record.removed))
                else:
                    await self._node.server.delete(self._key(record.id))
            if not record.active:
                del self.sessions[record.id]
        self._node.registrations_changed()
        return True

    async def load(self) -> None:
        """Apply every session stored in this shard's server node (node or worker start).

        A replica holds the sessions too (replicated): in cluster mode they are read with
        ``READONLY``, whatever role the node last saw, so a node starts beside a server
        whatever its role, and also beside a restarted old master that turns replica
        while it reads (``READONLY`` changes nothing on a master)."""
        node = self._node
        prefix = SESSION_PATTERN % node.view.shard_map.hashtag
        readonly = node.view.server_cluster_enabled
        server = node.replica_reads() if readonly else node.server
        stored: list[SessionRecord] = []
        try:
            if readonly:
                await server.execute_command("READONLY")
            async for key in server.scan_iter(match=prefix, count=1000):
                fields = await server.hgetall(key)
                if fields:
                    session_id = key.decode().rsplit(":", 1)[1]
                    stored.append(SessionRecord.from_hash(session_id, fields))
        finally:
            if readonly:
                await server.aclose()
        for record in stored:
            known = self.sessions.get(record.id)
            if known is not None and (known.blob, known.removed) == (record.blob, record.removed):
                continue  # already running here (a replica's node being promoted)
            try:
                await self.apply(record, None)
            except Exception as exc:  # noqa: BLE001 - one broken session must not stop the others
                log.error("could not restore session %s: %s", record.id, exc)

    async def reapply(self, environment: Environment) -> None:
        """Give a restarted worker of ``environment`` its sessions again (``restored`` is
        set only if that same worker is still running when all are back)."""
        worker = self._node.workers.get(environment.key)
        if worker is None:
            return
        pid = worker.pid
        for record in [r for r in self.sessions.values() if r.environment == environment]:
            try:
                record.metas = await worker.call(WorkerCall.APPLY_SESSION, record.to_worker(), None)
            except Exception as exc:  # noqa: BLE001
                log.error("could not restore session %s in the new worker: %s", record.id, exc)
        self._node.registrations_changed()
        if worker.pid == pid and worker.alive:
            self.restored.set()

    def metas(self) -> list[dict[str, Any]]:
        """Every active registration's description (reader, mode, options)."""
        return [meta for record in self.sessions.values() for meta in record.metas]

    def max_registration_seq(self) -> int:
        """The highest registration sequence number in use (ids are ``<shard>-<n>``)."""
        numbers = [int(r.rsplit("-", 1)[1]) for s in self.sessions.values() for r in s.registrations if r.rsplit("-", 1)[1].isdigit()]
        return max(numbers, default=0)

    def dump(self, names: list[str] | None, verbose: bool, registrations: list[Any]) -> list[Any]:
        """``RG.PYDUMPSESSIONS`` entries."""
        by_id = {entry[1]: entry for entry in registrations}
        out: list[Any] = []
        for name in names if names is not None else list(self.sessions):
            record = self.sessions.get(name)
            if record is None:
                out.append(f"Session {name} does not exists")
                continue
            regs: list[Any] = record.active
            requirement_list: list[Any] = list(record.requirements)
            if verbose:
                regs = [by_id[r][:8] + by_id[r][10:] for r in record.active if r in by_id]
                if record.requirements:
                    installed = RequirementSet.for_requirements(record.requirements, self._node.requirements_root)
                    requirement_list = dump_entries(installed)
            out.append([
                "ID", record.id, "sessionDescription", record.description, "refCount", 1, "linked", "primary",
                "dead", "false", "requirementInstallationNeeded", 0, "requirements", requirement_list,
                "registrations", regs,
            ])
        return out
