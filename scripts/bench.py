"""Benchmarks: the framework against what a user would write instead, in the same run.

    python scripts/bench.py batch [--keys 200000] [--json]
    python scripts/bench.py triggers [--events 20000] [--json]
    python scripts/bench.py ai [--clients 32] [--json]
    python scripts/bench.py nlp [--copies 3] [--json]

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
import multiprocessing
import os
import platform
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from cluster import launcher, servers  # noqa: E402

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


# --------------------------------------------------------------------- triggers suite
TRIGGER_SCRIPT = """
GB().foreach(lambda r: execute('SET', 'evout{%s}' % r['key'], r['value'])).register('ev:*', mode='async_local', eventTypes=['set'])
"""

STREAM_SCRIPT = """
GB('StreamReader').foreach(lambda r: execute('SADD', 'stream-done{%s}' % hashtag(), r['value']['n'])).register('evstream*', mode='async_local', batch=10)
"""


class _Observer:
    """Stamps when each output key (``<prefix>{ev:<n>}``) appears, from every master's notifications."""

    def __init__(self, server_ports: list[int], prefix: str) -> None:
        self.seen: dict[int, float] = {}
        self._prefix = prefix
        self._threads = []
        self._pubsubs = []
        for port in server_ports:
            pubsub = redis.Redis(port=port, decode_responses=True).pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe("__keyevent@*__:set")
            self._pubsubs.append(pubsub)
            thread = threading.Thread(target=self._listen, args=(pubsub,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _listen(self, pubsub: Any) -> None:
        try:
            for message in pubsub.listen():
                key = message["data"]
                if key.startswith(self._prefix):
                    self.seen[int(key[key.index(":") + 1 : -1])] = time.time()
        except Exception:  # noqa: BLE001 - closed at the end of the run
            return

    def wait(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.seen) < count and time.time() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        for pubsub in self._pubsubs:
            pubsub.close()


def _write_events(port: int, count: int, rate: float | None, first: int, out: Any) -> None:
    """A separate client: SET ev:<n> at ``rate`` events/s (as fast as possible if None)."""
    from redis.cluster import RedisCluster

    cluster = RedisCluster(host="127.0.0.1", port=port)
    stamps = []
    if rate is None:
        pipe = cluster.pipeline(transaction=False)
        for i in range(first, first + count):
            stamps.append(time.time())
            pipe.set(f"ev:{i}", i)
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
    else:
        start = time.perf_counter()
        for n, i in enumerate(range(first, first + count)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            stamps.append(time.time())
            cluster.set(f"ev:{i}", i)
    out.send(stamps)
    cluster.close()


def _run_writer(port: int, count: int, rate: float | None, first: int) -> list[float]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_write_events, args=(port, count, rate, first, child))
    process.start()
    stamps = parent.recv()
    process.join()
    return stamps


def _baseline_trigger(server_ports: list[int], port: int, stop: Any) -> None:
    """What a user writes instead: one process on every master's notifications, doing the same write."""
    from redis.cluster import RedisCluster

    cluster = RedisCluster(host="127.0.0.1", port=port, decode_responses=True)
    readers = [redis.Redis(port=p, decode_responses=True) for p in server_ports]
    pubsubs = []
    for reader in readers:
        pubsub = reader.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe("__keyevent@*__:set")
        pubsubs.append(pubsub)
    while not stop.is_set():
        idle = True
        for reader, pubsub in zip(readers, pubsubs):
            message = pubsub.get_message(timeout=0)
            while message is not None:
                idle = False
                key = message["data"]
                if key.startswith("ev:"):
                    cluster.set("bout{%s}" % key, reader.get(key) or "")
                message = pubsub.get_message(timeout=0)
        if idle:
            time.sleep(0.0002)


def _latencies(stamps: list[float], seen: dict[int, float], first: int) -> list[float]:
    return sorted((seen[first + i] - t) * 1000 for i, t in enumerate(stamps) if first + i in seen)


def _percentile(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def suite_triggers(args: argparse.Namespace) -> list[Case]:
    """KeysReader registration vs a notification-following redis-py process; stream loss over a kill -9."""
    events = args.events
    with tempfile.TemporaryDirectory(prefix="gears-bench-") as folder:
        state = launcher.up(masters=3, base_port=args.base_port, dir=folder, config={"appendonly": "no"})
        try:
            client = state.client(decode_responses=True)
            client.execute_command("RG.PYEXECUTE", TRIGGER_SCRIPT)
            fw = _Observer(state.server_ports, "evout")
            stamps = _run_writer(state.ports[0], events, 2000.0, 0)
            fw.wait(events, 30)
            fw_lat = _latencies(stamps, fw.seen, 0)
            burst = _run_writer(state.ports[0], events, None, events)
            fw.wait(2 * events, 60)
            fw_burst = [fw.seen[events + i] for i in range(events) if events + i in fw.seen]
            fw_rate = len(fw_burst) / (max(fw_burst) - burst[0]) if fw_burst else 0.0
            fw_lost = events - len(fw_burst)
            fw.close()
            for entry in client.execute_command("RG.DUMPREGISTRATIONS"):
                client.execute_command("RG.UNREGISTER", entry[1])

            stop = multiprocessing.Event()
            base = _Observer(state.server_ports, "bout")
            worker = multiprocessing.Process(target=_baseline_trigger, args=(state.server_ports, state.ports[0], stop))
            worker.start()
            time.sleep(1.0)  # let the baseline subscribe before the first event
            stamps_b = _run_writer(state.ports[0], events, 2000.0, 2 * events)
            base.wait(events, 30)
            base_lat = _latencies(stamps_b, base.seen, 2 * events)
            burst_b = _run_writer(state.ports[0], events, None, 3 * events)
            base.wait(2 * events, 60)
            base_burst = [base.seen[3 * events + i] for i in range(events) if 3 * events + i in base.seen]
            base_rate = len(base_burst) / (max(base_burst) - burst_b[0]) if base_burst else 0.0
            stop.set()
            worker.join(10)
            base.close()
            lost = _stream_loss(state, args.stream_entries)
        finally:
            launcher.down(folder)
    return [
        Case("latency_p50_ms", "ms at 2000 events/s", _percentile(fw_lat, 0.5), _percentile(base_lat, 0.5), False, "<= 1 ms"),
        Case("latency_p99_ms", "ms at 2000 events/s", _percentile(fw_lat, 0.99), _percentile(base_lat, 0.99), False, "<= 10 ms"),
        Case("throughput", f"events/s (burst of {events}, {fw_lost} lost)", fw_rate, base_rate, True, ">= 1.0x the baseline"),
        Case("stream_lost", "entries lost across a gears node kill -9", float(lost), None, False, "0"),
    ]


def _stream_loss(state: launcher.ClusterState, entries: int) -> int:
    """XADD ``entries`` at a steady rate, kill -9 the stream's gears node mid-way, restart it."""
    client = state.client(decode_responses=True)
    client.execute_command("RG.PYEXECUTE", STREAM_SCRIPT)
    cluster = state.cluster_client(decode_responses=True)
    stream = "evstream{06S}"
    owner = next(node for node in state.nodes if node.gears_port == cluster.get_node_from_key(stream).port)
    done_key = "stream-done{06S}"
    for i in range(entries):
        cluster.xadd(stream, {"n": i})
        if i == entries // 2:
            os.kill(owner.gears_pid, signal.SIGKILL)
            while servers.is_running(owner.gears_ref()):
                time.sleep(0.01)
            launcher.up(dir=state.dir)
    deadline = time.time() + 60
    while cluster.scard(done_key) < entries and time.time() < deadline:
        time.sleep(0.05)
    processed = cluster.scard(done_key)
    cluster.close()
    return entries - processed


# --------------------------------------------------------------------------- ai suite
def _store_encoder(client: redis.Redis, key: str, blob: bytes, batchsize: int) -> None:
    options = ["BATCHSIZE", batchsize] if batchsize else []
    client.execute_command("AI.MODELSTORE", key, "TORCH", "CPU", *options, "BLOB", blob)


def _timed_calls(fn: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def _concurrent_load(port: int, clients: int, model: str, seconds: float) -> tuple[float, list[float]]:
    """``clients`` threads, each its own connection and inputs, running MODELEXECUTE for ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client_loop(n: int) -> None:
        conn = redis.Redis(port=port)
        mine = []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            reply = conn.execute_command("AI.MODELEXECUTE", model, "INPUTS", 2, f"ids{n}{{06S}}", f"mask{n}{{06S}}", "OUTPUTS", 1, f"out{n}{{06S}}")
            if reply != b"OK":
                raise RuntimeError(f"MODELEXECUTE replied {reply!r}")
            mine.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(mine)
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return len(latencies) / elapsed, sorted(latencies)


def suite_ai(args: argparse.Namespace) -> list[Case]:
    """A 6-layer BERT encoder (seq 64): MODELEXECUTE overhead vs in-process, and batching under 32 clients."""
    import io

    import numpy as np
    import torch

    from pipelines.bert import encoder_torchscript, example_inputs

    blob = encoder_torchscript(64)
    local = torch.jit.load(io.BytesIO(blob))
    ids, mask = example_inputs(1, 64)

    def in_process_block(count: int) -> list[float]:
        with torch.inference_mode():
            local(ids, mask)
            return _timed_calls(lambda: local(ids, mask), count)

    with tempfile.TemporaryDirectory(prefix="gears-bench-") as folder:
        state = launcher.up(masters=3, base_port=args.base_port, dir=folder, config={"appendonly": "no"})
        try:
            cluster = state.cluster_client()
            port = cluster.get_node_from_key("enc{06S}").port
            cluster.close()
            client = redis.Redis(port=port)
            _store_encoder(client, "enc{06S}", blob, 0)
            _store_encoder(client, "encb{06S}", blob, 16)
            for n in range(args.clients):
                client.execute_command("AI.TENSORSET", f"ids{n}{{06S}}", "INT64", 1, 64, "BLOB", ids.numpy().astype("<i8").tobytes())
                client.execute_command("AI.TENSORSET", f"mask{n}{{06S}}", "INT64", 1, 64, "BLOB", mask.numpy().astype("<i8").tobytes())
            run = lambda: client.execute_command(  # noqa: E731
                "AI.MODELEXECUTE", "enc{06S}", "INPUTS", 2, "ids0{06S}", "mask0{06S}", "OUTPUTS", 1, "out0{06S}"
            )
            run()
            client.execute_command("AI.INFO", "enc{06S}", "RESETSTAT")
            # Same conditions for both: the cluster is up and idle; in-process before and after.
            # Same conditions for both (cluster up, idle), alternating blocks so drift cancels.
            served, inproc = [], []
            block = max(1, args.calls // 10)
            for _ in range(10):
                inproc += in_process_block(block)
                served += _timed_calls(run, block)
            served.sort()
            inproc.sort()
            got = np.frombuffer(client.execute_command("AI.TENSORGET", "out0{06S}", "BLOB"), "<f4")
            with torch.inference_mode():
                expected = local(ids, mask).numpy().ravel()
            if not np.allclose(got, expected, atol=1e-4):
                raise RuntimeError("the served model's output differs from the in-process output")
            info = client.execute_command("AI.INFO", "enc{06S}")
            calls_made = 10 * max(1, args.calls // 10)
            stats_match = info[15] == calls_made and info[17] == 0
            backend_ms = info[11] / info[15] / 1000
            plain_rate, plain_lat = _concurrent_load(port, args.clients, "enc{06S}", args.seconds)
            batched_rate, batched_lat = _concurrent_load(port, args.clients, "encb{06S}", args.seconds)
            client.close()
        finally:
            launcher.down(folder)
    p50 = lambda v: v[len(v) // 2]  # noqa: E731
    p95 = lambda v: v[min(len(v) - 1, int(len(v) * 0.95))]  # noqa: E731
    return [
        Case("overhead_p50_ms", f"ms (served p50 {p50(served):.2f} - in-process p50 {p50(inproc):.2f})",
             p50(served) - p50(inproc), None, False, "<= 1 ms"),
        Case("serving_path_p50_ms", f"ms (served p50 {p50(served):.2f} - mean backend time {backend_ms:.2f} in the worker)",
             p50(served) - backend_ms, None, False, "the framework's own share of the overhead"),
        Case("batching_throughput", f"requests/s, {args.clients} clients, BATCHSIZE 16 vs 0", batched_rate, plain_rate, True, ">= 1.5x"),
        Case("batching_p95", f"ms p95, {args.clients} clients, BATCHSIZE 16 vs 0", p95(batched_lat), p95(plain_lat), False, "<= 1.2x"),
        Case("info_calls_match", "AI.INFO calls == requests made (1 = yes)", float(stats_match), None, True, "1"),
    ]


# -------------------------------------------------------------------------- nlp suite
SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cord19-sample"


def _copies(folder: Path, copies: int) -> list[Path]:
    """The sample articles, each ``copies`` times under new ids (read, never copied into the repo)."""
    files = []
    for source in sorted(SAMPLE.glob("*.json")):
        text = source.read_text(encoding="utf-8")
        for k in range(copies):
            target = folder / source.name.replace(".xml.json", f"-{k}.xml.json")
            target.write_text(text, encoding="utf-8")
            files.append(target)
    return files


def _nlp_baseline(cluster: Any, files: list[Path], graph: tuple[str, int]) -> tuple[int, dict[str, float]]:
    """What a user writes instead: one process, the same libraries, the same outputs."""
    from pipelines.graph import GraphWriter
    from pipelines.ingest import read_article
    from pipelines.nlp.concepts import concept_pairs, default_dictionary
    from pipelines.nlp.language import is_english
    from pipelines.nlp.sentences import split_sentences
    from pipelines.nlp.spelling import correct

    dictionary = default_dictionary()
    writer = GraphWriter(*graph, graph="baseline")
    timings = {"sentences": 0.0, "concepts": 0.0, "graph": 0.0}
    sentences = 0
    edges: list[dict[str, Any]] = []
    for path in files:
        article = read_article(path)
        start = time.perf_counter()
        if not is_english(article.text):
            continue
        corrected = [correct(s) for s in split_sentences(article.text)]
        key = f"bsentence:{article.id}"
        cluster.hset(key, mapping={str(i): s for i, s in enumerate(corrected)})
        sentences += len(corrected)
        middle = time.perf_counter()
        for index, text in enumerate(corrected):
            for a, b in concept_pairs(dictionary.find_concepts(text)):
                edges.append({"source": a.concept_id, "destination": b.concept_id, "source_name": a.name,
                              "destination_name": b.name, "year": article.year, "sentence": f"{key}:{index}"})
        end = time.perf_counter()
        while len(edges) >= 100:
            writer.write_edges(edges[:100])
            del edges[:100]
        timings["sentences"] += middle - start
        timings["concepts"] += end - middle
        timings["graph"] += time.perf_counter() - end
    if edges:
        start = time.perf_counter()
        writer.write_edges(edges)
        timings["graph"] += time.perf_counter() - start
    return sentences, timings


def _stage_times(ports: list[int]) -> dict[str, float]:
    """Seconds spent in each stage's executions, summed over the shards."""
    totals: dict[str, float] = {}
    for port in ports:
        for entry in redis.Redis(port=port, decode_responses=True).execute_command("RG.DUMPREGISTRATIONS"):
            desc = entry[5] or entry[1]
            stage = desc.split(":")[0] if desc.startswith("nlp stage") else desc
            totals[stage] = totals.get(stage, 0.0) + entry[7][13] / 1000
    return totals


def suite_nlp(args: argparse.Namespace) -> list[Case]:
    """The whole NLP pipeline into the graph vs one process doing the same steps."""
    from pipelines.deploy import deploy_nlp, pipeline_status
    from pipelines.ingest import ingest
    from pipelines.nlp.spelling import warm_up

    graph_port = args.base_port + 98
    with tempfile.TemporaryDirectory(prefix="gears-bench-") as folder:
        files = _copies(Path(folder), args.copies)
        state = launcher.up(masters=3, base_port=args.base_port, dir=Path(folder) / "cluster",
                            config={"appendonly": "no"}, graph_port=graph_port)
        try:
            graph = ("127.0.0.1", graph_port)
            cluster = state.cluster_client(decode_responses=True)
            warm_up()
            base_start = time.perf_counter()
            base_sentences, base_stages = _nlp_baseline(cluster, files, graph)
            base_s = time.perf_counter() - base_start
            client = state.client(decode_responses=True)
            deploy_nlp(client, graph)
            fw_start = time.perf_counter()
            ingest(cluster, files)
            while True:
                status = pipeline_status(cluster, graph)
                if status["sentences"] >= base_sentences and status["matched_sentences"] == status["sentences"] and status["edges_pending"] == 0:
                    break
                time.sleep(0.5)  # polling is cheap (key names and HLEN) but not free
            fw_s = time.perf_counter() - fw_start
            stages = _stage_times(state.ports)
            if status["sentences"] != base_sentences:
                raise RuntimeError(f"framework made {status['sentences']} sentences, baseline {base_sentences}")
            cluster.close()
        finally:
            launcher.down(Path(folder) / "cluster")
    n = len(files)
    stage_text = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(stages.items()))
    base_text = ", ".join(f"{k} {v:.1f}s" for k, v in base_stages.items())
    print(f"  per stage (framework, summed over shards): {stage_text}", file=sys.stderr)
    print(f"  per stage (baseline): {base_text}", file=sys.stderr)
    return [
        Case("end_to_end", f"articles/s ({n} articles, {base_sentences} sentences, 3 shards)", n / fw_s, n / base_s, True, ">= 1.6x the single-process script"),
        Case("sentences_per_s", "sentences/s", base_sentences / fw_s, base_sentences / base_s, True, "same ratio"),
    ]


SUITES: dict[str, Callable[[argparse.Namespace], list[Case]]] = {
    "nlp": suite_nlp,
    "batch": suite_batch,
    "triggers": suite_triggers,
    "ai": suite_ai,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--keys", type=int, default=200_000, help="batch: number of hashes")
    parser.add_argument("--events", type=int, default=20_000, help="triggers: events per measurement")
    parser.add_argument("--stream-entries", type=int, default=2_000, help="triggers: stream entries across the kill")
    parser.add_argument("--calls", type=int, default=200, help="ai: sequential calls for the overhead")
    parser.add_argument("--clients", type=int, default=32, help="ai: concurrent clients for batching")
    parser.add_argument("--seconds", type=float, default=15.0, help="ai: seconds per batching measurement")
    parser.add_argument("--copies", type=int, default=3, help="nlp: copies of each of the 22 sample articles")
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
