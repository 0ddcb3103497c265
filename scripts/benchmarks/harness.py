"""What every suite shares: the figure type, timing and percentiles, a throw-away local
cluster, client threads, and the two ways a run is reported (a table or one JSON object)."""

from __future__ import annotations

import json
import os
import platform
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from gears_cluster import launcher

#: The first port of a suite's cluster unless ``--base-port`` says otherwise.
BASE_PORT = 36001
#: The CORD-19 sample articles next to the repository (``../shared``), read in place.
SAMPLE = Path(__file__).resolve().parents[3] / "shared" / "data" / "cord19-sample"
WORDS = [
    "virus", "protein", "cell", "infection", "patient", "immune", "response", "clinical", "study", "analysis",
    "respiratory", "coronavirus", "vaccine", "antibody", "genome", "sequence", "host", "model", "data", "result",
]


@dataclass
class Case:
    """One benchmark figure."""

    name: str
    metric: str
    framework: float
    baseline: float | None
    higher_is_better: bool
    goal: str

    @property
    def ratio(self) -> float | None:
        """``framework / baseline``, or None without a (non-zero) baseline."""
        if self.baseline is None or self.baseline == 0:
            return None
        return self.framework / self.baseline

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def env() -> dict[str, Any]:
    """Where the figures were taken."""
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "redis_py": redis.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def report_json(suite: str, cases: list[Case]) -> str:
    """``{"suite", "cases": [{"name", "metric", "framework", "baseline", "ratio",
    "higher_is_better", "goal"}], "env": {...}}`` on one line."""
    return json.dumps({"suite": suite, "cases": [c.as_json() for c in cases], "env": env()})


def report_table(suite: str, cases: list[Case]) -> str:
    """The figures as a table, one case a line."""
    lines = [f"suite {suite}"]
    for case in cases:
        ratio = f"{case.ratio:.2f}x" if case.ratio is not None else "-"
        baseline = f"{case.baseline:,.1f}" if case.baseline is not None else "-"
        lines.append(f"  {case.name:<12} framework {case.framework:>12,.1f} {case.metric:<10} baseline {baseline:>12} "
                     f"ratio {ratio:>7}   goal {case.goal}")
    return "\n".join(lines)


def worker_thread_settings() -> None:
    """Give this process the OpenMP wait policy the gears workers run with (idle threads
    sleep: see gears.node.worker_handle), so an in-process forward computes the way a served one does.
    Must run before torch is imported; a policy set by the user is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# ------------------------------------------------------------------ timing and percentiles
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, result)`` of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed_calls(fn: Callable[[], Any], count: int) -> list[float]:
    """Milliseconds of ``count`` sequential calls, sorted."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def alternating(served: Callable[[], Any], in_process: Callable[[], Any], count: int,
                blocks: int = 10) -> tuple[list[float], list[float]]:
    """Latencies (ms) of both, in alternating blocks so the machine's drift cancels."""
    a: list[float] = []
    b: list[float] = []
    per_block = max(1, count // blocks)
    for _ in range(blocks):
        b += timed_calls(in_process, per_block)
        a += timed_calls(served, per_block)
    return sorted(a), sorted(b)


def percentile(values: list[float], p: float) -> float:
    """The ``p`` quantile (0..1) of sorted ``values``; NaN when there are none."""
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def p50(values: list[float]) -> float:
    return percentile(values, 0.5)


def p95(values: list[float]) -> float:
    return percentile(values, 0.95)


def p99(values: list[float]) -> float:
    return percentile(values, 0.99)


def median(values: list[float]) -> float:
    """The median of unsorted ``values``."""
    return p50(sorted(values))


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def run_clients(client_loop: Callable[[int], None], clients: int) -> float:
    """Run ``client_loop(n)`` for ``n`` in ``range(clients)``, each on its own thread; seconds taken."""
    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


# --------------------------------------------------------------------------- clusters
@contextmanager
def bench_folder(prefix: str = "gears-bench-") -> Iterator[Path]:
    """A temporary folder for one suite's cluster and files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        yield Path(folder)


@contextmanager
def running_cluster(folder: Path, **options: Any) -> Iterator[launcher.ClusterState]:
    """A local cluster in ``folder`` (``launcher.up`` options), brought down afterwards."""
    state = launcher.up(dir=folder, **options)
    try:
        yield state
    finally:
        launcher.down(folder)


@contextmanager
def local_cluster(prefix: str = "gears-bench-", **options: Any) -> Iterator[launcher.ClusterState]:
    """A local cluster in a temporary folder of its own."""
    with bench_folder(prefix) as folder, running_cluster(folder, **options) as state:
        yield state


def masters(state: launcher.ClusterState) -> list[redis.Redis]:
    """A client on each master's server node (not its front door)."""
    return [redis.Redis(port=port, decode_responses=True) for port in state.server_ports]


def sentence(rng: random.Random, size: int) -> str:
    """``size`` characters of words from :data:`WORDS`."""
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:size]
