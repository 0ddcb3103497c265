"""Executions as a gears node tracks them: ids, status, results, and their spread over shards.

The initiator of a distributed (``async``) execution asks every peer to *prepare*
it (ship the plan), then tells them all to *run* it. Each shard's worker reports when
its part is over; the initiator keeps the results and errors of its own worker (which,
after ``collect``, are everyone's), and the execution is ``done`` when every shard has
reported or the peers stayed silent longer than ``ExecutionMaxIdleTime``.

``MaxExecutions`` bounds the list as in RedisGears, the executions registrations
triggered included: when an execution is added to a full list, the oldest listed ones
leave it (first in, first out, finished or not) until it has room (a worker trims the
triggered executions it keeps to the limit as they finish, and ``RG.DUMPEXECUTIONS``
trims the whole list to it); a finished one is forgotten, a running one stays reachable by id (results,
abort, ``RG.GETEXECUTION``) but unlisted, and is forgotten once it finishes. (RedisGears
evicted one per new execution, so a lowered ``MaxExecutions`` never shrank a longer list;
here the next execution brings it down to the limit.)

Each execution runs in the worker of its user environment (:mod:`gears.node.worker_pool`):
the initiator's meta carries the requirement set, a peer runs its part in its own worker
of that set, and records, aborts and a worker's death reach only that worker's executions.

Executions a registration triggered on one shard (not distributed) are kept by the
worker, per registration (``MaxExecutionsPerRegistration``); :meth:`Coordinator.find`
gives either kind, so every listed execution can be fetched, dropped and aborted.

``RG.ABORTEXECUTION`` first asks the worker to stop the execution (an exception raised
in its thread, which Python delivers between bytecodes). Code that never returns to the
interpreter (a long C call such as ``sum(range(10**12))``) cannot see it: if this
shard's part has not ended ``AbortGracePeriodMS`` later, the node replaces the worker
process. The aborted execution ends ``aborted``; the others running in that worker end
with an error saying why, and the registrations come back in the new worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gears.wire.protocol import PeerMessage, ToWorker, WorkerCall
from gears.errors import ExecutionError, GearsError, NodeUnavailable, WorkerBusy
from gears.node.worker_pool import Environment

if TYPE_CHECKING:  # pragma: no cover
    from gears.node.services import NodeServices

__all__ = ["Coordinator", "NodeExecution"]

log = logging.getLogger(__name__)

MAX_IDLE_ERROR = "Execution max idle reached"
ABORTED_ERROR = "Execution was aborted"
ABORT_POLL_SECONDS = 0.05


@dataclass
class NodeExecution:
    """One execution on this node (initiated here or by a peer)."""

    id: str
    initiator_index: int
    is_initiator: bool
    mode: str
    steps: list[tuple[str, str, str]]
    shard_count: int
    registered: bool = False
    status: str = "created"
    results: list[Any] | None = None
    errors: list[str] = field(default_factory=list)
    shards_received: int = 0
    shards_completed: int = 0
    total_ms: float = 0.0
    read_ms: float = 0.0
    created_at: float = field(default_factory=time.monotonic)
    last_peer_activity: float = field(default_factory=time.monotonic)
    local_done: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    keep: bool = False
    #: The user environment (key) whose worker runs this shard's part.
    environment: str = ""
    #: When it joined the list (``time.time()``, comparable with the workers' kept executions).
    listed_at: float = field(default_factory=time.time)

    def plan_entry(self, shard_id: str) -> list[Any]:
        """This shard's ``RG.GETEXECUTION`` entry."""
        finished = self.status in ("done", "aborted")
        return [
            "shard_id",
            shard_id,
            "execution_plan",
            [
                "status", self.status,
                "shards_received", self.shards_received,
                "shards_completed", self.shards_completed,
                "results", len(self.results or []) if finished else -1,
                "errors", list(self.errors) if finished else [],
                "total_duration", int(self.total_ms),
                "read_duration", int(self.read_ms),
                "steps", [["type", t, "duration", 0, "name", name, "arg", arg] for t, name, arg in self.steps],
            ],
        ]


class Coordinator:
    """The executions of one gears node."""

    def __init__(self, node: "NodeServices") -> None:
        self._node = node
        #: Every execution reachable by id (listed or evicted while still running).
        self.executions: dict[str, NodeExecution] = {}
        #: The ``RG.DUMPEXECUTIONS`` list, oldest first (ids; the values are unused).
        self._listed: OrderedDict[str, None] = OrderedDict()
        self._aborting: set[str] = set()
        #: Executions initiated here that ended, by outcome (``ok``, ``error``, ``aborted``).
        self.outcomes: Counter[str] = Counter()

    # ------------------------------------------------------------- lifecycle
    def _add(self, execution: NodeExecution) -> None:
        limit = int(self._node.config["MaxExecutions"])
        while 0 < limit <= len(self._listed):
            self._evict(next(iter(self._listed)))
        self.executions[execution.id] = execution
        self._listed[execution.id] = None

    def _evict(self, exec_id: str) -> None:
        """Take an execution off the list: forget it if it is over, else once it is."""
        victim = self.executions[exec_id]
        del self._listed[exec_id]
        if victim.done.is_set():
            del self.executions[exec_id]
        else:
            asyncio.ensure_future(self._forget_when_done(victim))

    async def _forget_when_done(self, execution: NodeExecution) -> None:
        """An execution evicted from the list while running: forget it once it finished."""
        await execution.done.wait()
        self._forget(execution.id)

    def _forget(self, exec_id: str) -> None:
        self.executions.pop(exec_id, None)
        self._listed.pop(exec_id, None)

    def get(self, exec_id: str) -> NodeExecution:
        """The execution, or the RedisGears error for an unknown id."""
        execution = self.executions.get(exec_id)
        if execution is None:
            raise ExecutionError("execution plan does not exist")
        return execution

    async def find(self, exec_id: str) -> NodeExecution:
        """:meth:`get`, or else a finished view of an execution a registration triggered
        on this shard that the worker keeps (its steps are not known here)."""
        execution = self.executions.get(exec_id)
        if execution is not None:
            return execution
        kept = await self.kept(exec_id)
        if kept is None:
            raise ExecutionError("execution plan does not exist")
        status, results, errors = kept
        view = NodeExecution(
            exec_id, self._node.view.shard_map.my_index, True, "async_local", [], 1, registered=True,
            status=status, results=results, errors=errors, shards_completed=1, local_done=True,
        )
        view.done.set()
        return view

    async def kept(self, exec_id: str) -> tuple[str, list[Any], list[str]] | None:
        """``(status, results, errors)`` of a triggered execution a worker of this node
        keeps (``None``: none does)."""
        for worker in self._node.workers.handles():
            kept = await worker.query(WorkerCall.REGISTERED_EXECUTION, exec_id)
            if kept is not None:
                return tuple(kept)  # type: ignore[return-value]
        return None

    async def drop_kept(self, exec_id: str) -> bool:
        """Forget a triggered execution a worker of this node keeps; whether one did."""
        for worker in self._node.workers.handles():
            if await worker.query(WorkerCall.DROP_REGISTERED_EXECUTION, exec_id):
                return True
        return False

    async def start(self, blob: bytes | None, meta: dict[str, Any], environment: str) -> str:
        """A worker (of user environment ``environment``) starts an execution it
        initiates: distribute it, return its id."""
        node = self._node
        shard_map = node.view.shard_map
        exec_id = meta["id"]
        distributed = meta["distributed"]
        if distributed and shard_map.my_role != "master":
            # records and results travel between shards' masters: a run started beside a
            # replica would send its shard's share to that shard's master, not here
            raise ExecutionError(
                "this gears node serves a replica (server %s:%d): start cluster-wide runs at a master's front door"
                % node.server_address
            )
        execution = NodeExecution(
            exec_id,
            shard_map.my_index,
            True,
            meta["mode"],
            meta["steps"],
            shard_map.shard_count if distributed else 1,
            registered=meta.get("registration") is not None,
            environment=environment,
        )
        self._add(execution)
        if distributed:
            execution.status = "pending_receive"
            peers = [i for i in range(shard_map.shard_count) if i != shard_map.my_index]
            header = (exec_id, shard_map.my_index, meta)
            timeout = max(1.0, node.config["ExecutionMaxIdleTime"] / 1000)
            results = await asyncio.gather(
                *(node.peer(i).call(PeerMessage.PREPARE, header, blob, timeout=timeout) for i in peers), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures:
                for i in peers:
                    node.peer(i).send(PeerMessage.DROP, exec_id)
                self._forget(exec_id)
                if isinstance(failures[0], NodeUnavailable):
                    raise ExecutionError(f"{MAX_IDLE_ERROR}: {failures[0]}")
                raise GearsError(str(failures[0]))
            execution.shards_received = len(peers)
            for i in peers:
                node.peer(i).send(PeerMessage.RUN, exec_id)
        execution.status = "running"
        return exec_id

    async def prepare(self, exec_id: str, initiator_index: int, meta: dict[str, Any], blob: bytes | None) -> None:
        """A peer asks this node to take part in its execution."""
        node = self._node
        worker = await node.worker_for(meta.get("requirements"))
        execution = NodeExecution(
            exec_id, initiator_index, False, meta["mode"], meta["steps"], node.view.shard_map.shard_count,
            registered=meta.get("registration") is not None, status="pending_run",
            environment=Environment.of(meta.get("requirements")).key,
        )
        self._add(execution)
        try:
            await worker.call(WorkerCall.PREPARE, exec_id, blob, initiator_index, meta)
        except Exception:
            self._forget(exec_id)
            raise

    def run(self, exec_id: str) -> None:
        """The initiator says: go."""
        execution = self.executions.get(exec_id)
        if execution is not None:
            execution.status = "running"
            self._send(execution, ToWorker.RUN, exec_id)

    def deliver(self, exec_id: str, kind: str, *args: Any) -> None:
        """Records (or the end marker) from another shard for an execution here."""
        execution = self.executions.get(exec_id)
        if execution is None:
            log.debug("%s for execution %s, which is not here (dropped): ignored", kind, exec_id)
            return
        self._send(execution, kind, exec_id, *args)

    def _send(self, execution: NodeExecution, kind: str, *args: Any) -> None:
        worker = self._node.workers.get(execution.environment)
        if worker is None:
            log.warning("no worker runs execution %s any more: %s dropped", execution.id, kind)
            return
        worker.send(kind, *args)

    def running_in(self, environment: str) -> bool:
        """Whether an execution whose part here is not over runs in ``environment``'s worker."""
        return any(e.environment == environment and not e.local_done for e in self.executions.values())

    def local_finished(self, exec_id: str, status: str, results: list[Any], errors: list[str], stats: dict[str, Any]) -> None:
        """This node's worker finished its part."""
        execution = self.executions.get(exec_id)
        if execution is None:
            return
        execution.total_ms, execution.read_ms = stats["total_ms"], stats["read_ms"]
        execution.local_done = True
        if not execution.is_initiator:
            execution.status = "done" if status == "done" else status
            execution.done.set()
            self._node.peer(execution.initiator_index).send(PeerMessage.SHARD_DONE, exec_id)
            return
        execution.results, execution.errors = results, list(errors)
        execution.shards_completed += 1
        if status == "aborted":
            execution.status = "aborted"
        if MAX_IDLE_ERROR in execution.errors:
            execution.shards_completed = execution.shard_count  # the stalled shards were given up on
        self._maybe_done(execution)
        if not execution.done.is_set():
            execution.status = "pending_cluster"
            asyncio.ensure_future(self._watch_peers(execution))

    def shard_done(self, exec_id: str) -> None:
        """A peer finished its part of an execution initiated here."""
        execution = self.executions.get(exec_id)
        if execution is None:
            return
        execution.shards_completed += 1
        execution.last_peer_activity = time.monotonic()
        self._maybe_done(execution)

    def _maybe_done(self, execution: NodeExecution) -> None:
        if execution.local_done and execution.shards_completed >= execution.shard_count:
            if execution.status != "aborted":
                execution.status = "done"
            self._ended(execution)

    async def _watch_peers(self, execution: NodeExecution) -> None:
        while not execution.done.is_set():
            idle = self._node.config["ExecutionMaxIdleTime"] / 1000
            remaining = execution.last_peer_activity + idle - time.monotonic()
            if remaining <= 0:
                execution.errors.append(MAX_IDLE_ERROR)
                execution.status = "done"
                self._ended(execution)
                return
            try:
                await asyncio.wait_for(execution.done.wait(), remaining)
            except asyncio.TimeoutError:
                continue

    def worker_lost(self, environment: str, reason: str) -> None:
        """A worker died: every execution it was running ends with an error (an aborted
        one ends ``aborted``)."""
        for execution in self.executions.values():
            if execution.environment != environment:
                continue
            if not execution.local_done and execution.status not in ("done", "aborted"):
                aborted = execution.id in self._aborting
                execution.errors.append(ABORTED_ERROR if aborted else reason)
                execution.local_done = True
                execution.status = "aborted" if aborted else "done"
                self._ended(execution)
                if execution.is_initiator:
                    execution.results = execution.results or []
                else:
                    self._node.peer(execution.initiator_index).send(PeerMessage.SHARD_DONE, execution.id)
        self._aborting -= {e.id for e in self.executions.values() if e.environment == environment}

    def _ended(self, execution: NodeExecution) -> None:
        """An execution is over here: wake its waiters; count it if it was initiated here."""
        execution.done.set()
        if execution.is_initiator:
            status = "aborted" if execution.status == "aborted" else "error" if execution.errors else "ok"
            self.outcomes[status] += 1

    # ------------------------------------------------------------ management
    def drop(self, exec_id: str, *, broadcast: bool = True) -> None:
        """``RG.DROPEXECUTION``: forget a finished execution; a distributed one on every
        shard (from whichever shard it is dropped, as in RedisGears)."""
        execution = self.get(exec_id)
        if not execution.done.is_set():
            raise ExecutionError("can not drop a not yet finished execution, abort it first.")
        self._forget(exec_id)
        if broadcast and execution.shard_count > 1:
            for i in self._node.peer_indexes():
                self._node.peer(i).send(PeerMessage.DROP, exec_id)

    def drop_quietly(self, exec_id: str) -> None:
        """Another shard dropped an execution: forget it now if it is over (or was never
        started), else once this shard's part is over."""
        execution = self.executions.get(exec_id)
        if execution is None:
            return
        if execution.done.is_set() or execution.status == "pending_run":
            self._forget(exec_id)
        else:
            asyncio.ensure_future(self._forget_when_done(execution))

    def abort(self, exec_id: str, *, broadcast: bool = True) -> None:
        """``RG.ABORTEXECUTION``: stop an execution everywhere (``OK`` if already done)."""
        execution = self.executions.get(exec_id)
        if execution is None:
            raise ExecutionError("execution does not exist")
        if not execution.local_done:
            self._send(execution, ToWorker.ABORT, exec_id)
            if exec_id not in self._aborting:
                self._aborting.add(exec_id)
                asyncio.ensure_future(self._enforce_abort(execution))
        if broadcast and execution.shard_count > 1:
            for i in self._node.peer_indexes():
                self._node.peer(i).send(PeerMessage.ABORT, exec_id)

    async def _enforce_abort(self, execution: NodeExecution) -> None:
        """Replace the worker if this shard's part of an aborted execution is still running
        after the grace period (its code ignores the cooperative abort)."""
        grace_ms = int(self._node.config["AbortGracePeriodMS"])
        deadline = time.monotonic() + grace_ms / 1000
        while not execution.local_done and time.monotonic() < deadline:
            await asyncio.sleep(ABORT_POLL_SECONDS)
        if execution.local_done:
            self._aborting.discard(execution.id)
            return
        worker = self._node.workers.get(execution.environment)
        if worker is None:
            return
        worker.replace(
            f"replaced because execution {execution.id} did not stop within AbortGracePeriodMS={grace_ms} "
            "of RG.ABORTEXECUTION"
        )

    async def dump(self) -> list[list[Any]]:
        """``RG.DUMPEXECUTIONS``: this node's list and the triggered executions its workers
        keep, oldest first, trimmed to the newest ``MaxExecutions`` of them all (the oldest
        leave, as when a new execution joins a full list). A worker that does not answer
        is left out, with a log line."""
        entries: list[tuple[float, list[Any], Any]] = [
            (e.listed_at, ["executionId", e.id, "status", e.status, "registered", int(e.registered)], None)
            for e in map(self.executions.__getitem__, self._listed)
        ]
        for worker in self._node.workers.handles():
            try:
                kept = await worker.query(WorkerCall.REGISTERED_EXECUTIONS)
            except WorkerBusy as exc:
                log.warning("RG.DUMPEXECUTIONS without the triggered executions of a worker: %s", exc)
                continue
            entries += [(created, entry, worker) for created, entry in kept]
        entries.sort(key=lambda item: item[0])
        excess = max(0, len(entries) - int(self._node.config["MaxExecutions"]))
        for _, entry, worker in entries[:excess]:
            if worker is None:
                if entry[1] in self._listed:
                    self._evict(entry[1])
            else:
                await worker.query(WorkerCall.DROP_REGISTERED_EXECUTION, entry[1])
        return [entry for _, entry, _ in entries[excess:]]

    @staticmethod
    def reply_of(execution: NodeExecution) -> list[Any]:
        """``[[results], [errors]]`` of a finished execution."""
        return [list(execution.results or []), list(execution.errors)]
