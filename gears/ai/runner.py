"""Run queues: one per device, each with its own threads, and dynamic batching.

Every model or script run (``AI.MODELEXECUTE``, ``AI.SCRIPTEXECUTE``, DAG ops, and
``redisAI.modelRunnerRunAsync`` from gears functions) is a :class:`RunRequest` on its
device's :class:`DeviceQueue`. Backends release the GIL while they compute, so runs
proceed beside the rest of the worker.

Batching follows RedisAI's rules (redisai-spec §3.3): a request for a model with
``BATCHSIZE > 0`` is joined by queued requests for the *same model object* whose inputs
match except in dim 0, until the batch reaches ``BATCHSIZE`` (it may overshoot); with
``MINBATCHSIZE`` the batch waits for that many samples until ``MINBATCHTIMEOUT`` ms after
the head request was queued. Inputs are concatenated on dim 0, run once, and the outputs
are split back per request. ``TIMEOUT`` is a queue-wait deadline checked when a request
is taken: ``TIMEDOUT`` (a running op is never interrupted).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

import numpy as np

from gears.errors import GearsError
from gears.wire.workerstats import AI_BATCH_BUCKETS, DURATION_BUCKETS, Histogram, HistogramSnapshot

__all__ = ["RunRequest", "RunStats", "RunMetrics", "DeviceQueue", "Runner", "TIMEDOUT"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

TIMEDOUT = "TIMEDOUT"
_POLL = 0.001


@dataclass
class RunStats:
    """``AI.INFO`` counters of one model or script key on this shard."""

    kind: str
    backend: str
    device: str
    tag: str
    version: str = ""
    duration_us: int = 0
    samples: int = 0
    calls: int = 0
    errors: int = 0

    def reset(self) -> None:
        self.duration_us = self.samples = self.calls = self.errors = 0

    def reply(self, key: str) -> list[Any]:
        return [
            "key", key, "type", self.kind, "backend", self.backend, "device", self.device, "tag", self.tag,
            "duration", self.duration_us, "samples", self.samples if self.kind == "MODEL" else -1,
            "calls", self.calls, "errors", self.errors,
        ]


@dataclass(eq=False)
class RunRequest:
    """One run: ``fn(inputs) -> outputs`` on numpy arrays, batchable with its ``target``'s peers.

    Requests compare by identity (``eq=False``): the queue removes the one it batches, and
    comparing fields would compare numpy inputs.
    """

    target: Any
    fn: Callable[[list[Any]], list[Any]]
    inputs: list[Any]
    stats: RunStats | None = None
    batchsize: int = 0
    minbatchsize: int = 0
    minbatchtimeout: int = 0
    timeout_ms: int | None = None
    enqueued: float = field(default_factory=time.monotonic)
    outputs: list[Any] | None = None
    error: str | None = None
    timed_out: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    callbacks: list[Callable[["RunRequest"], None]] = field(default_factory=list)
    #: The model or script key, for the metrics (``""``: not a model run, e.g. a load).
    label: str = ""

    def finish(self) -> None:
        self.done.set()
        for callback in self.callbacks:
            try:
                callback(self)
            except Exception:  # noqa: BLE001 - a waiter's failure must not stop the queue
                log.exception("run callback failed")

    def dim0(self) -> int:
        """The batch dimension of the inputs (0 when they disagree or are scalars)."""
        sizes = {a.shape[0] if a.ndim else 0 for a in self.inputs}
        return sizes.pop() if len(sizes) == 1 else 0

    def matches(self, other: "RunRequest") -> bool:
        return (
            other.target is self.target
            and len(other.inputs) == len(self.inputs)
            and all(a.ndim == b.ndim and a.shape[1:] == b.shape[1:] for a, b in zip(self.inputs, other.inputs))
        )


class RunMetrics:
    """Monotonic counts of one worker's model and script runs, for the node's metrics
    (``AI.INFO ... RESETSTAT`` does not touch them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[tuple[str, str], int] = {}
        self._durations: dict[tuple[str, str], Histogram] = {}
        self.batch_sizes = Histogram(AI_BATCH_BUCKETS)

    def batch_ran(self, device: str, batch: list[RunRequest], seconds: float) -> None:
        """One batch ran on ``device`` in ``seconds``: a run per request, one batch size."""
        if not batch[0].label:
            return
        key = (batch[0].label, device)
        with self._lock:
            self._runs[key] = self._runs.get(key, 0) + len(batch)
            durations = self._durations.get(key)
            if durations is None:
                durations = self._durations[key] = Histogram(DURATION_BUCKETS)
        for _ in batch:
            durations.observe(seconds)
        self.batch_sizes.observe(sum(r.dim0() for r in batch) or len(batch))

    def runs(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._runs)

    def durations(self) -> dict[tuple[str, str], HistogramSnapshot]:
        with self._lock:
            items = list(self._durations.items())
        return {key: histogram.snapshot() for key, histogram in items}


class DeviceQueue:
    """A FIFO of run requests served by ``threads`` threads."""

    def __init__(self, device: str, threads: int, metrics: RunMetrics | None = None) -> None:
        self.device = device
        self._metrics = metrics if metrics is not None else RunMetrics()
        self._queue: deque[RunRequest] = deque()
        self._cond = threading.Condition()
        for n in range(threads):
            threading.Thread(target=self._serve, name=f"ai-{device}-{n}", daemon=True).start()

    def submit(self, request: RunRequest) -> None:
        with self._cond:
            self._queue.append(request)
            self._cond.notify()

    def _take(self) -> list[RunRequest] | None:
        """Under the lock: the next batch to run, or ``None`` to wait a little."""
        head = self._queue.popleft()
        if head.timeout_ms is not None and (time.monotonic() - head.enqueued) * 1000 > head.timeout_ms:
            head.timed_out = True
            return [head]
        if head.batchsize <= 0:
            return [head]
        size = head.dim0()
        if size == 0 or size >= head.batchsize:
            return [head]
        batch, total = [head], size
        for item in list(self._queue):
            if total >= head.batchsize or self._expired(head):
                break
            if head.matches(item):
                self._queue.remove(item)
                batch.append(item)
                total += item.dim0()
        if head.minbatchsize > 0 and total < head.minbatchsize and not self._expired(head):
            self._queue.extend(batch)  # not enough yet: back to the tail, look again shortly
            return None
        return batch

    @staticmethod
    def _expired(head: RunRequest) -> bool:
        return (
            head.minbatchsize > 0
            and head.minbatchtimeout > 0
            and (time.monotonic() - head.enqueued) * 1000 > head.minbatchtimeout
        )

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                batch = self._take()
            if batch is None:
                time.sleep(_POLL)
                continue
            if batch[0].timed_out:
                batch[0].finish()
                continue
            self._metrics.batch_ran(self.device, batch, _run_batch(batch))

    @property
    def depth(self) -> int:
        """Requests waiting in the queue."""
        return len(self._queue)


def _run_batch(batch: list[RunRequest]) -> float:
    """Run one batch and finish its requests; returns the seconds the run took."""
    head = batch[0]
    started = time.perf_counter()
    try:
        if len(batch) == 1:
            outputs_per = [head.fn(head.inputs)]
        else:
            joined = [np.concatenate([r.inputs[i] for r in batch], axis=0) for i in range(len(head.inputs))]
            outputs = head.fn(joined)
            sizes = [r.dim0() for r in batch]
            total = sum(sizes)
            if any(o.ndim == 0 or o.shape[0] != total for o in outputs):
                raise GearsError("ERR Model did not generate the expected batch size")
            offsets = np.cumsum([0, *sizes])
            outputs_per = [[o[offsets[i] : offsets[i + 1]] for o in outputs] for i in range(len(batch))]
        error = None
    except GearsError as exc:
        outputs_per, error = [], str(exc)
    except Exception as exc:  # noqa: BLE001 - a backend error is the reply of every member
        lines = str(exc).strip().splitlines()
        outputs_per, error = [], (lines[0] if lines else type(exc).__name__)
    seconds = time.perf_counter() - started
    duration_us = int(seconds * 1_000_000)
    for i, request in enumerate(batch):
        stats = request.stats
        if error is None:
            request.outputs = outputs_per[i]
            if stats is not None:
                stats.calls += 1
                stats.duration_us += duration_us
                first = request.outputs[0] if request.outputs else None
                stats.samples += int(first.shape[0]) if first is not None and first.ndim else 0
        else:
            request.error = error
            if stats is not None:
                stats.calls += 1
                stats.errors += 1
        request.finish()
    return seconds


class Runner:
    """The run queues of one worker, created per device on first use."""

    def __init__(self, threads_per_queue: int = 1) -> None:
        self.threads_per_queue = threads_per_queue
        self._queues: dict[str, DeviceQueue] = {}
        self._lock = threading.Lock()
        self.stats: dict[str, RunStats] = {}
        self.metrics = RunMetrics()

    def queue(self, device: str) -> DeviceQueue:
        name = device.upper()
        with self._lock:
            queue = self._queues.get(name)
            if queue is None:
                queue = self._queues[name] = DeviceQueue(name, self.threads_per_queue, self.metrics)
            return queue

    def queue_depths(self) -> dict[str, int]:
        """``device -> requests waiting`` for every queue created so far."""
        with self._lock:
            return {name: queue.depth for name, queue in self._queues.items()}

    def submit(self, device: str, request: RunRequest) -> RunRequest:
        """Queue a request; wait on ``request.done`` or add a callback."""
        self.queue(device).submit(request)
        return request

    def run(self, device: str, request: RunRequest) -> RunRequest:
        """Queue a request and wait for it."""
        self.submit(device, request)
        request.done.wait()
        return request

    def call(self, device: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn()`` on the device queue's thread and return its result (errors re-raised).

        Loading models there too keeps all of a device's torch work on one thread, which
        runs noticeably faster than loading on one thread and running on another.
        """
        box: list[tuple[bool, Any]] = []

        def work(_inputs: list[Any]) -> list[Any]:
            try:
                box.append((True, fn()))
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                box.append((False, exc))
            return []

        self.run(device, RunRequest(target=None, fn=work, inputs=[]))
        ok, value = box[0]
        if not ok:
            raise value
        result: _T = value  # (what fn() returned)
        return result
