"""Prometheus metrics of one gears node (``gears node --metrics HOST:PORT``).

Every family carries a ``node`` label (the node's announced front door address); the
families and their labels are documented in docs/metrics.md. Values are gathered when
Prometheus scrapes, from where they are counted:

* the front door (:class:`CommandMetrics`): ``RG.*``/``AI.*`` commands one by one;
  forwarded commands as one plain integer per batch of requests (the fast path pays one
  addition per chunk it forwards) and a sampled latency
  (:data:`gears.node.frontdoor.PASSTHROUGH_SAMPLE_EVERY`);
* the coordinator (executions initiated here) and the worker handle (restarts, memory);
* the worker, through its ``metrics`` call (a :class:`~gears.wire.workerstats.WorkerStats`):
  executions that ran only in the worker, registrations, model runs and queues.

:func:`info_section` writes the ``# Gears`` section the front door adds to ``INFO``.

The HTTP endpoint is ``prometheus_client``'s own server (a thread); a scrape asks the
node's event loop for the worker's snapshot and waits at most :data:`SCRAPE_WORKER_SECONDS`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gears.wire.protocol import WorkerCall
from gears.wire.workerstats import DURATION_BUCKETS, Histogram, HistogramSnapshot, WorkerStats

if TYPE_CHECKING:  # pragma: no cover
    from gears.node.services import NodeServices

__all__ = [
    "FAMILIES",
    "PASSTHROUGH",
    "CommandMetrics",
    "MetricsServer",
    "NodeCollector",
    "info_section",
]

log = logging.getLogger(__name__)

#: The ``command`` label of every forwarded command.
PASSTHROUGH = "passthrough"
#: How long a scrape waits for the worker's counts before leaving them out.
SCRAPE_WORKER_SECONDS = 2.0

#: Every family a node exports (names as Prometheus sees them, without the
#: ``_bucket``/``_sum``/``_count`` series of histograms) with its type and help text.
FAMILIES: dict[str, tuple[str, str]] = {
    "gears_commands_total": ("counter", "Commands received by the front door (RG.*/AI.* by name, the rest as passthrough)."),
    "gears_command_duration_seconds": ("histogram", "Time to answer a command (passthrough: sampled forwarded batches)."),
    "gears_executions_total": ("counter", "Executions that ended, by outcome (ok, error, aborted)."),
    "gears_registration_triggered_total": ("counter", "Executions triggered by a registration on this shard."),
    "gears_registration_failures_total": ("counter", "Triggered executions of a registration that failed on this shard."),
    "gears_registration_lag_seconds": ("gauge", "How long the latest event of a registration waited before it ran."),
    "gears_worker_restarts_total": ("counter", "Worker processes that ended other than by a node shutdown."),
    "gears_worker_memory_bytes": ("gauge", "Resident memory of the worker process."),
    "gears_ai_runs_total": ("counter", "Model and script runs (requests) by key and device."),
    "gears_ai_run_duration_seconds": ("histogram", "Time of the batch run each model or script request was part of."),
    "gears_ai_queue_depth": ("gauge", "Run requests waiting in a device's queue."),
    "gears_ai_batch_size": ("histogram", "Samples (dim 0) per batch run."),
}


def _family_name(name: str) -> str:
    """The name a ``*MetricFamily`` wants (counters without ``_total``: it adds it)."""
    return name[: -len("_total")] if FAMILIES[name][0] == "counter" else name


class CommandMetrics:
    """What the front door counts (it calls :meth:`handled` and :meth:`passthrough_sampled`).

    ``passthrough`` (the number of forwarded commands) is kept by the front door itself as
    a plain integer: see :attr:`gears.node.frontdoor.FrontDoor.passthrough_commands`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handled: dict[str, Histogram] = {}
        self.passthrough_latency = Histogram(DURATION_BUCKETS)

    def handled(self, name: str, seconds: float) -> None:
        """An ``RG.*``/``AI.*`` command (upper case) was answered in ``seconds``."""
        histogram = self._handled.get(name)
        if histogram is None:
            with self._lock:
                histogram = self._handled.setdefault(name, Histogram(DURATION_BUCKETS))
        histogram.observe(seconds)

    def passthrough_sampled(self, seconds: float) -> None:
        """A sampled forwarded batch took ``seconds`` from its write to its last reply."""
        self.passthrough_latency.observe(seconds)

    def handled_snapshots(self) -> dict[str, HistogramSnapshot]:
        with self._lock:
            items = list(self._handled.items())
        return {name: histogram.snapshot() for name, histogram in items}


def _histogram(family: HistogramMetricFamily, labels: list[str], snapshot: HistogramSnapshot) -> None:
    family.add_metric(labels, snapshot.cumulative(), snapshot.total)


class NodeCollector(Collector):
    """Builds every family of :data:`FAMILIES` from a node's live state at scrape time."""

    def __init__(self, node: "NodeServices", loop: asyncio.AbstractEventLoop) -> None:
        self._node = node
        self._loop = loop

    def _worker_stats(self) -> WorkerStats | None:
        future = asyncio.run_coroutine_threadsafe(_worker_stats(self._node), self._loop)
        try:
            return future.result(SCRAPE_WORKER_SECONDS + 1)
        except Exception as exc:  # noqa: BLE001 - the node's loop did not answer: leave the worker out
            future.cancel()
            log.warning("metrics: the node did not hand over the worker's counts (%s)", exc)
            return None

    def collect(self) -> Iterator[Metric]:
        node = self._node
        label = node.announce_text
        stats = self._worker_stats() or WorkerStats()

        def family(name: str, extra: list[str]) -> Any:
            kind, text = FAMILIES[name]
            cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily, "histogram": HistogramMetricFamily}[kind]
            return cls(_family_name(name), text, labels=["node", *extra])

        commands = family("gears_commands_total", ["command"])
        durations = family("gears_command_duration_seconds", ["command"])
        for name, snapshot in sorted(node.command_metrics.handled_snapshots().items()):
            commands.add_metric([label, name], snapshot.count)
            _histogram(durations, [label, name], snapshot)
        commands.add_metric([label, PASSTHROUGH], node.frontdoor.passthrough_commands)
        _histogram(durations, [label, PASSTHROUGH], node.command_metrics.passthrough_latency.snapshot())
        yield commands
        yield durations

        executions = family("gears_executions_total", ["status"])
        for status in ("ok", "error", "aborted"):
            executions.add_metric([label, status], node.coordinator.outcomes[status] + stats.executions.get(status, 0))
        yield executions

        triggered = family("gears_registration_triggered_total", ["registration", "reader"])
        failures = family("gears_registration_failures_total", ["registration", "reader"])
        lag = family("gears_registration_lag_seconds", ["registration", "reader"])
        for reg in stats.registrations:
            triggered.add_metric([label, reg.id, reg.reader], reg.triggered)
            failures.add_metric([label, reg.id, reg.reader], reg.failures)
            lag.add_metric([label, reg.id, reg.reader], reg.lag_seconds)
        yield triggered
        yield failures
        yield lag

        restarts = family("gears_worker_restarts_total", [])
        restarts.add_metric([label], sum(worker.restarts for worker in node.workers.handles()))
        yield restarts
        memory = family("gears_worker_memory_bytes", [])
        memory.add_metric([label], node.workers.memory()[0])
        yield memory

        runs = family("gears_ai_runs_total", ["model", "device"])
        for (model, device), count in sorted(stats.ai_runs.items()):
            runs.add_metric([label, model, device], count)
        yield runs
        run_durations = family("gears_ai_run_duration_seconds", ["model", "device"])
        for (model, device), snapshot in sorted(stats.ai_durations.items()):
            _histogram(run_durations, [label, model, device], snapshot)
        yield run_durations
        depth = family("gears_ai_queue_depth", ["device"])
        for device, waiting in sorted(stats.ai_queue_depth.items()):
            depth.add_metric([label, device], waiting)
        yield depth
        batches = family("gears_ai_batch_size", [])
        if stats.ai_batch_sizes is not None:
            _histogram(batches, [label], stats.ai_batch_sizes)
        yield batches


class MetricsServer:
    """The HTTP endpoint serving one node's :class:`NodeCollector` at ``/metrics``."""

    def __init__(self, node: "NodeServices", address: tuple[str, int]) -> None:
        self._node = node
        self.address = address
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve (raises :class:`OSError` if the port is taken)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(NodeCollector(self._node, asyncio.get_running_loop()))
        host, port = self.address
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.address = (host, self._server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", *self.address)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


async def _worker_stats(node: "NodeServices") -> WorkerStats | None:
    """What the workers counted, together, or ``None`` when the base worker is restarting
    or does not answer in time (a set's worker that does not answer is left out)."""
    parts = []
    for worker in node.workers.handles():
        if not worker.alive:
            if worker is node.workers.base:
                return None
            continue
        try:
            stats = await asyncio.wait_for(worker.query(WorkerCall.METRICS), SCRAPE_WORKER_SECONDS)
        except Exception as exc:  # noqa: BLE001 - a busy or restarting worker: its part stays empty
            log.debug("metrics: no counts from a worker (%s)", exc)
            if worker is node.workers.base:
                return None
            continue
        if isinstance(stats, WorkerStats):
            parts.append(stats)
    return WorkerStats.combined(parts) if parts else None


async def info_section(node: "NodeServices") -> str:
    """The ``# Gears`` section of ``INFO`` (``field:value`` lines ending in CRLF)."""
    stats = await _worker_stats(node)
    shard_map = node.view.shard_map
    executions = node.coordinator.outcomes
    local = stats.executions if stats is not None else {}
    fields: list[tuple[str, Any]] = [
        ("gears_node", node.announce_text),
        ("gears_server", "%s:%d" % node.server_address),
        ("gears_run_id", node.run_id),
        ("gears_shard_index", shard_map.my_index),
        ("gears_shard_count", shard_map.shard_count),
        ("gears_role", shard_map.my_role),
        ("gears_metrics", "http://%s:%d/metrics" % node.metrics.address if node.metrics is not None else ""),
        ("worker_pid", node.workers.base.pid or 0),
        ("worker_processes", len(node.workers.handles())),
        ("worker_status", "up" if stats is not None else "unavailable"),
        ("worker_restarts", sum(worker.restarts for worker in node.workers.handles())),
        ("worker_memory_bytes", node.workers.memory()[0]),
        ("worker_last_exit", node.workers.base.last_exit or ""),
        ("executions_running", sum(1 for e in node.coordinator.executions.values() if not e.done.is_set())),
    ]
    fields += [(f"executions_{status}", executions[status] + local.get(status, 0)) for status in ("ok", "error", "aborted")]
    registrations = stats.registrations if stats is not None else ()
    fields += [
        ("registrations", len(registrations)),
        ("registrations_triggered", sum(r.triggered for r in registrations)),
        ("registrations_failures", sum(r.failures for r in registrations)),
        ("registrations_max_lag_seconds", "%.6f" % max((r.lag_seconds for r in registrations), default=0.0)),
    ]
    depths = stats.ai_queue_depth if stats is not None else {}
    fields.append(("ai_queues", ",".join(sorted(depths))))
    fields += [(f"ai_queue_depth_{device.lower()}", waiting) for device, waiting in sorted(depths.items())]
    fields.append(("ai_runs", sum(stats.ai_runs.values()) if stats is not None else 0))
    lines = ["# Gears", *(f"{name}:{_info_value(value)}" for name, value in fields)]
    return "\r\n".join(lines) + "\r\n"


def _info_value(value: Any) -> str:
    """An INFO value on one line."""
    return str(value).replace("\r", " ").replace("\n", " ")
