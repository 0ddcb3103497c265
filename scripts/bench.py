"""Benchmarks: the framework against what a user would write instead, in the same run.

    python scripts/bench.py batch [--keys 200000] [--json]

Each suite starts its own local cluster (in a temporary folder, on its own ports),
measures the framework and the baseline, checks that both computed the same thing,
and prints both figures and their ratio. Absolute numbers on a shared 2-core machine
are noise; the ratios are the figures. ``--json`` prints one object:
``{"suite", "cases": [{"name", "metric", "framework", "baseline", "ratio",
"higher_is_better", "goal"}], "env": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from cluster import launcher  # noqa: E402

BASE_PORT = 36001
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
        if self.baseline in (None, 0):
            return None
        return self.framework / self.baseline

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratio"] = self.ratio
        return data


def _env() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "redis_py": redis.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _sentence(rng: random.Random, size: int) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:size]


# ---------------------------------------------------------------------- batch suite
def _load_paragraphs(state: launcher.ClusterState, count: int) -> None:
    """``paragraphs:{i}`` hashes with two ~100-byte fields, written straight to their shards."""
    rng = random.Random(7)
    cluster = state.cluster_client(decode_responses=False)
    pipe = cluster.pipeline(transaction=False)
    for i in range(count):
        pipe.hset(f"paragraphs:{{{i}}}", mapping={"title": _sentence(rng, 100), "body": _sentence(rng, 100)})
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    cluster.close()


READ_SCRIPT = """
GB('KeysReader').filter(lambda r: r['type'] == 'hash').map(lambda r: r['value']['title'].split(' ', 1)[0]).countby().run('paragraphs:*')
"""

WRITE_SCRIPT = """
def write(r):
    execute_deferred('SET', 'out:' + r['key'], r['value']['title'][:20])
GB('KeysReader').filter(lambda r: r['type'] == 'hash').foreach(write).count().run('paragraphs:*')
"""


def _masters(state: launcher.ClusterState) -> list[redis.Redis]:
    return [redis.Redis(port=port, decode_responses=True) for port in state.server_ports]


def _scan_hashes(state: launcher.ClusterState) -> Iterator[tuple[redis.Redis, list[str], list[dict[str, str]]]]:
    """What a competent user writes: SCAN every master, pipeline HGETALL in batches of 1000."""
    for server in _masters(state):
        cursor = 0
        while True:
            cursor, keys = server.scan(cursor, match="paragraphs:*", count=1000)
            pipe = server.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            yield server, keys, pipe.execute()
            if cursor == 0:
                break
        server.close()


def _baseline_read(state: launcher.ClusterState) -> dict[str, int]:
    """The read baseline: count the first word of every title."""
    counts: dict[str, int] = {}
    for _server, _keys, values in _scan_hashes(state):
        for value in values:
            word = value["title"].split(" ", 1)[0]
            counts[word] = counts.get(word, 0) + 1
    return counts


def _baseline_write(state: launcher.ClusterState) -> int:
    """The write baseline: a pipelined SET of one output key per record read."""
    written = 0
    for server, keys, values in _scan_hashes(state):
        pipe = server.pipeline(transaction=False)
        for key, value in zip(keys, values):
            pipe.set("out:" + key, value["title"][:20])
        written += len(pipe.execute())
    return written


def _framework(state: launcher.ClusterState, script: str) -> list[Any]:
    client = state.client(decode_responses=True)
    reply = client.execute_command("RG.PYEXECUTE", script)
    client.close()
    if reply[1]:
        raise RuntimeError(f"framework run had errors: {reply[1][:3]}")
    return reply[0]


def _delete_outputs(state: launcher.ClusterState) -> None:
    for server in _masters(state):
        pipe = server.pipeline(transaction=False)
        for key in server.scan_iter(match="out:*", count=5000):
            pipe.unlink(key)
        pipe.execute()
        server.close()


def suite_batch(args: argparse.Namespace) -> list[Case]:
    """Batch reads and writes over N hashes on 3 shards: RG.PYEXECUTE vs a redis-py script."""
    with tempfile.TemporaryDirectory(prefix="gears-bench-") as folder:
        state = launcher.up(masters=3, base_port=args.base_port, dir=folder, config={"appendonly": "no"})
        try:
            _load_paragraphs(state, args.keys)
            _framework(state, READ_SCRIPT)  # warm-up: worker imports, Lua script cache
            fw_s, fw_result = _timed(lambda: _framework(state, READ_SCRIPT))
            base_s, base_result = _timed(lambda: _baseline_read(state))
            fw_counts = {eval(item)["key"]: eval(item)["value"] for item in fw_result}  # noqa: S307 - our own reply
            if fw_counts != base_result:
                raise RuntimeError("framework and baseline read results differ")
            fw_w_s, fw_written = _timed(lambda: _framework(state, WRITE_SCRIPT))
            _delete_outputs(state)
            base_w_s, base_written = _timed(lambda: _baseline_write(state))
            if int(fw_written[0]) != base_written:
                raise RuntimeError(f"framework wrote {fw_written} records, baseline {base_written}")
        finally:
            launcher.down(folder)
    n = args.keys
    return [
        Case("read", "records/s", n / fw_s, n / base_s, True, ">= 1.5x the single-process redis-py script"),
        Case("write", "records/s", n / fw_w_s, n / base_w_s, True, ">= 1.0x the pipelined writer script"),
    ]


SUITES: dict[str, Callable[[argparse.Namespace], list[Case]]] = {"batch": suite_batch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--keys", type=int, default=200_000, help="batch: number of hashes")
    parser.add_argument("--base-port", type=int, default=BASE_PORT)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    cases = SUITES[args.suite](args)
    if args.json:
        print(json.dumps({"suite": args.suite, "cases": [c.as_json() for c in cases], "env": _env()}))
        return 0
    print(f"suite {args.suite}")
    for case in cases:
        ratio = f"{case.ratio:.2f}x" if case.ratio is not None else "-"
        baseline = f"{case.baseline:,.1f}" if case.baseline is not None else "-"
        print(f"  {case.name:<12} framework {case.framework:>12,.1f} {case.metric:<10} baseline {baseline:>12} ratio {ratio:>7}   goal {case.goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
