"""The worker process: runs every session's Python code for one gears node.

It receives requests from its node over a :class:`~gears.ipc.ThreadChannel`:

=====================  =======================================================
``pyexecute`` (call)   run a script in a new session; start its ``run()``
``prepare`` (call)     accept another shard's plan for an execution
``run``                start a prepared execution
``records`` / ``done`` records (or an end marker) for a waiting execution step
``abort``              abort an execution
``config``             new configuration values
``crashes``            stream entries that crashed earlier workers (poison isolation)
``topology``           a new :class:`~cluster.topology.ShardMap`
``metrics`` (call)     what this worker counted (:class:`~gears.workerstats.WorkerStats`)
=====================  =======================================================

and sends ``send``/``send_done`` (records for other shards), ``finished`` and
``in_flight`` (the stream entries a batch is running).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import os
import sys
import threading
import uuid
from typing import Any, Callable

import cloudpickle
import hiredis

from cluster.topology import ShardMap
from readers.base import Reader

from ..api import redisgears_module, script_globals
from ..builder import Plan
from ..errors import GearsError, ScriptError
from ..host import install_host
from ..ipc import ThreadChannel
from ..operations import error_text
from ..serverconn import ConnectionPerThread, ServerEndpoint
from ..workerstats import WorkerStats
from ..records import GearsScriptError, to_reply
from .execution import LocalExecution
from .host import ScriptState, Session, WorkerHost, carry_user_into_threads, thread_context
from .registry import Registry
from .timers import TimeEvents
from .triggers import EventReader

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
    ) -> None:
        """``server``: the local server node; ``frontdoor``: this node's front door (the
        worker's ``execute()`` of ``RG.*``/``AI.*`` goes there); both with the worker's login."""
        self.channel = channel
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
        self._exec_seq = itertools.count(1)
        self.registry = Registry(self, server)
        self.timers = TimeEvents(self.server, lambda: self.shard_map.hashtag, self._call_in_session)
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
        """One-way messages from the node (never blocks)."""
        if kind in ("records", "done"):
            exec_id, step, from_index, *rest = args
            blob = rest[0] if rest else None
            with self._lock:
                execution = self.executions.get(exec_id)
                if execution is None:
                    if exec_id not in self._finished:
                        self._early[exec_id].append((kind, step, from_index, blob))
                    return
            execution.deliver(kind, step, from_index, blob)
        elif kind == "run":
            execution = self.executions.get(args[0])
            if execution is not None:
                execution.start()
        elif kind == "abort":
            execution = self.executions.get(args[0])
            if execution is not None:
                execution.abort()
        elif kind == "config":
            if "exec_seq" in args[0]:
                self._exec_seq = itertools.count(int(args[0]["exec_seq"]))
            self.config.update(args[0])
        elif kind == "topology":
            was_master = self.shard_map.my_role == "master"
            self.shard_map = args[0]
            if self.shard_map.my_role == "master" and not was_master:
                self.registry.promoted()
            if self.shard_map.my_role == "master" and not self._timers_loaded:
                self._timers_loaded = True
                threading.Thread(target=self.timers.load, name="load-timers", daemon=True).start()
        elif kind == "crashes":
            self.registry.crashes = args[0]
        elif kind == "ai_forget":
            if self._ai is not None:
                self._ai.forget(args[0])
        elif kind == "paths":
            sys.path[:0] = [path for path in args[0] if path not in sys.path]
        else:
            log.warning("unknown message from the node: %s", kind)

    def handle_call(self, kind: str, *args: Any) -> Any:
        """Requests from the node (each on its own thread)."""
        if kind == "pyexecute":
            return self._pyexecute(*args)
        if kind == "prepare":
            return self._prepare(*args)
        registry = self.registry
        if kind == "apply_session":
            return registry.apply(*args)
        if kind == "unregister":
            return registry.unregister(*args)
        if kind == "dump_registrations":
            return registry.dump()
        if kind == "registered_executions":
            return registry.executions()
        if kind == "registered_execution":
            return registry.execution(*args)
        if kind == "drop_registered_execution":
            return registry.drop_execution(*args)
        if kind == "clear_stats":
            return registry.clear_stats()
        if kind == "barrier":
            return registry.barrier()
        if kind == "pause":
            return registry.pause(*args)
        if kind.startswith("ai_"):
            return self._ai_call(kind, args)
        if kind == "command_event":
            return registry.command_event(*args)
        if kind == "hook":
            return registry.hook(*args)
        if kind == "trigger":
            outcome = registry.trigger(*args)
            return [to_reply(r) for r in outcome.results], outcome.errors
        if kind == "ping":
            return "pong"
        if kind == "metrics":
            return self.metrics()
        raise ValueError(f"unknown request {kind!r}")

    # ---------------------------------------------------------------- scripts
    def _pyexecute(self, script: str, session_id: str | None, description: str | None, user: str) -> dict[str, Any]:
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
            outcome["execution_id"] = self.start_execution(plan, reader, mode, session).id
        return outcome

    @property
    def ai(self) -> Any:
        """The shard's model-serving service (created on first use: it imports numpy and the backends)."""
        if self._ai is None:
            from ..ai.backends import set_parallelism
            from ..ai.service import AIService

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

    def _ai_call(self, kind: str, args: tuple[Any, ...]) -> Any:
        service = self.ai
        if kind == "ai_check_model":
            return service.check_model(*args)
        if kind == "ai_check_script":
            return service.check_script(*args)
        if kind == "ai_model_execute":
            return service.model_execute(*args)
        if kind == "ai_script_execute":
            return service.script_execute(*args)
        if kind == "ai_info":
            return service.info(*args)
        if kind == "ai_dag":
            from ..ai.dag import run_dag

            return run_dag(service, *args)
        raise ValueError(f"unknown request {kind!r}")

    def start_call(self, kind: str, args: tuple[Any, ...], answer: Callable[[bool, Any], None]) -> bool:
        """Requests started on the channel's reading thread (True when taken; see
        :meth:`ThreadChannel.serve`): ``AI.MODELEXECUTE`` of a loaded model reads its
        inputs there and queues the run, so no pool thread sits between the node and
        the run queue."""
        if kind == "ai_model_execute" and self._ai is not None:
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
        return self.channel.call("registration_id")

    def new_execution_id(self) -> str:
        """The next execution id of this shard."""
        return f"{self.shard_map.my_id}-{next(self._exec_seq)}"

    # ------------------------------------------------------------- executions
    def start_execution(
        self,
        plan: Plan,
        reader: Reader,
        mode: str,
        session: Session | None,
        *,
        registration: dict[str, Any] | None = None,
    ) -> LocalExecution:
        """Start an execution this shard initiates (``run()``, or a triggered ``async`` one).

        A registration's execution ships no plan: the other shards run their own copy
        of the registration (``registration`` says which, and with which records)."""
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
        self.channel.call("start_execution", blob, meta)
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
        """What this worker counted, for the node's metrics (see :mod:`gears.workerstats`)."""
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

    def _prepare(self, exec_id: str, blob: bytes | None, initiator_index: int, meta: dict[str, Any]) -> bool:
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
        :mod:`gears.access`): ``ACL DRYRUN`` on the worker's own connection, or, for
        ``RG.*``/``AI.*``, the node's check. Code of the node's own user is not checked."""
        if user is None or user == self.node_user or not args:
            return
        if str(args[0]).upper().startswith(("RG.", "AI.")):
            words = [a if isinstance(a, bytes) else str(a).encode("utf-8", "surrogateescape") for a in args]
            try:
                self.channel.call("authorize", user, words)
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
        self.channel.send("send", exec_id, step, target, blob)

    def send_done(self, exec_id: str, step: int, targets: list[int]) -> None:
        self.channel.send("send_done", exec_id, step, targets)

    def finished(self, execution: LocalExecution) -> None:
        with self._lock:
            self.executions.pop(execution.id, None)
            self._finished.append(execution.id)
        results = execution.reply_results() if execution.is_initiator else []
        stats = {"total_ms": execution.total_ms, "read_ms": execution.read_ms, "results": len(execution.results)}
        self.channel.send("finished", execution.id, execution.status, results, execution.errors, stats)


def _lazy_redisai() -> Any:
    """``redisAI`` as a module that loads the model-serving layer on first use."""
    import types

    module = types.ModuleType("redisAI")

    def load(name: str) -> Any:
        from ..ai.redisai import install

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
    from ..records import GearsScriptError

    try:
        return cloudpickle.dumps(registrations)
    except Exception as exc:  # noqa: BLE001
        raise GearsScriptError(f"Error occured when serialized a python callback, error={exc}") from None


def _serialize_plan(plan: Plan, reader: Reader) -> bytes:
    from ..records import GearsScriptError

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
