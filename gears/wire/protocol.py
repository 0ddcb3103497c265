"""Every kind of message between a gears node, its worker processes and its peer nodes.

Three channels carry them:

* **node → worker** (:mod:`gears.wire.ipc`): :class:`ToWorker` one-way messages and
  :class:`WorkerCall` requests that the worker answers;
* **worker → node** (the same socket): :class:`ToNode` one-way messages and
  :class:`NodeCall` requests that the node answers;
* **node → peer node** (``RG.INNERMSG`` through the peer's front door,
  :mod:`gears.node.peers`): :class:`PeerMessage`, each answered.

A record batch keeps its name on its way across shards: the worker of the sending shard
sends ``ToNode.RECORDS``, its node relays ``PeerMessage.RECORDS``, and the receiving
node hands ``ToWorker.RECORDS`` to the worker running that execution (``DONE`` ends a
step's stream the same way).

Each kind is a member of a ``str`` enum, equal to its wire name. A receiver keeps one
:class:`Handlers` table per channel: ``@table.on(Kind.X)`` registers a handler, and
``table.dispatch(receiver, kind, args)`` runs it (an unknown kind raises
:class:`UnknownMessage`).
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Callable, Generic, TypeVar

__all__ = ["Handlers", "NodeCall", "PeerMessage", "ToNode", "ToWorker", "UnknownMessage", "WorkerCall"]


class _Kind(str, Enum):
    """A message kind: compares equal to, and prints as, its wire name."""

    def __str__(self) -> str:
        return str(self.value)


class ToWorker(_Kind):
    """One-way messages from a node to its worker."""

    #: ``(exec_id, step, from_shard, blob)``: another shard's records for a waiting step.
    RECORDS = "records"
    #: ``(exec_id, step, from_shard)``: another shard sent all its records for a step.
    DONE = "done"
    #: ``(exec_id,)``: start a prepared execution.
    RUN = "run"
    #: ``(exec_id,)``: abort an execution.
    ABORT = "abort"
    #: ``(values,)``: configuration values (``RG.CONFIGSET``, ``--config``).
    CONFIG = "config"
    #: ``(shard_map,)``: a new :class:`~gears.engine.shards.ShardMap`.
    TOPOLOGY = "topology"
    #: ``(counts,)``: stream entries that crashed earlier workers (poison isolation).
    CRASHES = "crashes"
    #: ``(key,)``: a model or script key was deleted or replaced.
    AI_FORGET = "ai_forget"


class WorkerCall(_Kind):
    """Requests from a node that its worker answers."""

    PYEXECUTE = "pyexecute"
    PREPARE = "prepare"
    APPLY_SESSION = "apply_session"
    UNREGISTER = "unregister"
    DUMP_REGISTRATIONS = "dump_registrations"
    REGISTERED_EXECUTIONS = "registered_executions"
    REGISTERED_EXECUTION = "registered_execution"
    DROP_REGISTERED_EXECUTION = "drop_registered_execution"
    CLEAR_STATS = "clear_stats"
    BARRIER = "barrier"
    PAUSE = "pause"
    COMMAND_EVENT = "command_event"
    HOOK = "hook"
    TRIGGER = "trigger"
    PING = "ping"
    METRICS = "metrics"
    IN_USE = "in_use"
    AI_CHECK_MODEL = "ai_check_model"
    AI_CHECK_SCRIPT = "ai_check_script"
    AI_MODEL_EXECUTE = "ai_model_execute"
    AI_SCRIPT_EXECUTE = "ai_script_execute"
    AI_INFO = "ai_info"
    AI_DAG = "ai_dag"


class ToNode(_Kind):
    """One-way messages from a worker to its node."""

    #: ``(exec_id, step, target_shard, blob)``: records for another shard.
    RECORDS = "records"
    #: ``(exec_id, step, target_shards)``: this shard sent all its records for a step.
    DONE = "done"
    #: ``(exec_id, status, results, errors, stats)``: this shard's part of an execution ended.
    FINISHED = "finished"
    #: ``(registration_id, stream, entry_ids)``: the stream entries a batch is running.
    IN_FLIGHT = "in_flight"
    #: ``(requirement_lists,)``: other user environments' stored time events exist.
    TIMER_ENVIRONMENTS = "timer_environments"


class NodeCall(_Kind):
    """Requests from a worker that its node answers."""

    START_EXECUTION = "start_execution"
    EXECUTION_IDS = "execution_ids"
    AUTHORIZE = "authorize"
    REGISTRATION_ID = "registration_id"
    CALL_NEXT = "call_next"


class PeerMessage(_Kind):
    """``RG.INNERMSG`` messages between gears nodes (``header``, optional ``blob``)."""

    RECORDS = "records"
    DONE = "done"
    SHARD_DONE = "shard_done"
    RUN = "run"
    PREPARE = "prepare"
    DROP = "drop"
    ABORT = "abort"
    GETEXECUTION = "getexecution"
    HELLO = "hello"
    REQUIREMENTS = "requirements"
    IMPORT_REQUIREMENT = "import_requirement"
    APPLY_SESSION = "apply_session"
    REMOVE_SESSION = "remove_session"
    UNREGISTER = "unregister"
    CLEAR_STATS = "clear_stats"
    PAUSE = "pause"


class UnknownMessage(ValueError):
    """A message kind the receiver has no handler for."""


K = TypeVar("K", bound=_Kind)
F = TypeVar("F", bound=Callable[..., Any])


class Handlers(Generic[K]):
    """A receiver's handlers for one channel's kinds.

    >>> table: Handlers[ToWorker] = Handlers(ToWorker)
    >>> @table.on(ToWorker.RUN)
    ... def run(receiver, exec_id):
    ...     return f"{receiver} runs {exec_id}"
    >>> table.dispatch("worker", "run", ("e-1",))
    'worker runs e-1'
    >>> table.dispatch("worker", "abort", ("e-1",))
    Traceback (most recent call last):
    ...
    gears.wire.protocol.UnknownMessage: no handler for ToWorker message 'abort'
    """

    def __init__(self, kinds: type[K]) -> None:
        self._kinds = kinds
        self._table: dict[K, Callable[..., Any]] = {}

    def on(self, *kinds: K) -> Callable[[F], F]:
        """Register the decorated function as the handler of ``kinds``."""

        def register(handler: F) -> F:
            for kind in kinds:
                if kind in self._table:
                    raise ValueError(f"{self._kinds.__name__} message {kind.value!r} has two handlers")
                self._table[kind] = handler
            return handler

        return register

    def dispatch(self, receiver: Any, kind: str, args: tuple[Any, ...]) -> Any:
        """Run ``kind``'s handler as ``handler(receiver, *args)``; its result."""
        try:
            handler = self._table[self._kinds(kind)]
        except (ValueError, KeyError):
            raise UnknownMessage(f"no handler for {self._kinds.__name__} message {str(kind)!r}") from None
        return handler(receiver, *args)
