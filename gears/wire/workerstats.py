"""What a worker counts for the node's metrics, and the typed snapshot it answers with.

The worker keeps monotonic counters and histograms (standard library only: the worker
never imports node code or ``prometheus_client``); the node asks for a
:class:`WorkerStats` snapshot (IPC call ``metrics``) whenever it is scraped and turns it
into Prometheus families (:mod:`gears.node.metrics`). Counters restart from zero when a
worker process is replaced (Prometheus' ``rate()`` treats that as a counter reset).
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass, field, replace

__all__ = [
    "AI_BATCH_BUCKETS",
    "DURATION_BUCKETS",
    "Histogram",
    "HistogramSnapshot",
    "RegistrationSample",
    "WorkerStats",
]

#: Upper bounds (seconds) of duration histograms: 0.25 ms to 10 s.
DURATION_BUCKETS: tuple[float, ...] = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Upper bounds (samples) of the model batch size histogram.
AI_BATCH_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class HistogramSnapshot:
    """A histogram at one moment: per-bucket (not cumulative) counts, the last one for
    values above every bound, plus the sum of every observed value."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, cumulative count), ...]`` ending with ``+Inf``, as Prometheus wants them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        return out


class Histogram:
    """A thread-safe histogram of observed values (fixed bucket bounds)."""

    __slots__ = ("_bounds", "_counts", "_lock", "_total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._total = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        """Count one value."""
        index = bisect_left(self._bounds, value)
        with self._lock:
            self._counts[index] += 1
            self._total += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            return HistogramSnapshot(self._bounds, tuple(self._counts), self._total)


@dataclass(frozen=True)
class RegistrationSample:
    """One registration on this shard: monotonic counts (``RG.CLEARREGISTRATIONSSTATS``
    does not reset them) and its latest lag."""

    id: str
    reader: str
    triggered: int
    failures: int
    #: How long the latest event waited before its execution started (a stream entry:
    #: since the entry's id time), in seconds.
    lag_seconds: float


@dataclass(frozen=True)
class WorkerStats:
    """The worker's answer to the node's ``metrics`` call."""

    #: Executions that ran only in this worker (triggered ``async_local``/``sync`` ones),
    #: by outcome: ``ok``, ``error``, ``aborted``.
    executions: dict[str, int] = field(default_factory=dict)
    registrations: tuple[RegistrationSample, ...] = ()
    #: ``(model or script key, device) -> runs``.
    ai_runs: dict[tuple[str, str], int] = field(default_factory=dict)
    #: ``(model or script key, device) -> run durations``.
    ai_durations: dict[tuple[str, str], HistogramSnapshot] = field(default_factory=dict)
    #: ``device -> requests waiting`` (devices whose queue exists in this worker).
    ai_queue_depth: dict[str, int] = field(default_factory=dict)
    #: Samples per batch run (``None``: no model layer in this worker yet).
    ai_batch_sizes: HistogramSnapshot | None = None

    @classmethod
    def combined(cls, parts: list[WorkerStats]) -> WorkerStats:
        """The counts of a node's workers together (one per user environment; the model
        layer runs in the base worker, listed first, whose model figures are kept).

        >>> a = WorkerStats(executions={"ok": 2})
        >>> WorkerStats.combined([a, WorkerStats(executions={"ok": 1, "error": 1})]).executions
        {'ok': 3, 'error': 1}
        """
        executions: dict[str, int] = {}
        for part in parts:
            for outcome, count in part.executions.items():
                executions[outcome] = executions.get(outcome, 0) + count
        first = parts[0] if parts else cls()
        return replace(
            first, executions=executions, registrations=tuple(r for part in parts for r in part.registrations)
        )
