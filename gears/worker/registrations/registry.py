"""The registrations of one shard, inside its worker.

Sessions arrive as pickled lists of :class:`~gears.engine.registration.Registration` (see
docs/triggers.md). Applying one is all-or-nothing: everything is deserialized and checked
before the old registrations of a replaced session stop and the new ones start.
KeysReader events come from the :class:`~gears.worker.registrations.key_events.NotificationListener`;
each registration runs in its own :class:`~gears.worker.registrations.key_events.Dispatcher`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import cloudpickle

from gears_readers.keys import read_keys

from gears.wire.protocol import ToNode
from gears.engine.records import GearsScriptError, to_reply
from gears.wire.resp import ErrorValue
from gears.engine.registration import Registration, dump_entry
from gears.wire.workerstats import RegistrationSample
from gears.wire.serverconn import ConnectionPerThread, ServerEndpoint, ServerUnavailable
from gears.worker.context import CommandContext, Session, thread_context
from gears.worker.registrations.triggered import TriggeredExecution
from gears.worker.registrations.failure_log import FailureLog
from gears.worker.registrations.stream_consumers import StreamConsumer
from gears.worker.registrations.key_events import Dispatcher, EventReader, NotificationListener, RecordsReader

if TYPE_CHECKING:  # pragma: no cover
    from gears.worker.services import WorkerServices

__all__ = ["Registry"]

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 10000


class Registry:
    """Sessions, registrations and their dispatchers on this shard."""

    def __init__(self, process: "WorkerServices", server: ServerEndpoint) -> None:
        self._process = process
        self._server = server
        self._reads = ConnectionPerThread(server, decode=True)
        self.sessions: dict[str, dict[str, Any]] = {}
        self.registrations: dict[str, Registration] = {}
        self.dispatchers: dict[str, Dispatcher] = {}
        self.consumers: dict[str, StreamConsumer] = {}
        self.history: dict[str, deque[TriggeredExecution]] = {}
        self._listener: NotificationListener | None = None
        self._inorder: dict[str, threading.Lock] = {}
        self._lock = threading.RLock()
        #: ``(registration id, stream) -> {entry id: crashes}``: how often the worker died
        #: running a stream entry (kept by the node across worker restarts).
        self.crashes: dict[tuple[str, str], dict[str, int]] = {}
        self.failure_log = FailureLog()

    # -------------------------------------------------------------- sessions
    def apply(self, session: dict[str, Any], replaces: str | None) -> list[dict[str, Any]]:
        """Install a session (replacing ``replaces``); return what the node needs of each registration."""
        registrations: list[Registration] = cloudpickle.loads(session["blob"])
        with self._lock:
            old_ids = set(self.sessions.get(replaces, {}).get("registrations", [])) if replaces else set()
            old_ids |= set(self.sessions.get(session["id"], {}).get("registrations", []))
            for reg in registrations:
                self._check_hook(reg, registrations, old_ids)
                trigger = reg.options.get("trigger")
                if trigger is None:
                    continue
                clash = next(
                    (r for r in self.registrations.values() if r.options.get("trigger") == trigger and r.id not in old_ids),
                    None,
                )
                if clash is not None:
                    raise GearsScriptError("trigger already registered")
            for old in old_ids:
                self._remove(old, abort_pending=False)
            self.sessions.pop(replaces or "", None)
            removed = set(session.get("removed", []))
            active = [r for r in registrations if r.id not in removed]
            for reg in active:
                reg.session_id = session["id"]
                self._add(reg)
            self.sessions[session["id"]] = {
                "id": session["id"],
                "description": session.get("description"),
                "requirements": session.get("requirements", []),
                "registrations": [r.id for r in active],
                "session": Session(session["id"], session.get("description"), {}, user=session.get("user")),
            }
        for reg in active:
            self._call_on_registered(reg)
        return [self._meta(reg) for reg in active]

    def _check_hook(self, reg: Registration, new: list[Registration], replaced: set[str]) -> None:
        """Hooks stack (the last one runs first) only over ``sync`` hooks of other sessions."""
        hook = reg.options.get("hook")
        if hook is None:
            return
        if any(other is not reg and other.options.get("hook") == hook for other in new):
            raise GearsScriptError("Can not override a command which already created on this session")
        for other in self.registrations.values():
            if other.id not in replaced and other.options.get("hook") == hook and other.mode != "sync":
                raise GearsScriptError("Can not override a none sync registration")

    def _add(self, reg: Registration) -> None:
        self.registrations[reg.id] = reg
        self.history[reg.id] = deque(maxlen=int(self._process.config.get("MaxExecutionsPerRegistration", 100)))
        if reg.reader == "KeysReader" and reg.mode != "sync" and not reg.options["commands"]:
            max_pending = int(self._process.config.get("extra", {}).get("MaxPendingEvents", DEFAULT_MAX_PENDING))
            self.dispatchers[reg.id] = Dispatcher(reg, self._run_key_event, max_pending, self._reads.wait_reachable)
        if reg.reader == "StreamReader" and self._is_master():
            self._start_consumer(reg)
        if reg.reader in ("KeysReader", "StreamReader"):
            self._ensure_listener()

    def _is_master(self) -> bool:
        return self._process.shard_map.my_role == "master"

    def _start_consumer(self, reg: Registration) -> None:
        self.consumers[reg.id] = StreamConsumer(
            reg,
            self._server,
            self._process.shard_map.my_id,
            self.run,
            self._is_master,
            self._in_flight,
            self._crash_count,
        )

    def promoted(self) -> None:
        """This shard's server became a master: its stream registrations start consuming
        (claiming what the previous master left pending); key events are handled from now on."""
        with self._lock:
            for reg in self.registrations.values():
                if reg.reader == "StreamReader" and reg.id not in self.consumers:
                    self._start_consumer(reg)
            for consumer in self.consumers.values():
                consumer.resume()

    def _in_flight(self, reg_id: str, stream: str, entry_ids: list[str]) -> None:
        """Tell the node which stream entries a batch is running (it counts them if the worker dies)."""
        self._process.channel.send(ToNode.IN_FLIGHT, reg_id, stream, entry_ids)

    def _crash_count(self, reg_id: str, stream: str, entry_id: str) -> int:
        return self.crashes.get((reg_id, stream), {}).get(entry_id, 0)

    def _remove(self, reg_id: str, abort_pending: bool) -> None:
        self.registrations.pop(reg_id, None)
        dispatcher = self.dispatchers.pop(reg_id, None)
        if dispatcher is not None:
            dispatcher.stop(abort_pending)
        consumer = self.consumers.pop(reg_id, None)
        if consumer is not None:
            consumer.stop()
        self.failure_log.forget(reg_id)

    def unregister(self, reg_id: str, abort_pending: bool) -> dict[str, Any] | None:
        """Remove one registration; returns its session's remaining state (``None`` if unknown)."""
        with self._lock:
            reg = self.registrations.get(reg_id)
            if reg is None:
                return None
            self._remove(reg_id, abort_pending)
            session = self.sessions[reg.session_id]
            session["registrations"] = [r for r in session["registrations"] if r != reg_id]
            if not session["registrations"]:
                del self.sessions[reg.session_id]
            return {"session": reg.session_id, "left": list(session["registrations"])}

    def _call_on_registered(self, reg: Registration) -> None:
        if reg.on_registered is None:
            return
        thread_context.session = self.sessions[reg.session_id]["session"]
        try:
            reg.on_registered()
        except Exception:  # noqa: BLE001 - errors in onRegistered are only logged, as in RedisGears
            log.exception("onRegistered of registration %s failed", reg.id)
        finally:
            thread_context.session = None

    @staticmethod
    def _meta(reg: Registration) -> dict[str, Any]:
        return {"id": reg.id, "reader": reg.reader, "mode": reg.mode, **reg.options}

    # ---------------------------------------------------------------- events
    def _ensure_listener(self) -> None:
        if self._listener is None:
            self._listener = NotificationListener(
                self._server, self.on_key_event, self._on_outage, self._on_resumed
            )

    def _on_outage(self, reason: str) -> None:
        """The server node went away: every registration of the shard records the outage."""
        for reg in list(self.registrations.values()):
            reg.stats.outage(reason)

    def _on_resumed(self) -> None:
        """Notifications flow again: stream consumers look for what arrived meanwhile."""
        for consumer in list(self.consumers.values()):
            consumer.resume()

    def on_key_event(self, key: str, event: str) -> None:
        """A keyevent notification: queue it for every matching registration."""
        if not self._is_master():
            return
        if event == "xadd":
            for consumer in list(self.consumers.values()):
                if consumer.registration.matches_key(key):
                    consumer.notify(key)
        for reg in list(self.registrations.values()):
            if reg.reader != "KeysReader" or reg.options["commands"] or not reg.matches_key(key):
                continue
            event_types = reg.options["eventTypes"]
            if event_types is not None and event not in event_types:
                continue
            if reg.mode == "sync":
                self._run_key_event(reg, (key, event))
            else:
                dispatcher = self.dispatchers.get(reg.id)
                if dispatcher is not None:
                    dispatcher.offer((key, event))

    def barrier(self) -> bool:
        """Wait until sync registrations handled every event the server sent so far."""
        return self._listener.barrier() if self._listener is not None else True

    def _run_key_event(self, reg: Registration, event: tuple[str, str]) -> None:
        key, name = event
        if reg.options["readValue"] or reg.options["keyTypes"]:
            record = read_keys(self._reads.get(), [key], name)[0]
            key_types = reg.options["keyTypes"]
            if key_types is not None and record["type"] not in key_types:
                return
            if not reg.options["readValue"]:
                record = {"key": key, "event": name}
        else:
            record = {"key": key, "event": name}
        outcome = self.run(reg, [record])
        if outcome.server_lost:
            raise ServerUnavailable(outcome.errors[0] if outcome.errors else "server node unavailable")

    def run(
        self, reg: Registration, records: list[Any], *, everywhere: bool = False, local: bool = False
    ) -> TriggeredExecution:
        """Run ``reg``'s flow over ``records``: on this shard, or cluster-wide in ``async``
        mode (``local=True`` keeps it here: command-bound executions)."""
        process = self._process
        reg.stats.triggered += 1
        reg.stats.triggered_total += 1
        started = time.perf_counter()
        session = self.sessions.get(reg.session_id, {}).get("session")
        if reg.mode == "async" and process.shard_map.cluster_mode and not local:
            execution = process.start_execution(
                reg.plan,
                EventReader(records, process.shard_map.my_index, everywhere),
                "async",
                session,
                registration={"id": reg.id, "records": records if everywhere else [], "everywhere": everywhere},
            )
            execution.done.wait()
        else:
            execution = process.local_execution(reg.plan, RecordsReader(records), session)
        outcome = TriggeredExecution(execution.id)
        outcome.status, outcome.results, outcome.errors = execution.status, execution.results, execution.errors
        outcome.server_lost = execution.server_lost
        reg.stats.finished(started, execution.errors, execution.server_lost)
        if execution.errors and not execution.server_lost:
            self.failure_log.report(reg.id, execution.errors[0])
        if not execution.distributed:  # distributed ones are listed by the node
            self._keep(reg.id, outcome)
        return outcome

    def _keep(self, reg_id: str, outcome: TriggeredExecution) -> None:
        """List a finished local execution under its registration; beyond ``MaxExecutions``
        kept in this worker, the oldest leave (the node trims its whole list to it too)."""
        with self._lock:
            self.history[reg_id].append(outcome)
            limit = int(self._process.config.get("MaxExecutions", 1000))
            while sum(len(history) for history in self.history.values()) > limit:
                oldest = min((h for h in self.history.values() if h), key=lambda h: h[0].created)
                oldest.popleft()

    def command_event(self, reg_id: str, key: str, event: str, argv: list[str]) -> Any:
        """A front-door command found no key: run the read-through registration; the
        ``override_reply`` value (or the first error) replaces the reply (``None``: keep it)."""
        reg = self.registrations.get(reg_id)
        if reg is None:
            return None
        record = read_keys(self._reads.get(), [key], event)[0] if reg.options["readValue"] else {"key": key, "event": event}
        ctx = CommandContext(argv)
        thread_context.command = ctx
        try:
            outcome = self.run(reg, [record], local=True)
        finally:
            thread_context.command = None
        if ctx.overridden:
            return to_reply(ctx.value)
        if outcome.errors:
            return ErrorValue(outcome.errors[0])
        return None

    def hook(self, reg_id: str, argv: list[str], context_id: int) -> tuple[list[Any], list[str]]:
        """Run a command hook; its results (reply-mapped) and errors."""
        reg = self.registrations.get(reg_id)
        if reg is None:
            raise GearsScriptError("Can not get CommandHook ctx")
        thread_context.command = CommandContext(argv, hook=context_id)
        try:
            outcome = self.run(reg, [argv], local=True)
        finally:
            thread_context.command = None
        return [to_reply(r) for r in outcome.results], outcome.errors

    def trigger(self, name: str, args: list[str]) -> TriggeredExecution:
        """``RG.TRIGGER name args...`` (``inorder`` registrations run one call at a time)."""
        reg = next((r for r in self.registrations.values() if r.options.get("trigger") == name), None)
        if reg is None:
            raise GearsScriptError("subcommand not found")
        if not reg.options["inorder"]:
            return self.run(reg, [[name, *args]], everywhere=True)
        with self._inorder.setdefault(reg.id, threading.Lock()):
            return self.run(reg, [[name, *args]], everywhere=True)

    # ------------------------------------------------------------- reporting
    def dump(self) -> list[Any]:
        """``RG.DUMPREGISTRATIONS`` entries of this shard."""
        with self._lock:
            return [
                dump_entry(reg, {k: v for k, v in self.sessions[reg.session_id].items() if k != "session"})
                for reg in self.registrations.values()
            ]

    def samples(self) -> tuple[RegistrationSample, ...]:
        """The metrics of every registration of this shard."""
        with self._lock:
            return tuple(
                RegistrationSample(reg.id, reg.reader, reg.stats.triggered_total, reg.stats.failures_total,
                                   reg.stats.last_lag_ms / 1000)
                for reg in self.registrations.values()
            )

    def executions(self) -> list[tuple[float, list[Any]]]:
        """``RG.DUMPEXECUTIONS`` entries of triggered executions kept per registration,
        each with the time it was kept."""
        with self._lock:
            return [
                (e.created, ["executionId", e.id, "status", e.status, "registered", 1])
                for history in self.history.values()
                for e in list(history)
            ]

    def _kept(self, exec_id: str) -> tuple[deque[TriggeredExecution], TriggeredExecution] | None:
        for history in self.history.values():
            for outcome in list(history):
                if outcome.id == exec_id:
                    return history, outcome
        return None

    def execution(self, exec_id: str) -> tuple[str, list[Any], list[str]] | None:
        """A kept triggered execution's ``(status, results, errors)`` (``None``: not kept here)."""
        found = self._kept(exec_id)
        if found is None:
            return None
        outcome = found[1]
        return outcome.status, list(outcome.results), list(outcome.errors)

    def drop_execution(self, exec_id: str) -> bool:
        """``RG.DROPEXECUTION`` of a kept triggered execution (every kept one has finished);
        whether it was kept here."""
        found = self._kept(exec_id)
        if found is None:
            return False
        found[0].remove(found[1])
        return True

    def pause(self, reg_id: str, pause: bool) -> None:
        """``RG.PAUSEREGISTRATIONS`` / ``RG.UNPAUSEREGISTRATIONS`` on this shard."""
        reg = self.registrations.get(reg_id)
        if reg is None:
            raise GearsScriptError(f"Execution {reg_id} does not exists on shard {self._process.shard_map.my_id}")
        if reg.reader != "StreamReader":
            raise GearsScriptError(f"Reader {reg.reader} does not support {'pause' if pause else 'unpause'}")
        consumer = self.consumers.get(reg_id)
        if consumer is None:
            reg.status = "PAUSED" if pause else "OK"
        elif pause:
            consumer.pause()
        else:
            consumer.unpause()

    def clear_stats(self) -> None:
        """``RG.CLEARREGISTRATIONSSTATS`` on this shard."""
        for reg in self.registrations.values():
            reg.stats.clear()
