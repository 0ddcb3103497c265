"""One execution's part on this shard, run in its own thread inside the worker.

The reader yields the shard's local records, :func:`gears.engine.operations.run_steps` chains
the steps, and this class is the :class:`~gears.engine.operations.StepRunner`: it moves records
between shards at ``collect`` and ``repartition`` through its :class:`Exchange`
(the worker's link to the gears node).

Waiting for other shards releases the execution slot (``ExecutionThreads``), and a wait
longer than ``ExecutionMaxIdleTime`` ends that wait with the error
``Execution max idle reached`` (records already received stay).
"""

from __future__ import annotations

import ctypes
import logging
import pickle
import queue
import threading
import time
from collections import defaultdict
from typing import Any, Callable, Iterator, Protocol

import cloudpickle

from gears.engine.shards import key_slot
from gears.engine.shards import ShardMap
from gears_readers.base import Reader

from gears.engine.plan import Plan
from gears.engine.futures import set_async_allowed, set_execution_slot
from gears.engine.operations import error_text, run_steps
from gears.engine.records import ErrorRecord, ForceStopped, to_reply
from gears.wire.serverconn import ServerError, ServerUnavailable
from gears.engine.host_protocol import current_host
from gears.worker.context import thread_context
from gears.worker.worker_host import WorkerHost

__all__ = ["Exchange", "LocalExecution", "dump_records", "load_records"]

log = logging.getLogger(__name__)

BATCH = 1000
MAX_IDLE_ERROR = "Execution max idle reached"
ABORTED_ERROR = "Execution was aborted"


class Exchange(Protocol):
    """The worker's link to its node, as an execution needs it."""

    def send_records(self, exec_id: str, step: int, target: int, blob: bytes) -> None:
        """Ship a pickled batch to shard ``target``."""

    def send_done(self, exec_id: str, step: int, targets: list[int]) -> None:
        """Tell ``targets`` that this shard sent everything for ``step``."""

    def finished(self, execution: "LocalExecution") -> None:
        """This shard's part is over."""


def dump_records(records: list[Any]) -> bytes:
    """Pickle a batch; records that cannot be pickled become error records."""
    try:
        return pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - retried with cloudpickle, then one by one
        pass
    try:
        blob: bytes = cloudpickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
        return blob
    except Exception:  # noqa: BLE001
        safe = []
        for record in records:
            try:
                cloudpickle.dumps(record)
                safe.append(record)
            except Exception:  # noqa: BLE001
                safe.append(ErrorRecord("Failed serializing record"))
        blob = cloudpickle.dumps(safe, protocol=pickle.HIGHEST_PROTOCOL)
        return blob


def load_records(blob: bytes) -> list[Any]:
    """Unpickle a batch made by :func:`dump_records`."""
    records: list[Any] = pickle.loads(blob)
    return records


def _worker_host() -> WorkerHost:
    """This process's host: executions run only in a gears worker."""
    host = current_host()
    if not isinstance(host, WorkerHost):
        raise RuntimeError(f"an execution runs in a gears worker, not under {type(host).__name__}")
    return host


class _ReaderContext:
    def __init__(self, conn: Any, shard_map: ShardMap) -> None:
        self.conn = conn
        self.shard_id = shard_map.shard_id_for_reader()
        self.index = shard_map.my_index
        self._shard_map = shard_map

    def open_connection(self, decode: bool = False) -> Any:
        return self.conn.endpoint.connect(decode=decode)

    def owns(self, key: str | bytes) -> bool:
        shard_map = self._shard_map
        return not shard_map.cluster_mode or shard_map.shard_of_key(key) == shard_map.my_index


class LocalExecution:
    """This shard's part of one execution."""

    def __init__(
        self,
        exec_id: str,
        plan: Plan,
        reader: Reader,
        *,
        shard_map: ShardMap,
        initiator_index: int,
        distributed: bool,
        exchange: Exchange,
        connection: Callable[[], Any],
        slots: threading.Semaphore,
        max_idle_ms: Callable[[], int],
        with_traceback: Callable[[], bool],
        session: Any = None,
        user: str | None = None,
    ) -> None:
        self.id = exec_id
        #: The ACL user whose rights ``execute()`` has here.
        self.user = user
        self.plan = plan
        self.reader = reader
        self.shard_map = shard_map
        self.initiator_index = initiator_index
        self.distributed = distributed
        self.exchange = exchange
        self.session = session
        self._connection = connection
        self._slots = slots
        self._max_idle_ms = max_idle_ms
        self._with_traceback = with_traceback
        self._callbacks: list[Callable[[], None]] = []
        self._callbacks_lock = threading.Lock()
        self._inbox: dict[int, queue.SimpleQueue[tuple[str, int, bytes | None]]] = defaultdict(queue.SimpleQueue)
        self.status = "created"
        self.results: list[Any] = []
        self.errors: list[str] = []
        self.done = threading.Event()
        self.thread: threading.Thread | None = None
        self.started_at = 0.0
        self.total_ms = 0.0
        self.read_ms = 0.0
        self._abort_requested = False
        #: Whether the server node was unreachable during the run (an outage, not a user failure).
        self.server_lost = False

    # ------------------------------------------------------------------ state
    @property
    def is_initiator(self) -> bool:
        return self.shard_map.my_index == self.initiator_index

    def run_here(self) -> None:
        """Run this shard's part in the calling thread (it must not wait for other shards)."""
        self._run()

    def start(self) -> None:
        """Run this shard's part on a new thread."""
        self.thread = threading.Thread(target=self._run, name=f"exec-{self.id}", daemon=True)
        self.thread.start()

    def deliver(self, kind: str, step: int, from_index: int, blob: bytes | None) -> None:
        """Records (``kind='records'``) or an end marker (``'done'``) from another shard."""
        self._inbox[step].put((kind, from_index, blob))

    def abort(self) -> None:
        """Stop: a queued execution never starts; a running one gets ``ForceStopped``."""
        self._abort_requested = True
        thread = self.thread
        if self.status == "running" and thread is not None and thread.ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(ForceStopped))
        elif self.thread is None:
            self.start()  # ends at once as "aborted", through the normal path

    # ------------------------------------------------------------------ run
    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once this shard's part is over (now, if it already is)."""
        with self._callbacks_lock:
            if not self.done.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def _run(self) -> None:
        outer = thread_context.session, thread_context.execution
        thread_context.session, thread_context.execution = self.session, self
        self._slots.acquire()
        try:
            if self._abort_requested:
                self.status = "aborted"
                return
            self.status = "running"
            self.started_at = time.perf_counter()
            set_async_allowed(True)
            outer_slot = set_execution_slot(self._slots)
            try:
                for record in run_steps(self.plan.steps, self._read(), self):
                    if record.__class__ is ErrorRecord:
                        self.errors.append(record.message)
                    else:
                        self.results.append(record)
                self.errors.extend(_worker_host().flush_deferred())
            except ForceStopped:
                self.errors.append(ABORTED_ERROR)
            except ServerUnavailable as exc:
                self.server_lost = True
                self.errors.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - an engine failure must still end the execution
                log.exception("execution %s failed", self.id)
                self.errors.append(f"internal error: {type(exc).__name__}: {exc}")
            self.total_ms = (time.perf_counter() - self.started_at) * 1000
            set_execution_slot(outer_slot)
            self.status = "done"
        finally:
            thread_context.session, thread_context.execution = outer
            self._slots.release()
            with self._callbacks_lock:
                self.done.set()
                callbacks, self._callbacks = self._callbacks, []
            try:
                self.exchange.finished(self)
            finally:
                for callback in callbacks:
                    callback()

    def _read(self) -> Iterator[Any]:
        start = time.perf_counter()
        try:
            yield from self.reader.records(_ReaderContext(self._connection(), self.shard_map))
        except ForceStopped:
            raise
        except Exception as exc:  # noqa: BLE001 - reader errors are execution errors
            yield ErrorRecord(str(exc) if isinstance(exc, (ServerError, ServerUnavailable)) else self.error_text(exc))
            self.server_lost |= isinstance(exc, ServerUnavailable)
        finally:
            self.read_ms = (time.perf_counter() - start) * 1000

    def reply_results(self) -> list[Any]:
        """Results as reply values (the RedisGears mapping)."""
        return [to_reply(r) for r in self.results]

    # ------------------------------------------------------------ StepRunner
    def error_text(self, exc: BaseException) -> str:
        self.server_lost |= isinstance(exc, ServerUnavailable)
        return error_text(exc, self._with_traceback())

    def _flushed(self, records: Iterator[Any]) -> Iterator[Any]:
        """``records``, then the errors of the commands the steps deferred (sent now), so
        that they travel with the records to the next shard."""
        yield from records
        for message in _worker_host().flush_deferred():
            yield ErrorRecord(message)

    def collect(self, index: int, records: Iterator[Any]) -> Iterator[Any]:
        records = self._flushed(records)
        if not self.distributed:
            return records
        if self.is_initiator:
            return self._collect_here(index, records)
        return self._send_all(index, records, self.initiator_index)

    def _collect_here(self, index: int, records: Iterator[Any]) -> Iterator[Any]:
        yield from records
        yield from self._receive(index)

    def _send_all(self, index: int, records: Iterator[Any], target: int) -> Iterator[Any]:
        batch: list[Any] = []
        for record in records:
            batch.append(record)
            if len(batch) >= BATCH:
                self.exchange.send_records(self.id, index, target, dump_records(batch))
                batch = []
        if batch:
            self.exchange.send_records(self.id, index, target, dump_records(batch))
        self.exchange.send_done(self.id, index, [target])
        return
        yield  # pragma: no cover - makes this a generator

    def repartition(self, index: int, records: Iterator[Any]) -> Iterator[Any]:
        records = self._flushed(records)
        if not self.distributed:
            yield from records
            return
        owner = self.shard_map.slot_owner
        me = self.shard_map.my_index
        buffers: dict[int, list[Any]] = defaultdict(list)
        for record in records:
            if record.__class__ is ErrorRecord:
                yield record
                continue
            target = owner[key_slot(record.key)]
            if target == me:
                yield record
                continue
            buffer = buffers[target]
            buffer.append(record)
            if len(buffer) >= BATCH:
                self.exchange.send_records(self.id, index, target, dump_records(buffer))
                buffers[target] = []
        for target, buffer in buffers.items():
            if buffer:
                self.exchange.send_records(self.id, index, target, dump_records(buffer))
        others = [i for i in range(self.shard_map.shard_count) if i != me]
        self.exchange.send_done(self.id, index, others)
        yield from self._receive(index)

    def _receive(self, index: int) -> Iterator[Any]:
        expected = self.shard_map.shard_count - 1
        inbox = self._inbox[index]
        finished = 0
        while finished < expected:
            try:
                kind, _sender, blob = inbox.get_nowait()
            except queue.Empty:
                self._slots.release()
                try:
                    kind, _sender, blob = inbox.get(timeout=self._max_idle_ms() / 1000)
                except queue.Empty:
                    yield ErrorRecord(MAX_IDLE_ERROR)
                    return
                finally:
                    self._slots.acquire()
            if kind == "done":
                finished += 1
            else:
                yield from load_records(blob)  # type: ignore[arg-type]
