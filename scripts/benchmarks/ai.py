"""``bench.py ai``: a model served on one shard (``--model``, ``--device``): the client's
paths against the same model called in-process, the serving path's own share, and
batching under ``--clients`` concurrent clients."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .harness import (
    Case,
    alternating,
    local_cluster,
    mean,
    p50,
    p95,
    p99,
    run_clients,
    timed_calls,
    worker_thread_settings,
)


def _store_model(client: redis.Redis, key: str, blob: bytes, batchsize: int, device: str = "CPU") -> None:
    options = ["BATCHSIZE", batchsize] if batchsize else []
    client.execute_command("AI.MODELSTORE", key, "TORCH", device, *options, "BLOB", blob)


@dataclass
class BenchModel:
    """The model ``bench ai --model`` serves: TorchScript bytes, batch-1 inputs, output count."""

    name: str
    blob: bytes
    inputs: dict[str, Any]
    outputs: int


def bench_model(name: str) -> BenchModel:
    """``minilm``: the packaged 6-layer encoder at seq 64 (2 inputs, 1 output);
    ``bert-base``: BertForQuestionAnswering with bert-base's shape and random weights from a
    config (nothing downloaded), seq 128 (3 inputs, 2 outputs), exported device-portable."""
    import torch

    if name == "minilm":
        from gears_pipelines.bert import encoder_torchscript, example_inputs

        ids, mask = example_inputs(1, 64)
        return BenchModel(name, encoder_torchscript(64), {"ids": ids, "mask": mask}, 1)
    from transformers import BertConfig, BertForQuestionAnswering

    from gears_pipelines.qa import export_model

    torch.manual_seed(0)
    model = BertForQuestionAnswering(BertConfig()).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (1, 128), generator=generator, dtype=torch.int64)
    inputs = {"ids": ids, "mask": torch.ones_like(ids), "types": torch.zeros_like(ids)}
    return BenchModel(name, export_model(model, "TORCH"), inputs, 2)


def _client_paths(client: redis.Redis, model: BenchModel, key: str) -> dict[str, Callable[[], Any]]:
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


def _in_process(model: BenchModel, device: str, batch: int = 1) -> Callable[[], Any]:
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

    elapsed = run_clients(client_loop, clients)
    return len(latencies) / elapsed, sorted(latencies)


ECHO_SCRIPT = """
import socket, sys
inbound, outbound = (socket.socket(fileno=int(fd)) for fd in sys.argv[1:3])
while data := inbound.recv(16):
    outbound.sendall(data)
"""


#: Seconds every process on the path sleeps before an ``*_after_idle`` call: about one
#: run of the packaged encoder on a CPU.
IDLE_S = 0.015


def _after_idle(call: Callable[[], Any], idle_s: float, count: int) -> list[float]:
    """Milliseconds of ``count`` calls, each after ``idle_s`` asleep, sorted."""
    times = []
    for _ in range(count):
        time.sleep(idle_s)
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


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
        return p50(sorted(times))
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
            timed_calls(lambda: model(zero, zero), 3)  # the profiling executor's first runs
            return timed_calls(lambda: model(zero, zero), 5)[2]

    zero = torch.zeros(1)
    rounds = 20
    for _ in range(3):  # rescale the loop until a run takes about target_ms
        rounds = max(1, round(rounds * target_ms / median_ms(torch.jit.script(Spin(rounds)))))
    return torch.jit.script(Spin(rounds))


def run_suite(args: argparse.Namespace) -> list[Case]:
    """A model served on one shard (``--model``, ``--device``): the client's paths against
    the in-process call, the serving path's own share, and batching under ``--clients``."""
    worker_thread_settings()
    import io

    import numpy as np
    import torch

    device = args.device.upper()
    if device != "CPU" and not torch.cuda.is_available():
        raise SystemExit(f"bench ai --device {args.device}: this machine has no CUDA device")
    spec = bench_model(args.model)
    inproc_call = _in_process(spec, device)

    class Add(torch.nn.Module):
        """No compute: what is left of a run is the serving path."""

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    adder = torch.jit.script(Add())
    adder_blob = io.BytesIO()
    torch.jit.save(adder, adder_blob)
    add_spec = BenchModel("add", adder_blob.getvalue(), dict(list(spec.inputs.items())[:2]), 1)
    names = tuple(spec.inputs)

    with local_cluster(masters=3, base_port=args.base_port, config={"appendonly": "no"}) as state:
        cluster = state.cluster_client()
        port = cluster.get_node_from_key("enc{06S}").port
        cluster.close()
        # bert-base's store takes longer than redis-py's default 5 s socket timeout, and a
        # retried call would be timed twice: a long timeout and no retries
        client = redis.Redis(port=port, socket_timeout=600, retry=Retry(NoBackoff(), 0))
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
        bare, inproc = alternating(paths["bare"], inproc_call, args.calls)
        info = client.execute_command("AI.INFO", "enc{06S}")
        calls_made = len(bare)
        stats_match = info[15] == calls_made and info[17] == 0
        backend_ms = info[11] / info[15] / 1000
        full, inproc_full = alternating(paths["full"], inproc_call, args.calls)
        dag, inproc_dag = alternating(paths["dag"], inproc_call, args.calls)
        got = np.frombuffer(client.execute_command("AI.TENSORGET", "out0_0{06S}", "BLOB"), "<f4")
        expected = inproc_call()[0].numpy().ravel()
        if not np.allclose(got, expected, atol=1e-3):
            raise RuntimeError("the served model's output differs from the in-process output")
        add_run = _client_paths(client, add_spec, "add{06S}")["bare"]
        add_served, add_inproc = alternating(add_run, _in_process(add_spec, device), args.calls)
        add_after_idle = _after_idle(add_run, IDLE_S, args.calls)
        server = redis.Redis(port=state.server_ports[state.ports.index(port)])
        ping_after_idle, ping_busy = _after_idle(server.ping, IDLE_S, args.calls), timed_calls(server.ping, args.calls)
        server.close()
        weightless = _weightless_path(client, inproc, args.calls) if device == "CPU" else None
        chain_busy, chain_idle = _handover_chain_us(0, args.calls), _handover_chain_us(IDLE_S, args.calls)
        plain_rate, plain_lat = _concurrent_load(port, args.clients, "enc{06S}", args.seconds, names, spec.outputs)
        batched_rate, batched_lat = _concurrent_load(port, args.clients, "encb{06S}", args.seconds, names, spec.outputs)
        ceiling = _batched_ceiling(spec, device, 16, args.calls)
        client.close()
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
        Case("overhead_add_model_after_idle_ms",
             f"ms (the same, every call after {IDLE_S * 1000:.0f} ms asleep, as around a run of that length: served p50 "
             f"{p50(add_after_idle):.2f} - in-process p50 {p50(add_inproc):.2f}; a plain server PING: "
             f"{p50(ping_after_idle) * 1000:.0f} us after the same sleep vs {p50(ping_busy) * 1000:.0f} us back to back)",
             p50(add_after_idle) - p50(add_inproc), None, False,
             "near bare_overhead_p50_ms where the machine wakes slowly after idle"),
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

    spin = _weightless_model(p50(inproc))
    spin_blob = io.BytesIO()
    torch.jit.save(spin, spin_blob)
    _store_model(client, "spin{06S}", spin_blob.getvalue(), 0)
    run = lambda: client.execute_command(  # noqa: E731
        "AI.MODELEXECUTE", "spin{06S}", "INPUTS", 2, "ids0{06S}", "mask0{06S}", "OUTPUTS", 1, "spinout{06S}")
    run()
    client.execute_command("AI.INFO", "spin{06S}", "RESETSTAT")
    served = timed_calls(run, calls)
    info = client.execute_command("AI.INFO", "spin{06S}")
    backend_ms = info[11] / info[15] / 1000
    mean = sum(served) / len(served)
    return f"ms (a model with no weights: served mean {mean:.2f} - backend mean {backend_ms:.2f} in the worker)", mean - backend_ms


def _batched_ceiling(model: BenchModel, device: str, batch: int, calls: int) -> float:
    """Samples/s of the model run in-process at ``batch`` (the device's batched ceiling)."""
    call = _in_process(model, device, batch)
    call()
    times = timed_calls(call, max(5, calls // 10))
    return batch / (p50(times) / 1000)

