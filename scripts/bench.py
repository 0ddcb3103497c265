"""Benchmarks: the framework against what a user would write instead, in the same run.

    python scripts/bench.py batch [--keys 200000] [--json]
    python scripts/bench.py triggers [--events 20000] [--json]
    python scripts/bench.py ai [--clients 32] [--model minilm|bert-base] [--device CPU|GPU] [--json]
    python scripts/bench.py nlp [--copies 3] [--json]
    python scripts/bench.py qa [--no-bert-large] [--json]
    python scripts/bench.py chaos [--chaos-entries 1500] [--json]
    python scripts/bench.py frontdoor [--rounds 3] [--json]

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


def _worker_thread_settings() -> None:
    """Give this process the OpenMP wait policy the gears workers run with (idle threads
    sleep: see gears.workers), so an in-process forward computes the way a served one does.
    Must run before torch is imported; a policy set by the user is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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
def _store_model(client: redis.Redis, key: str, blob: bytes, batchsize: int, device: str = "CPU") -> None:
    options = ["BATCHSIZE", batchsize] if batchsize else []
    client.execute_command("AI.MODELSTORE", key, "TORCH", device, *options, "BLOB", blob)


@dataclass
class _BenchModel:
    """The model ``bench ai --model`` serves: TorchScript bytes, batch-1 inputs, output count."""

    name: str
    blob: bytes
    inputs: dict[str, Any]
    outputs: int


def _bench_model(name: str) -> _BenchModel:
    """``minilm``: the packaged 6-layer encoder at seq 64 (2 inputs, 1 output);
    ``bert-base``: BertForQuestionAnswering with bert-base's shape and random weights from a
    config (nothing downloaded), seq 128 (3 inputs, 2 outputs), exported device-portable."""
    import torch

    if name == "minilm":
        from pipelines.bert import encoder_torchscript, example_inputs

        ids, mask = example_inputs(1, 64)
        return _BenchModel(name, encoder_torchscript(64), {"ids": ids, "mask": mask}, 1)
    from transformers import BertConfig, BertForQuestionAnswering

    from pipelines.qa import export_model

    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig()).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (1, 128), generator=generator, dtype=torch.int64)
    inputs = {"ids": ids, "mask": torch.ones_like(ids), "types": torch.zeros_like(ids)}
    return _BenchModel(name, export_model(model, "TORCH"), inputs, 2)


def _client_paths(client: redis.Redis, model: _BenchModel, key: str) -> dict[str, Callable[[], Any]]:
    """The ways a client runs ``key`` on tensors of client 0: ``bare`` (inputs already
    stored), ``full`` (TENSORSET each input, MODELEXECUTE, TENSORGET each output, one
    pipeline) and ``dag`` (the same in one AI.DAGEXECUTE)."""
    names = [f"{name}0{{06S}}" for name in model.inputs]
    outs = [f"out{k}_0{{06S}}" for k in range(model.outputs)]
    sets = [("AI.TENSORSET", n, "INT64", *t.shape, "BLOB", t.numpy().astype("<i8").tobytes())
            for n, t in zip(names, model.inputs.values())]
    run = ("AI.MODELEXECUTE", key, "INPUTS", len(names), *names, "OUTPUTS", len(outs), *outs)

    def full() -> Any:
        pipe = client.pipeline(transaction=False)
        for command in sets:
            pipe.execute_command(*command)
        pipe.execute_command(*run)
        for out in outs:
            pipe.execute_command("AI.TENSORGET", out, "BLOB")
        return pipe.execute()

    dag: list[Any] = ["AI.DAGEXECUTE", "ROUTING", "{06S}"]
    for command in (*sets, run, *[("AI.TENSORGET", out, "BLOB") for out in outs]):
        dag += ["|>", *command]
    return {"bare": lambda: client.execute_command(*run), "full": full, "dag": lambda: client.execute_command(*dag)}


def _in_process(model: _BenchModel, device: str, batch: int = 1) -> Callable[[], Any]:
    """The model run in this process on ``device``: inputs to the device, outputs back."""
    import io

    import torch

    where = "cpu" if device.upper() == "CPU" else "cuda:" + (device.split(":")[1] if ":" in device else "0")
    module = torch.jit.load(io.BytesIO(model.blob), map_location=where)
    inputs = [t.repeat(batch, 1) for t in model.inputs.values()]

    def call() -> Any:
        with torch.inference_mode():
            out = module(*[t.to(where) for t in inputs])
            return [o.cpu() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    return call


def _timed_calls(fn: Callable[[], Any], count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def _alternating(served: Callable[[], Any], in_process: Callable[[], Any], count: int, blocks: int = 10) -> tuple[list[float], list[float]]:
    """Latencies (ms) of both, in alternating blocks so the machine's drift cancels."""
    a: list[float] = []
    b: list[float] = []
    per_block = max(1, count // blocks)
    for _ in range(blocks):
        b += _timed_calls(in_process, per_block)
        a += _timed_calls(served, per_block)
    return sorted(a), sorted(b)


def _run_clients(client_loop: Callable[[int], None], clients: int) -> float:
    """Run ``client_loop(n)`` for ``n`` in ``range(clients)``, each on its own thread; seconds taken."""
    started = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _concurrent_load(port: int, clients: int, model: str, seconds: float, inputs: tuple[str, ...] = ("ids", "mask"),
                     outputs: int = 1) -> tuple[float, list[float]]:
    """``clients`` threads, each its own connection and inputs (``<name><n>{06S}``), running
    MODELEXECUTE for ``seconds``."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client_loop(n: int) -> None:
        conn = redis.Redis(port=port)
        mine = []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            reply = conn.execute_command(
                "AI.MODELEXECUTE", model, "INPUTS", len(inputs), *[f"{name}{n}{{06S}}" for name in inputs],
                "OUTPUTS", outputs, *[f"out{k}_{n}{{06S}}" for k in range(outputs)],
            )
            if reply != b"OK":
                raise RuntimeError(f"MODELEXECUTE replied {reply!r}")
            mine.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(mine)
        conn.close()

    elapsed = _run_clients(client_loop, clients)
    return len(latencies) / elapsed, sorted(latencies)


ECHO_SCRIPT = """
import socket, sys
inbound, outbound = (socket.socket(fileno=int(fd)) for fd in sys.argv[1:3])
while data := inbound.recv(16):
    outbound.sendall(data)
"""


def _handover_chain_us(idle_s: float, rounds: int, hops: int = 4) -> float:
    """p50 microseconds for one byte to pass a ring of ``hops`` processes (this one and
    ``hops - 1`` plain echo processes), every process having waited ``idle_s`` first.
    It measures the machine, not the framework: how much slower a process runs after it
    slept through a model run, as every process on a served run's path does."""
    import socket
    import subprocess

    pairs = [socket.socketpair() for _ in range(hops)]
    echoes = []
    try:
        for i in range(1, hops):
            inbound, outbound = pairs[i - 1][1], pairs[i][0]
            fds = (inbound.fileno(), outbound.fileno())
            echoes.append(subprocess.Popen([sys.executable, "-c", ECHO_SCRIPT, *map(str, fds)], pass_fds=fds))
        first, last = pairs[0][0], pairs[hops - 1][1]
        first.sendall(b"x")  # every echo is up
        last.recv(16)
        times = []
        for _ in range(rounds):
            if idle_s:
                time.sleep(idle_s)
            start = time.perf_counter()
            first.sendall(b"x")
            last.recv(16)
            times.append((time.perf_counter() - start) * 1e6)
        return sorted(times)[len(times) // 2]
    finally:
        for a, b in pairs:
            a.close()
            b.close()
        for echo in echoes:
            echo.wait(timeout=10)


def _weightless_model(target_ms: float) -> Any:
    """A TorchScript model with no weights that computes for about ``target_ms``: tiny
    matrix products in a loop, so nothing streams through the caches the way the
    encoder's 90 MB of weights do."""
    import torch

    class Spin(torch.nn.Module):
        def __init__(self, rounds: int) -> None:
            super().__init__()
            self.rounds = rounds

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            x = torch.full((32, 32), 0.01)
            for _ in range(self.rounds):
                x = torch.tanh(x @ x)
            return x[:1] + (a + b).sum()

    def median_ms(model: Any) -> float:
        with torch.inference_mode():
            _timed_calls(lambda: model(zero, zero), 3)  # the profiling executor's first runs
            return _timed_calls(lambda: model(zero, zero), 5)[2]

    zero = torch.zeros(1)
    rounds = 20
    for _ in range(3):  # rescale the loop until a run takes about target_ms
        rounds = max(1, round(rounds * target_ms / median_ms(torch.jit.script(Spin(rounds)))))
    return torch.jit.script(Spin(rounds))


def suite_ai(args: argparse.Namespace) -> list[Case]:
    """A model served on one shard (``--model``, ``--device``): the client's paths against
    the in-process call, the serving path's own share, and batching under ``--clients``."""
    _worker_thread_settings()
    import io

    import numpy as np
    import torch

    device = args.device.upper()
    if device != "CPU" and not torch.cuda.is_available():
        raise SystemExit(f"bench ai --device {args.device}: this machine has no CUDA device")
    spec = _bench_model(args.model)
    inproc_call = _in_process(spec, device)

    class Add(torch.nn.Module):
        """No compute: what is left of a run is the serving path."""

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    adder = torch.jit.script(Add())
    adder_blob = io.BytesIO()
    torch.jit.save(adder, adder_blob)
    add_spec = _BenchModel("add", adder_blob.getvalue(), dict(list(spec.inputs.items())[:2]), 1)
    names = tuple(spec.inputs)

    with tempfile.TemporaryDirectory(prefix="gears-bench-") as folder:
        state = launcher.up(masters=3, base_port=args.base_port, dir=folder, config={"appendonly": "no"})
        try:
            cluster = state.cluster_client()
            port = cluster.get_node_from_key("enc{06S}").port
            cluster.close()
            client = redis.Redis(port=port)
            _store_model(client, "enc{06S}", spec.blob, 0, device)
            _store_model(client, "encb{06S}", spec.blob, 16, device)
            _store_model(client, "add{06S}", add_spec.blob, 0, device)
            for n in range(args.clients):
                for name, tensor in spec.inputs.items():
                    client.execute_command("AI.TENSORSET", f"{name}{n}{{06S}}", "INT64", *tensor.shape,
                                           "BLOB", tensor.numpy().astype("<i8").tobytes())
            paths = _client_paths(client, spec, "enc{06S}")
            for call in (*paths.values(), inproc_call):
                call()  # warm-up: loads, first allocations, CUDA context
            client.execute_command("AI.INFO", "enc{06S}", "RESETSTAT")
            # same conditions for both (cluster up, idle), alternating blocks so drift cancels
            bare, inproc = _alternating(paths["bare"], inproc_call, args.calls)
            info = client.execute_command("AI.INFO", "enc{06S}")
            calls_made = len(bare)
            stats_match = info[15] == calls_made and info[17] == 0
            backend_ms = info[11] / info[15] / 1000
            full, inproc_full = _alternating(paths["full"], inproc_call, args.calls)
            dag, inproc_dag = _alternating(paths["dag"], inproc_call, args.calls)
            got = np.frombuffer(client.execute_command("AI.TENSORGET", "out0_0{06S}", "BLOB"), "<f4")
            expected = inproc_call()[0].numpy().ravel()
            if not np.allclose(got, expected, atol=1e-3):
                raise RuntimeError("the served model's output differs from the in-process output")
            add_served, add_inproc = _alternating(_client_paths(client, add_spec, "add{06S}")["bare"],
                                                  _in_process(add_spec, device), args.calls)
            weightless = _weightless_path(client, inproc, args.calls) if device == "CPU" else None
            chain_busy, chain_idle = _handover_chain_us(0, args.calls), _handover_chain_us(0.015, args.calls)
            plain_rate, plain_lat = _concurrent_load(port, args.clients, "enc{06S}", args.seconds, names, spec.outputs)
            batched_rate, batched_lat = _concurrent_load(port, args.clients, "encb{06S}", args.seconds, names, spec.outputs)
            ceiling = _batched_ceiling(spec, device, 16, args.calls)
            client.close()
        finally:
            launcher.down(folder)
    p50 = lambda v: v[len(v) // 2]  # noqa: E731
    p95 = lambda v: v[min(len(v) - 1, int(len(v) * 0.95))]  # noqa: E731
    p99 = lambda v: v[min(len(v) - 1, int(len(v) * 0.99))]  # noqa: E731
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    on = f"{spec.name} on {device}"
    cases = [
        Case("overhead_p50_ms", f"ms, {on}: full client path (TENSORSET x{len(names)} + MODELEXECUTE + TENSORGET x{spec.outputs}, "
             f"one pipeline) p50 {p50(full):.2f} / p99 {p99(full):.2f} - in-process p50 {p50(inproc_full):.2f} / p99 {p99(inproc_full):.2f}",
             p50(full) - p50(inproc_full), None, False, "<= 1 ms"),
        Case("bare_overhead_p50_ms", f"ms, {on}: AI.MODELEXECUTE on stored tensors p50 {p50(bare):.2f} / p99 {p99(bare):.2f} "
             f"- in-process p50 {p50(inproc):.2f} / p99 {p99(inproc):.2f}",
             p50(bare) - p50(inproc), None, False, "<= 0.5 ms"),
        Case("dag_overhead_p50_ms", f"ms, {on}: the same in one AI.DAGEXECUTE p50 {p50(dag):.2f} / p99 {p99(dag):.2f} "
             f"- in-process p50 {p50(inproc_dag):.2f}", p50(dag) - p50(inproc_dag), None, False, "report"),
        Case("serving_path_mean_ms", f"ms (bare mean {mean(bare):.2f} - backend mean {backend_ms:.2f} in the worker, same calls)",
             mean(bare) - backend_ms, None, False, "the framework's own share, model compute excluded"),
        Case("overhead_add_model_p50_ms", f"ms (a model adding its two inputs: served p50 {p50(add_served):.2f} - in-process p50 {p50(add_inproc):.2f})",
             p50(add_served) - p50(add_inproc), None, False, "the path with no compute before it"),
    ]
    if weightless is not None:
        cases.append(Case("serving_path_weightless_mean_ms", weightless[0], weightless[1], None, False,
                          "near serving_path_mean_ms: the model's weights are not the cost"))
    served_samples = batched_rate  # one sample per request
    return cases + [
        Case("handover_after_idle", "us, 4 hand-overs between plain processes after 15 ms asleep vs back to back (the machine)",
             chain_idle, chain_busy, False, "1x where a woken process runs at full speed"),
        Case("batching_throughput", f"requests/s, {args.clients} clients, BATCHSIZE 16 vs 0", batched_rate, plain_rate, True, ">= 1.5x"),
        Case("batching_p95", f"ms p95, {args.clients} clients, BATCHSIZE 16 vs 0", p95(batched_lat), p95(plain_lat), False, "<= 1.2x"),
        Case("batched_ceiling_fraction", f"samples/s: served with BATCHSIZE 16 ({args.clients} clients) vs the same model "
             f"in-process at batch 16 ({ceiling:.1f}/s)", served_samples, ceiling, True, ">= 0.9x"),
        Case("info_calls_match", "AI.INFO calls == requests made (1 = yes)", float(stats_match), None, True, "1"),
    ]


def _weightless_path(client: redis.Redis, inproc: list[float], calls: int) -> tuple[str, float]:
    """The serving path around a model with no weights that computes about as long as the
    measured one in-process: ``(metric text, served mean - backend mean)``."""
    import io

    import torch

    spin = _weightless_model(inproc[len(inproc) // 2])
    spin_blob = io.BytesIO()
    torch.jit.save(spin, spin_blob)
    _store_model(client, "spin{06S}", spin_blob.getvalue(), 0)
    run = lambda: client.execute_command(  # noqa: E731
        "AI.MODELEXECUTE", "spin{06S}", "INPUTS", 2, "ids0{06S}", "mask0{06S}", "OUTPUTS", 1, "spinout{06S}")
    run()
    client.execute_command("AI.INFO", "spin{06S}", "RESETSTAT")
    served = _timed_calls(run, calls)
    info = client.execute_command("AI.INFO", "spin{06S}")
    backend_ms = info[11] / info[15] / 1000
    mean = sum(served) / len(served)
    return f"ms (a model with no weights: served mean {mean:.2f} - backend mean {backend_ms:.2f} in the worker)", mean - backend_ms


def _batched_ceiling(model: _BenchModel, device: str, batch: int, calls: int) -> float:
    """Samples/s of the model run in-process at ``batch`` (the device's batched ceiling)."""
    call = _in_process(model, device, batch)
    call()
    times = _timed_calls(call, max(5, calls // 10))
    return batch / (times[len(times) // 2] / 1000)


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


# --------------------------------------------------------------------------- qa suite
QUESTIONS = [
    "Who performs viral transmission among adults?",
    "What is the incubation period of the coronavirus infection?",
    "Which cells does the virus infect in the respiratory tract?",
    "How does the immune response protect against influenza?",
    "What protein does the antibody bind?",
    "Which vaccine protects against respiratory infection?",
    "How is the virus transmitted between patients in hospital?",
    "What causes severe acute respiratory syndrome?",
]

#: What the original "plain" QA script does per question: load the tokenizer and the
#: model, answer one question. The clock starts after ``import torch`` (so interpreter
#: start and the torch import are not counted against it).
PLAIN_QA_SCRIPT = """
import json, sys, time
import torch
start = time.perf_counter()
from transformers import BertForQuestionAnswering, BertTokenizerFast
folder, question, context = sys.argv[1:4]
tokenizer = BertTokenizerFast.from_pretrained(folder, local_files_only=True)
model = BertForQuestionAnswering.from_pretrained(folder, local_files_only=True).eval()
encoded = tokenizer(question, context, return_tensors="pt", truncation=True, max_length=512)
with torch.inference_mode():
    out = model(**encoded)
first, last = int(out.start_logits.argmax()), int(out.end_logits.argmax())
answer = tokenizer.decode(encoded["input_ids"][0][first : last + 1])
print(json.dumps({"seconds": time.perf_counter() - start, "answer": answer}))
"""


def _plain_qa_seconds(folder: Path, question: str, context: str, runs: int, omp_policy: str | None) -> float:
    """Median seconds of the plain script, each run a fresh process (with the user's own
    OpenMP settings: ``omp_policy`` as it was before the bench changed it)."""
    import subprocess

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("OMP_WAIT_POLICY", None)
    if omp_policy is not None:
        env["OMP_WAIT_POLICY"] = omp_policy
    seconds = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", PLAIN_QA_SCRIPT, str(folder), question, context],
                              capture_output=True, text=True, env=env, timeout=600, check=True)
        seconds.append(json.loads(done.stdout.strip().splitlines()[-1])["seconds"])
    return sorted(seconds)[len(seconds) // 2]


def _qa_corpus(folder: Path) -> list[Path]:
    """The 22 CORD-19 samples (read in place), or the generated corpus when they are absent."""
    files = sorted(SAMPLE.glob("*.json"))
    if files:
        return files
    from pipelines.corpus import write_corpus

    print("  (no ../shared sample; using the generated corpus)", file=sys.stderr)
    return write_corpus(folder / "corpus", 22)


def _qa_sentence(cluster: Any) -> tuple[str, str]:
    """The measured sentence: PMC140314's sentence 8 when the samples are there, else the
    longest sentence of the first hash."""
    keys = sorted(cluster.scan_iter("sentence:*", target_nodes=cluster.ALL_NODES))
    preferred = [k for k in keys if k.startswith(("sentence:PMC140314:", "sentence:PMC140314.xml:"))]
    if preferred and cluster.hexists(preferred[0], "8"):
        return f"{preferred[0]}:8", cluster.hget(preferred[0], "8")
    sentences = cluster.hgetall(keys[0])
    index = max(sentences, key=lambda i: len(sentences[i]))
    return f"{keys[0]}:{index}", sentences[index]


def _qa_inputs_for(shard: redis.Redis, sentence_key: str, question: str) -> Any:
    """The model inputs the read-through builds for ``question`` over the stored context."""
    import numpy as np

    from pipelines import qa
    from pipelines.qa_inputs import question_inputs
    from pipelines.qa_pipeline import parse_question_key, question_key

    token_key = parse_question_key(question_key(sentence_key, question)).token_key
    context_ids = np.frombuffer(shard.execute_command("AI.TENSORGET", token_key, "BLOB"), dtype="<i8")
    return question_inputs(qa.tokenizer(), question, context_ids.tolist(), qa.MAX_LENGTH)


def _qasearch_load(url: str, questions: list[str], clients: int, seconds: float) -> tuple[float, list[float], int]:
    """``clients`` threads posting /qasearch for ``seconds``: requests/s, latencies, answers."""
    import httpx

    latencies: list[float] = []
    answers = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client_loop(n: int) -> None:
        mine, got = [], 0
        with httpx.Client(timeout=120) as http:
            k = n
            while time.perf_counter() < stop:
                start = time.perf_counter()
                reply = http.post(url, json={"search": questions[k % len(questions)]})
                reply.raise_for_status()
                mine.append((time.perf_counter() - start) * 1000)
                got += sum(1 for r in reply.json()["results"] if r["answer"] is not None)
                k += 1
        with lock:
            latencies.extend(mine)
            answers[0] += got

    elapsed = _run_clients(client_loop, clients)
    return len(latencies) / elapsed, sorted(latencies), answers[0]


def _bert_large_blob() -> bytes:
    """A BERT-large QA model (24 layers, 1024 wide, the original's architecture) with random
    weights, as TorchScript: the same compute as the original's checkpoint."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    from pipelines import qa

    torch.manual_seed(0)
    config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    with qa._quiet():
        model = BertForQuestionAnswering(config).eval()
    return qa.export_model(model, "TORCH")


def suite_qa(args: argparse.Namespace) -> list[Case]:
    """BERT QA through the keymiss read-through: vs the plain script, vs in-process, /qasearch, bert-large."""
    user_policy = os.environ.get("OMP_WAIT_POLICY")
    _worker_thread_settings()
    import io
    import subprocess

    import torch
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from pipelines import qa
    from pipelines.bert import minilm_dir
    from pipelines.deploy import deploy_nlp, deploy_qa, drained, load_qa_model, pipeline_status
    from pipelines.ingest import ingest
    from pipelines.qa_pipeline import question_key

    graph_port = args.base_port + 98
    api_port = args.base_port + 97
    question = QUESTIONS[0]
    with tempfile.TemporaryDirectory(prefix="gears-bench-") as folder:
        files = _qa_corpus(Path(folder))
        state = launcher.up(masters=3, base_port=args.base_port, dir=Path(folder) / "cluster",
                            config={"appendonly": "no"}, graph_port=graph_port)
        api = None
        try:
            graph = ("127.0.0.1", graph_port)
            # model runs can take seconds (bert-large): a long timeout, and no retry re-sending a GET
            cluster = state.cluster_client(decode_responses=True, socket_timeout=600, retry=Retry(NoBackoff(), 0))
            client = state.client(decode_responses=True)
            deploy_nlp(client, graph)
            deploy_qa(client, cache_ttl=0)
            ingest(cluster, files)
            while not drained(status := pipeline_status(cluster, graph), len(files)):
                time.sleep(0.5)
            if status["tokenized_sentences"] != status["sentences"]:
                raise RuntimeError(f"pipeline drained with {status['tokenized_sentences']} of {status['sentences']} sentences tokenised")
            started = time.perf_counter()
            load_qa_model(cluster, batchsize=16)
            load_s = time.perf_counter() - started
            sentence_key, context = _qa_sentence(cluster)
            key = question_key(sentence_key, question)
            node = cluster.get_node_from_key(key)
            shard = redis.Redis(host=node.host, port=node.port, socket_timeout=600, retry=Retry(NoBackoff(), 0))
            model_key = qa.MODEL_KEY % _tag(sentence_key)
            get = lambda: cluster.get(key)  # noqa: E731
            first_ms = _timed_calls(get, 1)[0]
            answer = get()

            # 1 and 2: one question, served vs the plain script vs the same TorchScript in-process
            blob = shard.execute_command("AI.MODELGET", model_key, "BLOB")
            blob = b"".join(blob) if isinstance(blob, list) else blob
            local = torch.jit.load(io.BytesIO(blob))
            inputs = _qa_inputs_for(shard, sentence_key, question)
            tensors = [torch.from_numpy(inputs.input_ids), torch.from_numpy(inputs.attention_mask), torch.from_numpy(inputs.token_type_ids)]

            def forward() -> None:
                with torch.inference_mode():
                    local(*tensors)

            forward()
            shard.execute_command("AI.INFO", model_key, "RESETSTAT")
            served, inproc = _alternating(get, forward, args.calls)
            info = shard.execute_command("AI.INFO", model_key)
            backend_ms = info[11] / info[15] / 1000
            plain_s = _plain_qa_seconds(minilm_dir(), question, context, args.plain_runs, user_policy)

            # 3: /qasearch, 16 clients, the model stored with BATCHSIZE 16 and then 0
            url = f"http://127.0.0.1:{api_port}/qasearch"
            api = subprocess.Popen(
                [sys.executable, "-m", "gears", "api", "--listen", f"127.0.0.1:{api_port}", "--cluster", f"127.0.0.1:{state.ports[0]}",
                 "--graph", f"127.0.0.1:{graph_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            questions = _answerable(url, api)
            batched = _qasearch_load(url, questions, args.qa_clients, args.seconds)
            tag = shard.execute_command("AI.MODELGET", model_key, "META")[5].decode()
            qa.store_on_every_shard(cluster, blob, "TORCH", "CPU", tag=tag, batchsize=0)
            unbatched = _qasearch_load(url, questions, args.qa_clients, args.seconds)

            # 4: bert-large through the same read-through, on the measured sentence's shard
            large_served = large_inproc = [float("nan")]
            if args.bert_large:
                large_blob = _bert_large_blob()
                large = torch.jit.load(io.BytesIO(large_blob))
                shard.execute_command("AI.MODELSTORE", model_key, "TORCH", "CPU", "TAG", tag, "BLOB", *qa.blob_chunks(large_blob))
                del large_blob
                get()

                def large_forward() -> None:
                    with torch.inference_mode():
                        large(*tensors)

                large_forward()
                large_served, large_inproc = _alternating(get, large_forward, args.large_calls, blocks=args.large_calls)
            cluster.close()
            client.close()
            shard.close()
        finally:
            if api is not None:
                api.terminate()
                api.wait(30)
            launcher.down(Path(folder) / "cluster")
    p50 = lambda v: v[len(v) // 2]  # noqa: E731
    p95 = lambda v: v[min(len(v) - 1, int(len(v) * 0.95))]  # noqa: E731
    print(f"  question {question!r} on {sentence_key}: answer {answer!r}; first GET {first_ms:.1f} ms; "
          f"demo model stored on 3 shards in {load_s:.1f} s", file=sys.stderr)
    print(f"  /qasearch answers: {batched[2]} (BATCHSIZE 16), {unbatched[2]} (BATCHSIZE 0) over {len(questions)} questions",
          file=sys.stderr)
    cases = [
        Case("vs_plain_script", f"questions/s (keymiss GET p50 {p50(served):.1f} ms vs plain script {plain_s:.2f} s, same model)",
             1000 / p50(served), 1 / plain_s, True, ">= 20x"),
        Case("overhead", f"ms p50 (keymiss GET vs in-process forward {p50(inproc):.1f} ms: same inputs, demo 6-layer model, workers' thread settings)",
             p50(served), p50(inproc), False, "<= 1.10x"),
        Case("serving_path_ms", f"ms (keymiss GET p50 - mean model time {backend_ms:.1f} ms in the worker)",
             p50(served) - backend_ms, None, False, "the framework's own share"),
        Case("qasearch_16_clients", f"requests/s, {args.qa_clients} clients, BATCHSIZE 16 vs 0",
             batched[0], unbatched[0], True, "batched >= unbatched"),
        Case("qasearch_16_clients_p50", "ms p50, BATCHSIZE 16 vs 0", p50(batched[1]), p50(unbatched[1]), False, "report"),
        Case("qasearch_16_clients_p95", "ms p95, BATCHSIZE 16 vs 0", p95(batched[1]), p95(unbatched[1]), False, "report"),
    ]
    if args.bert_large:
        cases.append(Case("bert_large_latency_ms", f"ms p50 on this CPU (keymiss GET vs in-process forward {p50(large_inproc):.0f} ms; ratio = overhead); GPU: not taken",
                          p50(large_served), p50(large_inproc), False, "report; GPU when available"))
    return cases


def _tag(sentence_key: str) -> str:
    return sentence_key[sentence_key.index("{") + 1 : sentence_key.index("}")]


def _answerable(url: str, api: Any) -> list[str]:
    """The questions with at least one answer (waiting for the API to come up)."""
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url.rsplit("/", 1)[0] + "/docs", timeout=2)
            break
        except httpx.HTTPError:
            if api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gears api did not start") from None
            time.sleep(0.2)
    found = []
    for question in QUESTIONS:
        reply = httpx.post(url, json={"search": question}, timeout=120)
        if reply.status_code == 200 and any(r["answer"] for r in reply.json()["results"]):
            found.append(question)
    if not found:
        raise RuntimeError("no question found candidate sentences in the graph")
    return found


# ------------------------------------------------------------------------- chaos suite
MEMORY_LIMIT_MB = 300


def suite_chaos(args: argparse.Namespace) -> list[Case]:
    """One fault at a time with a writer running (see cluster/chaos.py, docs/operations.md):
    a server node restart and a poison entry on one master, ``RG.ABORTEXECUTION`` of a
    C loop, and a master host lost with ``--replicas 1`` (3 masters)."""
    from cluster import chaos

    batch = 5
    entries = args.chaos_entries
    with tempfile.TemporaryDirectory(prefix="gears-bench-chaos-") as folder:
        state = launcher.up(masters=1, base_port=args.base_port, dir=folder)
        try:
            restart = chaos.stream_fault(state, "r", entries, lambda: chaos.restart_server(state, state.nodes[0]), batch=batch)
            poisoned, others, keys = chaos.poison(state, "p", "o", entries // 5, 50, batch=batch)
            abort = chaos.AbortRun()
            chaos.stream_fault(state, "a", entries // 5, lambda: chaos.abort_c_loop(state, abort), batch=batch)
            _, killed_at = chaos.memory_bomb(state, MEMORY_LIMIT_MB)
        finally:
            launcher.down(folder)
    with tempfile.TemporaryDirectory(prefix="gears-bench-failover-") as folder:
        state = launcher.up(masters=3, replicas=1, base_port=args.base_port + 100, dir=folder,
                            config={"cluster-node-timeout": "1000"})
        try:
            lost_host = chaos.failover(state, "f", entries, batch=batch)
        finally:
            launcher.down(folder)
    others_ok = (others.processed + keys.processed) / max(1, others.written + keys.written)
    stream, takeover = lost_host.stream, lost_host.takeover
    return [
        Case("server_restart_lost", f"entries lost of {restart.written} (server kill -9 + restart)", float(restart.lost), None, False, "0"),
        Case("server_restart_duplicates", "entries run twice", float(restart.duplicates), None, False, f"<= {batch} (one batch)"),
        Case("server_restart_recovery_s", "s from the kill to the next entry processed (restart included)", restart.recovery_s, None, False, "-"),
        Case("poison_other_registrations_ok", "share of the other registrations' work done", others_ok, None, True, "1.0"),
        Case("poison_lost", "entries lost besides the poison one", float(poisoned.lost - 1), None, False, "0"),
        Case("abort_seconds", "s from RG.ABORTEXECUTION of a C loop to its end", abort.seconds, None, False, "<= AbortGracePeriodMS (2 s) + 1"),
        Case("abort_listing_seconds", "s RG.DUMPEXECUTIONS took meanwhile", abort.listing_seconds, None, False, "<= 2.5 (it waits 2 s for the worker)"),
        Case("memory_killed_at_mb", f"MB a memory bomb reached under WorkerMaxMemoryMB={MEMORY_LIMIT_MB}", float(killed_at), None, False, f"< {2 * MEMORY_LIMIT_MB}"),
        Case("failover_lost", f"entries lost of {stream.written} confirmed by WAIT 1", float(stream.lost), None, False, "0"),
        Case("failover_stuck_pending", "entries left pending", float(stream.pending), None, False, "0"),
        Case("failover_duplicates", "entries run twice", float(stream.duplicates), None, False, "bounded"),
        Case("failover_takeover_s", "s from promotion to a new entry processed", takeover.stream_s, None, False, "<= 2"),
        Case("failover_keys_lost", "key events lost between promotion and takeover (probe every 10 ms)", float(takeover.keys_lost), None, False, "documented"),
        Case("failover_keys_window_s", "s from promotion until key events are handled", takeover.keys_s, None, False, "<= 2"),
        Case("failover_writer_keys_lost", f"key events lost of {lost_host.keys.written} written through the front doors", float(lost_host.keys.lost), None, False, "documented"),
    ]


# --------------------------------------------------------------------- frontdoor suite
FRONTDOOR_CASES = [("get", "GET", 1), ("set", "SET", 1), ("get_p16", "GET", 16), ("set_p16", "SET", 16)]


def _benchmark_tool() -> str | None:
    """``valkey-benchmark`` or ``redis-benchmark`` from ``PATH`` (Debian: ``redis-tools``)."""
    import shutil

    return shutil.which("valkey-benchmark") or shutil.which("redis-benchmark")


def _tool_ops(tool: str, port: int, command: str, pipeline: int, clients: int, requests: int) -> float:
    """Requests/s of one ``redis-benchmark`` run (``-t get`` or ``-t set``)."""
    import csv
    import subprocess

    done = subprocess.run(
        [tool, "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-n", str(requests), "-P", str(pipeline),
         "-t", command.lower(), "-d", "3", "--csv", "-q"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    rows = [row for row in csv.reader(done.stdout.splitlines()) if row and row[0] == command]
    if not rows:
        raise RuntimeError(f"{tool} printed no {command} figure: {done.stdout[-300:]!r} {done.stderr[-300:]!r}")
    return float(rows[0][1])


def _generator_process(port: int, request: bytes, reply: bytes, pipeline: int, clients: int, seconds: float,
                       out: Any) -> None:
    """Built-in load generator (one process): ``clients`` connections, each sending
    ``pipeline`` requests and waiting for their replies, for ``seconds``; sends the count."""
    import selectors
    import socket as socket_module

    batch, expect = request * pipeline, len(reply) * pipeline
    selector = selectors.DefaultSelector()
    received: dict[socket_module.socket, int] = {}
    for _ in range(clients):
        sock = socket_module.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_NODELAY, 1)
        sock.sendall(batch)
        received[sock] = 0
        selector.register(sock, selectors.EVENT_READ)
    done, stop = 0, time.perf_counter() + seconds
    while time.perf_counter() < stop:
        for key, _ in selector.select(0.5):
            sock = key.fileobj
            received[sock] += len(sock.recv(1 << 16))  # type: ignore[union-attr]
            if received[sock] >= expect:
                received[sock] -= expect
                done += pipeline
                sock.sendall(batch)  # type: ignore[union-attr]
    out.send(done)
    for sock in received:
        sock.close()


def _generator_ops(port: int, command: str, pipeline: int, clients: int, seconds: float) -> float:
    """Requests/s of the built-in generator: 2 processes sharing ``clients`` connections."""
    request = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$3\r\nxxx\r\n" if command == "SET" else b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"
    reply = b"+OK\r\n" if command == "SET" else b"$3\r\nxxx\r\n"
    pipes = [multiprocessing.Pipe(duplex=False) for _ in range(2)]
    procs = [multiprocessing.Process(target=_generator_process,
                                     args=(port, request, reply, pipeline, clients // 2, seconds, child))
             for _, child in pipes]
    for proc in procs:
        proc.start()
    total = sum(parent.recv() for parent, _ in pipes)
    for proc in procs:
        proc.join(30)
    return total / seconds


def suite_frontdoor(args: argparse.Namespace) -> list[Case]:
    """Passthrough: GET/SET through a front door vs straight to its server node (1 shard).

    The load comes from ``valkey-benchmark``/``redis-benchmark`` when one is on ``PATH``
    (as the issue measured), else from a built-in 2-process socket generator. Each case
    alternates front door and server node ``--rounds`` times; the medians are reported.
    """
    tool = _benchmark_tool()
    clients = args.frontdoor_clients
    with tempfile.TemporaryDirectory(prefix="gears-bench-") as folder:
        state = launcher.up(masters=1, base_port=args.base_port, dir=folder, config={"appendonly": "no"})
        try:
            state.server_client(0).set("key", "xxx")
            figures: dict[str, tuple[list[float], list[float]]] = {}
            for name, command, pipeline in FRONTDOOR_CASES:
                door: list[float] = []
                server: list[float] = []
                for _ in range(args.rounds):
                    for port, into in ((state.ports[0], door), (state.server_ports[0], server)):
                        if tool is not None:
                            ops = _tool_ops(tool, port, command, pipeline, clients, args.frontdoor_requests * pipeline)
                        else:
                            ops = _generator_ops(port, command, pipeline, clients, args.seconds / 5)
                        into.append(ops)
                figures[name] = (door, server)
                print(f"  {name}: front door {sorted(door)} server {sorted(server)} ops/s", file=sys.stderr)
        finally:
            launcher.down(folder)
    load = os.path.basename(tool) if tool else "built-in generator (install redis-tools for redis-benchmark)"
    median = lambda v: sorted(v)[len(v) // 2]  # noqa: E731
    return [
        Case(name, f"ops/s, {clients} clients, pipeline {pipeline}, {load}, median of {args.rounds}",
             median(figures[name][0]), median(figures[name][1]), True, ">= 0.5x the server node")
        for name, _, pipeline in FRONTDOOR_CASES
    ]


SUITES: dict[str, Callable[[argparse.Namespace], list[Case]]] = {
    "chaos": suite_chaos,
    "nlp": suite_nlp,
    "batch": suite_batch,
    "triggers": suite_triggers,
    "ai": suite_ai,
    "qa": suite_qa,
    "frontdoor": suite_frontdoor,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("--keys", type=int, default=200_000, help="batch: number of hashes")
    parser.add_argument("--events", type=int, default=20_000, help="triggers: events per measurement")
    parser.add_argument("--stream-entries", type=int, default=2_000, help="triggers: stream entries across the kill")
    parser.add_argument("--calls", type=int, default=200, help="ai, qa: sequential calls for the overhead")
    parser.add_argument("--clients", type=int, default=32, help="ai: concurrent clients for batching")
    parser.add_argument("--model", choices=["minilm", "bert-base"], default="minilm",
                        help="ai: the packaged 6-layer encoder (seq 64) or a random-weight bert-base QA model (seq 128)")
    parser.add_argument("--device", default="CPU", help="ai: CPU, GPU or GPU:<n> (models stored and run there)")
    parser.add_argument("--seconds", type=float, default=15.0, help="ai, qa: seconds per batching / load measurement")
    parser.add_argument("--copies", type=int, default=3, help="nlp: copies of each of the 22 sample articles")
    parser.add_argument("--plain-runs", type=int, default=3, help="qa: runs of the plain script (median)")
    parser.add_argument("--qa-clients", type=int, default=16, help="qa: concurrent /qasearch clients")
    parser.add_argument("--large-calls", type=int, default=6, help="qa: bert-large calls (each way)")
    parser.add_argument("--no-bert-large", dest="bert_large", action="store_false", help="qa: skip the bert-large case")
    parser.add_argument("--chaos-entries", type=int, default=1500, help="chaos: stream entries per fault")
    parser.add_argument("--rounds", type=int, default=3, help="frontdoor: alternating rounds per case (median)")
    parser.add_argument("--frontdoor-clients", type=int, default=50, help="frontdoor: client connections")
    parser.add_argument("--frontdoor-requests", type=int, default=50_000,
                        help="frontdoor: requests per redis-benchmark run (times the pipeline depth)")
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
