"""The worker process: runs every session's Python code for one gears node.

It receives requests from its node over a :class:`~gears.wire.ipc.ThreadChannel`:

=====================  =======================================================
``pyexecute`` (call)   run a script in a new session; start its ``run()``
``prepare`` (call)     accept another shard's plan for an execution
``run``                start a prepared execution
``records`` / ``done`` records (or an end marker) for a waiting execution step
``abort``              abort an execution
``config``             new configuration values
``crashes``            stream entries that crashed earlier workers (poison isolation)
``topology``           a new :class:`~gears.engine.shards.ShardMap`
``metrics`` (call)     what this worker counted (:class:`~gears.wire.workerstats.WorkerStats`)
``in_use`` (call)      whether it still has registrations, executions or time events
=====================  =======================================================

and sends ``send``/``send_done`` (records for other shards), ``finished``,
``in_flight`` (the stream entries a batch is running) and ``timer_environments`` (the
other user environments' stored time events). It asks the node for ``execution_ids``
(a block of execution sequence numbers: a node runs one worker per user environment,
see :mod:`gears.node.worker_pool`, and their ids must not collide).

A worker serves one user environment: the requirement set it was started for
(``requirements``; empty for the base environment) is on its ``sys.path`` from the start,
and nothing else installed on the host is.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import sys
import threading
import uuid
from typing import Any, Callable, Iterator

import cloudpickle
import hiredis

from gears.engine.shards import ShardMap
from gears_readers.base import Reader

from gears.engine.api import redisgears_module, script_globals
from gears.engine.plan import Plan
from gears.errors import GearsError, ScriptError
from gears.engine.host_protocol import install_host
from gears.wire.ipc import ThreadChannel
from gears.wire.protocol import Handlers, NodeCall, ToNode, ToWorker, UnknownMessage, WorkerCall
from gears.engine.operations import error_text
from gears.wire.serverconn import ConnectionPerThread, ServerEndpoint
from gears.wire.workerstats import WorkerStats
from gears.engine.records import GearsScriptError, to_reply
from gears.worker.execution import LocalExecution
from gears.worker.context import ScriptState, Session, thread_context
from gears.worker.worker_host import WorkerHost, carry_user_into_threads
from gears.worker.registrations.registry import Registry
from gears.worker.registrations.time_events import TimeEvents
from gears.worker.registrations.key_events import EventReader

__all__ = ["WorkerProcess"]

log = logging.getLogger(__name__)

_FINISHED_MEMORY = 10000


class WorkerProcess:
    """State and message handling of one worker process."""

    def __init__(
        self,
        channel: ThreadChannel,
        server: ServerEndpoint,
        frontdoor: ServerEndpoint,
        node_user: str,
        requirements: tuple[str, ...] = (),
    ) -> None:
        """``server``: the local server node; ``frontdoor``: this node's front door (the
        worker's ``execute()`` of ``RG.*``/``AI.*`` goes there); both with the worker's login.
        ``requirements``: the requirement set of this worker's user environment."""
        self.channel = channel
        self.requirements = requirements
        #: The ACL user of the gears node: code started by it needs no per-command check.
        self.node_user = node_user
        self.server = ConnectionPerThread(server)
        self.frontdoor = ConnectionPerThread(frontdoor)
        self.config: dict[str, Any] = {"ExecutionMaxIdleTime": 5000, "PythonAttemptTraceback": 1, "extra": {}}
        self.shard_map = ShardMap.standalone()
        self.executions: dict[str, LocalExecution] = {}
        self._early: dict[str, list[tuple[str, int, int, bytes | None]]] = collections.defaultdict(list)
        self._finished: collections.deque[str] = collections.deque(maxlen=_FINISHED_MEMORY)
        self._lock = threading.Lock()
        self.slots = threading.Semaphore(int(os.environ.get("GEARS_EXECUTION_THREADS", "3")))
        #: The rest of the block of execution sequence numbers the node gave this worker.
        self._exec_seqs: Iterator[int] = iter(())
        self._ids_lock = threading.Lock()
        self.registry = Registry(self, server)
        self.timers = TimeEvents(
            self.server, lambda: self.shard_map.hashtag, self._call_in_session, requirements,
            lambda others: self.channel.send(ToNode.TIMER_ENVIRONMENTS, others),
        )
        self._timers_loaded = False
        self._ai: Any = None
        #: Outcomes of the executions that ran only here (``local_execution``).
        self._local_outcomes: collections.Counter[str] = collections.Counter()
        install_host(WorkerHost(self))
        carry_user_into_threads()
        redisgears_module()  # shipped functions may reference it by name
        sys.modules["redisAI"] = _lazy_redisai()

    # --------------------------------------------------------------- messages
    def handle_message(self, kind: str, *args: Any) -> None:
        """One-way messages from the node (never blocks; :class:`~gears.wire.protocol.ToWorker`)."""
        try:
            _MESSAGES.dispatch(self, kind, args)
        except UnknownMessage as exc:
            log.warning("%s", exc)

    def handle_call(self, kind: str, *args: Any) -> Any:
        """Requests from the node, each on its own thread (:class:`~gears.wire.protocol.WorkerCall`)."""
        return _CALLS.dispatch(self, kind, args)

    def deliver(self, kind: str, exec_id: str, step: int, from_index: int, blob: bytes | None = None) -> None:
        """Records (or a step's end marker) from another shard for an execution here; kept
        until the execution is prepared when they come first."""
        with self._lock:
            execution = self.executions.get(exec_id)
            if execution is None:
                if exec_id not in self._finished:
                    self._early[exec_id].append((kind, step, from_index, blob))
                return
        execution.deliver(kind, step, from_index, blob)

    def set_topology(self, shard_map: ShardMap) -> None:
        """A new topology: a promotion takes over the stream registrations and time events."""
        was_master = self.shard_map.my_role == "master"
        self.shard_map = shard_map
        if shard_map.my_role == "master" and not was_master:
            self.registry.promoted()
        if shard_map.my_role == "master" and not self._timers_loaded:
            self._timers_loaded = True
            threading.Thread(target=self.timers.load, name="load-timers", daemon=True).start()

    # ---------------------------------------------------------------- scripts
    def pyexecute(self, script: str, session_id: str | None, description: str | None, user: str) -> dict[str, Any]:
        session = Session(session_id or uuid.uuid4().hex + uuid.uuid4().hex[:8], description, script_globals(), user=user)
        state = ScriptState()
        thread_context.session, thread_context.script = session, state
        try:
            code = compile(script, "<string>", "exec")
        except SyntaxError as exc:  # no user traceback exists for a script that did not compile
            raise ScriptError(error_text(exc, False)) from None
        finally:
            thread_context.script = state
        try:
            exec(code, session.globals)
        except Exception as exc:  # noqa: BLE001 - the script's error is the reply
            raise ScriptError(error_text(exc, bool(self.config.get("PythonAttemptTraceback", 1)))) from None
        finally:
            thread_context.session, thread_context.script = None, None
        outcome: dict[str, Any] = {"execution_id": None, "session": None}
        if state.registrations:
            outcome["session"] = {
                "id": session.id,
                "description": description,
                "blob": _serialize_registrations(state.registrations),
                "registrations": [r.id for r in state.registrations],
                "user": user,
            }
        if state.run is not None:
            plan, reader, mode = state.run
            execution = self.start_execution(plan, reader, mode, session, start=False)
            outcome["execution_id"] = execution.id
            self.channel.after_answer(execution.start)  # code held in C must not hold back the id
        return outcome

    @property
    def ai_started(self) -> bool:
        """Whether the model-serving service exists in this worker yet."""
        return self._ai is not None

    @property
    def ai(self) -> Any:
        """The shard's model-serving service (created on first use: it imports numpy and the backends)."""
        if self._ai is None:
            from gears.ai.backends import set_parallelism
            from gears.ai.service import AIService

            set_parallelism(self._ai_setting("INTRA_OP_PARALLELISM", 0), self._ai_setting("INTER_OP_PARALLELISM", 0))
            self._ai = AIService(self.server, max(1, self._ai_setting("THREADS_PER_QUEUE", 1)))
        return self._ai

    def _ai_setting(self, name: str, default: int) -> int:
        """A whole-number model-serving setting from the node's ``--config`` (``default`` when unset or invalid)."""
        text = self.config.get("extra", {}).get(name)
        if text is None:
            return default
        if not str(text).isdigit():
            log.warning("%s=%r is not a whole number: using %d", name, text, default)
            return default
        return int(text)

    def start_call(self, kind: str, args: tuple[Any, ...], answer: Callable[[bool, Any], None]) -> bool:
        """Requests started on the channel's reading thread (True when taken; see
        :meth:`ThreadChannel.serve`): ``AI.MODELEXECUTE`` of a loaded model reads its
        inputs there and queues the run, so no pool thread sits between the node and
        the run queue."""
        if kind == WorkerCall.AI_MODEL_EXECUTE and self._ai is not None:
            return self._ai.start_model_execute(*args, answer, may_load=False)
        return False

    @staticmethod
    def _call_in_session(fn: Any, user: str | None) -> Any:
        """Run a time event's function with a session (as ``user``), so it may build and run flows."""
        thread_context.session = Session("time-event", None, getattr(fn, "__globals__", {}), user=user)
        try:
            return fn()
        finally:
            thread_context.session = None

    def new_registration_id(self) -> str:
        """A registration id from the node (unique in the cluster, stable across restarts)."""
        return self.channel.call(NodeCall.REGISTRATION_ID)

    def new_execution_id(self) -> str:
        """The next execution id of this shard (from the node's blocks of sequence numbers)."""
        with self._ids_lock:  # not self._lock: the channel's reading thread takes that one
            seq = next(self._exec_seqs, None)
            if seq is None:
                start, count = self.channel.call(NodeCall.EXECUTION_IDS)
                self._exec_seqs = iter(range(start, start + count))
                seq = next(self._exec_seqs)
        return f"{self.shard_map.my_id}-{seq}"

    def in_use(self) -> bool:
        """Whether this worker has registrations, executions or time events (a set's
        worker that has none may be stopped)."""
        with self._lock:
            running = bool(self.executions)
        return running or bool(self.registry.registrations) or self.timers.active

    # ------------------------------------------------------------- executions
    def start_execution(
        self,
        plan: Plan,
        reader: Reader,
        mode: str,
        session: Session | None,
        *,
        registration: dict[str, Any] | None = None,
        start: bool = True,
    ) -> LocalExecution:
        """Start an execution this shard initiates (``run()``, or a triggered ``async`` one).

        A registration's execution ships no plan: the other shards run their own copy
        of the registration (``registration`` says which, and with which records). With
        ``start=False`` the node knows of it but its thread is the caller's to start."""
        distributed = mode == "async" and self.shard_map.cluster_mode
        blob = None
        if distributed and registration is None:
            blob = _serialize_plan(plan, reader)
        exec_id = self.new_execution_id()
        meta = {
            "id": exec_id,
            "mode": mode,
            "steps": [step.describe() for step in plan.steps],
            "session": session.id if session else None,
            "distributed": distributed,
            "registration": registration,
            "user": session.user if session else None,
        }
        execution = self._new_execution(exec_id, plan, reader, self.shard_map.my_index, distributed, session)
        self.channel.call(NodeCall.START_EXECUTION, blob, meta)
        if start:
            execution.start()
        return execution

    def local_execution(self, plan: Plan, reader: Reader, session: Session | None) -> LocalExecution:
        """Run an execution on this shard only, in the calling thread (triggered executions)."""
        execution = self._new_execution(
            self.new_execution_id(), plan, reader, self.shard_map.my_index, False, session, exchange=_QUIET
        )
        execution.run_here()
        outcome = "aborted" if execution.status == "aborted" else "error" if execution.errors else "ok"
        with self._lock:
            self._local_outcomes[outcome] += 1
        return execution

    def metrics(self) -> WorkerStats:
        """What this worker counted, for the node's metrics (see :mod:`gears.wire.workerstats`)."""
        with self._lock:
            executions = dict(self._local_outcomes)
        stats = WorkerStats(executions=executions, registrations=self.registry.samples())
        if self._ai is None:
            return stats
        runner = self._ai.runner
        return dataclasses.replace(
            stats, ai_runs=runner.metrics.runs(), ai_durations=runner.metrics.durations(),
            ai_queue_depth=runner.queue_depths(), ai_batch_sizes=runner.metrics.batch_sizes.snapshot(),
        )

    def prepare(self, exec_id: str, blob: bytes | None, initiator_index: int, meta: dict[str, Any]) -> bool:
        registration = meta.get("registration")
        if registration is not None:
            reg = self.registry.registrations.get(registration["id"])
            if reg is None:
                raise ScriptError(f"registration {registration['id']} is not known on this shard")
            plan = reg.plan
            reader: Reader = EventReader(registration["records"], initiator_index, registration["everywhere"])
        else:
            plan, reader = cloudpickle.loads(blob)
        self._new_execution(exec_id, plan, reader, initiator_index, True, None, user=meta.get("user"))
        return True

    def _new_execution(
        self,
        exec_id: str,
        plan: Plan,
        reader: Reader,
        initiator_index: int,
        distributed: bool,
        session: Session | None,
        exchange: Any = None,
        user: str | None = None,
    ) -> LocalExecution:
        execution = LocalExecution(
            exec_id,
            plan,
            reader,
            shard_map=self.shard_map,
            initiator_index=initiator_index,
            distributed=distributed,
            exchange=exchange or self,
            connection=self.server.get,
            slots=self.slots,
            max_idle_ms=lambda: int(self.config.get("ExecutionMaxIdleTime", 5000)),
            with_traceback=lambda: bool(int(self.config.get("PythonAttemptTraceback", 1))),
            session=session,
            user=session.user if session is not None else user,
        )
        if exchange is not None:
            return execution
        with self._lock:
            self.executions[exec_id] = execution
            early = self._early.pop(exec_id, [])
        for kind, step, from_index, blob in early:
            execution.deliver(kind, step, from_index, blob)
        return execution

    # ---------------------------------------------------------------- access
    def check_access(self, user: str | None, args: tuple[Any, ...]) -> None:
        """Raise the server's ``NOPERM`` error unless ``user`` may run ``args`` (see
        :mod:`gears.node.access`): ``ACL DRYRUN`` on the worker's own connection, or, for
        ``RG.*``/``AI.*``, the node's check. Code of the node's own user is not checked."""
        if user is None or user == self.node_user or not args:
            return
        if str(args[0]).upper().startswith(("RG.", "AI.")):
            words = [a if isinstance(a, bytes) else str(a).encode("utf-8", "surrogateescape") for a in args]
            try:
                self.channel.call(NodeCall.AUTHORIZE, user, words)
            except GearsError as exc:
                raise GearsScriptError(exc.reply_text()) from None
            return
        denied = self.denied(user, [args])
        if denied:
            raise GearsScriptError(denied[0])

    def denied(self, user: str | None, commands: list[tuple[Any, ...]]) -> dict[int, str]:
        """The server's refusal of each command ``user`` may not run (by index; one
        pipelined round trip of ``ACL DRYRUN``)."""
        if user is None or user == self.node_user or not commands:
            return {}
        verdicts = self.server.get().pipeline([("ACL", "DRYRUN", user, *command) for command in commands])
        refused = {}
        for i, verdict in enumerate(verdicts):
            if isinstance(verdict, hiredis.ReplyError):
                refused[i] = str(verdict)
            elif verdict not in (b"OK", "OK"):
                text = verdict.decode("utf-8", "replace") if isinstance(verdict, bytes) else str(verdict)
                refused[i] = "NOPERM " + text
        return refused

    # --------------------------------------------------------------- Exchange
    def send_records(self, exec_id: str, step: int, target: int, blob: bytes) -> None:
        self.channel.send(ToNode.RECORDS, exec_id, step, target, blob)

    def send_done(self, exec_id: str, step: int, targets: list[int]) -> None:
        self.channel.send(ToNode.DONE, exec_id, step, targets)

    def finished(self, execution: LocalExecution) -> None:
        with self._lock:
            self.executions.pop(execution.id, None)
            self._finished.append(execution.id)
        results = execution.reply_results() if execution.is_initiator else []
        stats = {"total_ms": execution.total_ms, "read_ms": execution.read_ms, "results": len(execution.results)}
        self.channel.send(ToNode.FINISHED, execution.id, execution.status, results, execution.errors, stats)


# ------------------------------------------------------------------ the node's messages
_MESSAGES: Handlers[ToWorker] = Handlers(ToWorker)
_CALLS: Handlers[WorkerCall] = Handlers(WorkerCall)


@_MESSAGES.on(ToWorker.RECORDS)
def _records(worker: WorkerProcess, exec_id: str, step: int, from_index: int, blob: bytes) -> None:
    worker.deliver("records", exec_id, step, from_index, blob)


@_MESSAGES.on(ToWorker.DONE)
def _done(worker: WorkerProcess, exec_id: str, step: int, from_index: int) -> None:
    worker.deliver("done", exec_id, step, from_index)


@_MESSAGES.on(ToWorker.RUN)
def _run(worker: WorkerProcess, exec_id: str) -> None:
    execution = worker.executions.get(exec_id)
    if execution is not None:
        execution.start()


@_MESSAGES.on(ToWorker.ABORT)
def _abort(worker: WorkerProcess, exec_id: str) -> None:
    execution = worker.executions.get(exec_id)
    if execution is not None:
        execution.abort()


@_MESSAGES.on(ToWorker.CONFIG)
def _config(worker: WorkerProcess, values: dict[str, Any]) -> None:
    worker.config.update(values)


@_MESSAGES.on(ToWorker.TOPOLOGY)
def _topology(worker: WorkerProcess, shard_map: ShardMap) -> None:
    worker.set_topology(shard_map)


@_MESSAGES.on(ToWorker.CRASHES)
def _crashes(worker: WorkerProcess, counts: dict[tuple[str, str], dict[str, int]]) -> None:
    worker.registry.crashes = counts


@_MESSAGES.on(ToWorker.AI_FORGET)
def _ai_forget(worker: WorkerProcess, key: str) -> None:
    if worker.ai_started:
        worker.ai.forget(key)


_CALLS.on(WorkerCall.PYEXECUTE)(lambda worker, *args: worker.pyexecute(*args))
_CALLS.on(WorkerCall.PREPARE)(lambda worker, *args: worker.prepare(*args))
_CALLS.on(WorkerCall.APPLY_SESSION)(lambda worker, *args: worker.registry.apply(*args))
_CALLS.on(WorkerCall.UNREGISTER)(lambda worker, *args: worker.registry.unregister(*args))
_CALLS.on(WorkerCall.DUMP_REGISTRATIONS)(lambda worker: worker.registry.dump())
_CALLS.on(WorkerCall.REGISTERED_EXECUTIONS)(lambda worker: worker.registry.executions())
_CALLS.on(WorkerCall.REGISTERED_EXECUTION)(lambda worker, exec_id: worker.registry.execution(exec_id))
_CALLS.on(WorkerCall.DROP_REGISTERED_EXECUTION)(lambda worker, exec_id: worker.registry.drop_execution(exec_id))
_CALLS.on(WorkerCall.CLEAR_STATS)(lambda worker: worker.registry.clear_stats())
_CALLS.on(WorkerCall.BARRIER)(lambda worker: worker.registry.barrier())
_CALLS.on(WorkerCall.PAUSE)(lambda worker, *args: worker.registry.pause(*args))
_CALLS.on(WorkerCall.COMMAND_EVENT)(lambda worker, *args: worker.registry.command_event(*args))
_CALLS.on(WorkerCall.HOOK)(lambda worker, *args: worker.registry.hook(*args))
_CALLS.on(WorkerCall.PING)(lambda worker: "pong")
_CALLS.on(WorkerCall.METRICS)(lambda worker: worker.metrics())
_CALLS.on(WorkerCall.IN_USE)(lambda worker: worker.in_use())
_CALLS.on(WorkerCall.AI_CHECK_MODEL)(lambda worker, *args: worker.ai.check_model(*args))
_CALLS.on(WorkerCall.AI_CHECK_SCRIPT)(lambda worker, *args: worker.ai.check_script(*args))
_CALLS.on(WorkerCall.AI_MODEL_EXECUTE)(lambda worker, *args: worker.ai.model_execute(*args))
_CALLS.on(WorkerCall.AI_SCRIPT_EXECUTE)(lambda worker, *args: worker.ai.script_execute(*args))
_CALLS.on(WorkerCall.AI_INFO)(lambda worker, *args: worker.ai.info(*args))


@_CALLS.on(WorkerCall.TRIGGER)
def _trigger(worker: WorkerProcess, name: str, args: list[str]) -> tuple[list[Any], list[str]]:
    outcome = worker.registry.trigger(name, args)
    return [to_reply(r) for r in outcome.results], outcome.errors


@_CALLS.on(WorkerCall.AI_DAG)
def _ai_dag(worker: WorkerProcess, plan: Any) -> Any:
    from gears.ai.dag import run_dag

    return run_dag(worker.ai, plan)


def _lazy_redisai() -> Any:
    """``redisAI`` as a module that loads the model-serving layer on first use."""
    import types

    module = types.ModuleType("redisAI")

    def load(name: str) -> Any:
        from gears.ai.redisai import install

        return getattr(install(), name)

    module.__getattr__ = load  # type: ignore[method-assign]
    return module


class _QuietExchange:
    """The exchange of executions that never leave this shard and report to nobody."""

    def send_records(self, exec_id: str, step: int, target: int, blob: bytes) -> None:
        raise RuntimeError("a local execution sent records")

    def send_done(self, exec_id: str, step: int, targets: list[int]) -> None:
        raise RuntimeError("a local execution sent records")

    def finished(self, execution: LocalExecution) -> None:
        pass


_QUIET = _QuietExchange()


def _serialize_registrations(registrations: list[Any]) -> bytes:
    """One pickle for a session's registrations, so their functions share one globals dict."""
    from gears.engine.records import GearsScriptError

    try:
        return cloudpickle.dumps(registrations)
    except Exception as exc:  # noqa: BLE001
        raise GearsScriptError(f"Error occured when serialized a python callback, error={exc}") from None


def _serialize_plan(plan: Plan, reader: Reader) -> bytes:
    from gears.engine.records import GearsScriptError

    try:
        return cloudpickle.dumps((plan, reader))
    except Exception as exc:  # noqa: BLE001 - which callback failed is in the message
        culprit = next((step.fn for step in plan.steps if step.fn is not None and not _picklable(step.fn)), reader)
        raise GearsScriptError(
            f"Error occured when serialized a python callback, callback={culprit!r} error={exc}"
        ) from None


def _picklable(obj: Any) -> bool:
    try:
        cloudpickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001
        return False
