"""AI.* commands on real clusters: tensors, models, scripts, runs, batching, redisAI in functions."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
import redis

torch = pytest.importorskip("torch")

from ai_models import Affine, owner, tag, torchscript  # noqa: E402
from conftest import wait_for  # noqa: E402


class TwoOutputs(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor):
        return a + b, a * b


def test_tensorset_tensorget_through_the_front_door(gc):
    key = f"t{{{tag()}}}"
    client = owner(gc, key)
    assert client.execute_command("AI.TENSORSET", key, "FLOAT", 2, 2, "VALUES", 1, 2, 3, 4.5) == b"OK"
    meta = client.execute_command("AI.TENSORGET", key, "META")
    assert meta == [b"dtype", b"FLOAT", b"shape", [2, 2]]
    assert client.execute_command("AI.TENSORGET", key, "VALUES") == [b"1", b"2", b"3", b"4.5"]
    blob = client.execute_command("AI.TENSORGET", key, "BLOB")
    assert np.frombuffer(blob, "<f4").tolist() == [1, 2, 3, 4.5]
    assert client.get(key) is not None  # a tensor is an ordinary string key
    client.execute_command("AI.TENSORSET", key, "INT64", 3, "BLOB", np.array([1, -2, 3], "<i8").tobytes())
    assert client.execute_command("AI.TENSORGET", key, "VALUES") == [1, -2, 3]
    with pytest.raises(redis.ResponseError, match="tensor key is empty or in a different shard"):
        client.execute_command("AI.TENSORGET", f"missing{{{tag()}}}" if len(gc.ports) == 1 else key + "x")
    client.set(f"plain{key}", "not a tensor")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.execute_command("AI.TENSORGET", f"plain{key}")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.execute_command("AI.TENSORSET", f"plain{key}", "FLOAT", 1, "VALUES", 1)
    with pytest.raises(redis.ResponseError, match="invalid data type"):
        client.execute_command("AI.TENSORSET", key, "FLOAT32", 1, "VALUES", 1)


def test_model_store_get_execute_del(gc):
    t = tag()
    model, x, y = f"m{{{t}}}", f"x{{{t}}}", f"y{{{t}}}"
    client = owner(gc, model)
    assert client.execute_command("AI.MODELSTORE", model, "TORCH", "CPU", "TAG", "v1", "BLOB", torchscript(Affine())) == b"OK"
    meta = client.execute_command("AI.MODELGET", model, "META")
    assert meta[:10] == [b"backend", b"TORCH", b"device", b"CPU", b"tag", b"v1", b"batchsize", 0, b"minbatchsize", 0]
    assert meta[11] == [b"x"] and meta[14:] == [b"minbatchtimeout", 0]
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    client.execute_command("AI.TENSORSET", x, "FLOAT", 2, 4, "BLOB", data.tobytes())
    assert client.execute_command("AI.MODELEXECUTE", model, "INPUTS", 1, x, "OUTPUTS", 1, y) == b"OK"
    out = np.frombuffer(client.execute_command("AI.TENSORGET", y, "BLOB"), "<f4").reshape(2, 3)
    expected = Affine()(torch.from_numpy(data)).detach().numpy()
    assert np.allclose(out, expected)
    info = client.execute_command("AI.INFO", model)
    assert info[0::2] == [b"key", b"type", b"backend", b"device", b"tag", b"duration", b"samples", b"calls", b"errors"]
    assert info[13] == 2 and info[15] == 1 and info[17] == 0
    assert client.execute_command("AI.INFO", model, "RESETSTAT") == b"OK"
    assert client.execute_command("AI.INFO", model)[15] == 0
    with pytest.raises(redis.ResponseError, match="Number of keys given as INPUTS here does not match model definition"):
        client.execute_command("AI.MODELEXECUTE", model, "INPUTS", 2, x, x, "OUTPUTS", 1, y)
    with pytest.raises(redis.ResponseError, match="tensor key is empty"):
        client.execute_command("AI.MODELEXECUTE", model, "INPUTS", 1, f"nope{{{t}}}", "OUTPUTS", 1, y)
    with pytest.raises(redis.ResponseError, match="hash to the same slot"):
        client.execute_command("AI.MODELEXECUTE", model, "INPUTS", 1, "x{other}", "OUTPUTS", 1, y)
    assert client.execute_command("AI.MODELDEL", model) == b"OK"
    with pytest.raises(redis.ResponseError, match="model key is empty"):
        client.execute_command("AI.MODELGET", model)


def test_model_errors(cluster1):
    client = redis.Redis(port=cluster1.ports[0])
    blob = torchscript(Affine())
    with pytest.raises(redis.ResponseError, match="unsupported backend"):
        client.execute_command("AI.MODELSTORE", "m", "PYTORCH", "CPU", "BLOB", blob)
    with pytest.raises(redis.ResponseError, match="Invalid DEVICE"):
        client.execute_command("AI.MODELSTORE", "m", "TORCH", "TPU", "BLOB", blob)
    with pytest.raises(redis.ResponseError, match="not available in Gears Fabric"):
        client.execute_command("AI.MODELSTORE", "m", "TF", "CPU", "INPUTS", 1, "a", "OUTPUTS", 1, "b", "BLOB", b"x")
    if not torch.cuda.is_available():
        with pytest.raises(redis.ResponseError, match="no CUDA device"):
            client.execute_command("AI.MODELSTORE", "m", "TORCH", "GPU", "BLOB", blob)
    with pytest.raises(redis.ResponseError, match="could not load the TORCH model"):
        client.execute_command("AI.MODELSTORE", "m", "TORCH", "CPU", "BLOB", b"garbage")
    with pytest.raises(redis.ResponseError, match="MINBATCHSIZE specified without BATCHSIZE"):
        client.execute_command("AI.MODELSTORE", "m", "TORCH", "CPU", "MINBATCHSIZE", 2, "BLOB", blob)
    with pytest.raises(redis.ResponseError, match="expected BLOB"):
        client.execute_command("AI.MODELSTORE", "m", "TORCH", "CPU", "TAG", "t", "NOPE", blob)
    assert client.exists("m") == 0  # nothing half-stored


def test_two_outputs_and_scripts(cluster1):
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.MODELSTORE", "two{q}", "TORCH", "CPU", "BLOB", torchscript(TwoOutputs()))
    client.execute_command("AI.TENSORSET", "a{q}", "FLOAT", 2, "VALUES", 1, 2)
    client.execute_command("AI.TENSORSET", "b{q}", "FLOAT", 2, "VALUES", 3, 4)
    assert client.execute_command("AI.MODELEXECUTE", "two{q}", "INPUTS", 2, "a{q}", "b{q}", "OUTPUTS", 2, "s{q}", "p{q}") == b"OK"
    assert client.execute_command("AI.TENSORGET", "s{q}", "VALUES") == [b"4", b"6"]
    assert client.execute_command("AI.TENSORGET", "p{q}", "VALUES") == [b"3", b"8"]
    source = "def addmul(tensors: List[Tensor], keys: List[str], args: List[str]):\n    return tensors[0] + tensors[1] * float(args[0])\n"
    assert client.execute_command("AI.SCRIPTSTORE", "scr{q}", "CPU", "ENTRY_POINTS", 1, "addmul", "SOURCE", source) == b"OK"
    assert client.execute_command("AI.SCRIPTGET", "scr{q}", "META") == [b"device", b"CPU", b"tag", b"", b"Entry Points", [b"addmul"]]
    reply = client.execute_command("AI.SCRIPTEXECUTE", "scr{q}", "addmul", "INPUTS", 2, "a{q}", "b{q}", "ARGS", 1, "10", "OUTPUTS", 1, "r{q}")
    assert reply == b"OK" and client.execute_command("AI.TENSORGET", "r{q}", "VALUES") == [b"31", b"42"]
    with pytest.raises(redis.ResponseError, match="Function does not exist: nope"):
        client.execute_command("AI.SCRIPTEXECUTE", "scr{q}", "nope", "INPUTS", 1, "a{q}", "OUTPUTS", 1, "r{q}")
    with pytest.raises(redis.ResponseError, match="Wrong number of inputs in function bad"):
        client.execute_command("AI.SCRIPTSTORE", "scr2{q}", "CPU", "ENTRY_POINTS", 1, "bad", "SOURCE", "def bad(a: Tensor):\n    return a\n")
    assert client.execute_command("AI.INFO", "scr{q}")[3] == b"SCRIPT"
    assert client.execute_command("AI.SCRIPTDEL", "scr{q}") == b"OK"


def test_batching_gives_each_client_its_own_slice(cluster1):
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.MODELSTORE", "bm{q}", "TORCH", "CPU", "BATCHSIZE", 8, "MINBATCHSIZE", 8, "MINBATCHTIMEOUT", 2000, "BLOB", torchscript(Affine()))
    inputs = {i: np.full((1, 4), i, dtype=np.float32) for i in range(8)}
    for i, data in inputs.items():
        client.execute_command("AI.TENSORSET", f"bx{i}{{q}}", "FLOAT", 1, 4, "BLOB", data.tobytes())
    replies: dict[int, bytes] = {}

    def call(i: int) -> None:
        own = redis.Redis(port=cluster1.ports[0])
        replies[i] = own.execute_command("AI.MODELEXECUTE", "bm{q}", "INPUTS", 1, f"bx{i}{{q}}", "OUTPUTS", 1, f"by{i}{{q}}")

    threads = [threading.Thread(target=call, args=(i,)) for i in inputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert replies == {i: b"OK" for i in inputs}
    weight = Affine().weight.detach().numpy()
    for i, data in inputs.items():
        got = np.frombuffer(client.execute_command("AI.TENSORGET", f"by{i}{{q}}", "BLOB"), "<f4").reshape(1, 3)
        assert np.allclose(got, data @ weight)
    info = client.execute_command("AI.INFO", "bm{q}")
    assert info[15] == 8 and info[13] == 8  # calls and samples: one per client


def test_timeout_is_a_queue_deadline(cluster1):
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.MODELSTORE", "tm{q}", "TORCH", "CPU", "BATCHSIZE", 100, "MINBATCHSIZE", 100, "BLOB", torchscript(Affine()))
    client.execute_command("AI.TENSORSET", "tx{q}", "FLOAT", 1, 4, "VALUES", 1, 2, 3, 4)
    assert client.execute_command("AI.MODELEXECUTE", "tm{q}", "INPUTS", 1, "tx{q}", "OUTPUTS", 1, "ty{q}", "TIMEOUT", 100) == b"TIMEDOUT"


def test_a_new_worker_loads_the_stored_model_from_its_key(cluster1):
    """Models live in the server: after the worker process is replaced, runs load it again."""
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.MODELSTORE", "rw{q}", "TORCH", "CPU", "BLOB", torchscript(Affine()))
    client.execute_command("AI.TENSORSET", "rwx{q}", "FLOAT", 1, 4, "VALUES", 1, 2, 3, 4)
    run = ("AI.MODELEXECUTE", "rw{q}", "INPUTS", 1, "rwx{q}", "OUTPUTS", 1, "rwy{q}")
    assert client.execute_command(*run) == b"OK"
    first = client.execute_command("AI.TENSORGET", "rwy{q}", "VALUES")
    client.delete("rwy{q}")
    try:
        client.execute_command("RG.PYEXECUTE", "import os\nGB('ShardsIDReader').map(lambda x: os._exit(3)).run()")
    except redis.ResponseError as exc:
        assert "worker process exited" in str(exc)

    def ran() -> bool:
        try:
            return client.execute_command(*run) == b"OK"
        except redis.ResponseError as exc:
            assert "worker process" in str(exc)  # a call racing the restart
            return False

    wait_for(ran, timeout=30, interval=0.05, what="a run on the new worker")
    assert client.execute_command("AI.TENSORGET", "rwy{q}", "VALUES") == first
    assert client.execute_command("AI.INFO", "rw{q}")[15] == 1  # the new worker's statistics


def test_redisai_module_in_gears_functions(cluster1):
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.MODELSTORE", "fm{06S}", "TORCH", "CPU", "BLOB", torchscript(Affine()))
    script = """
import redisAI
async def infer(x):
    tensor = redisAI.createTensorFromValues('FLOAT', [1, 4], [1.0, 2.0, 3.0, 4.0])
    runner = redisAI.createModelRunner('fm{06S}')
    redisAI.modelRunnerAddInput(runner, 'x', tensor)
    redisAI.modelRunnerAddOutput(runner, 'y')
    out = await redisAI.modelRunnerRunAsync(runner)
    redisAI.setTensorInKey('fy{06S}', out[0])
    return [round(v, 4) for v in redisAI.tensorToFlatList(out[0])] + list(redisAI.tensorGetDims(out[0]))
GB('ShardsIDReader').map(infer).run()
"""
    results, errors = client.execute_command("RG.PYEXECUTE", script)
    assert errors == []
    expected = (torch.tensor([[1.0, 2.0, 3.0, 4.0]]) @ Affine().weight).detach().numpy().round(4).ravel().tolist()
    assert results == [str(expected + [1, 3]).encode()]
    assert client.execute_command("AI.TENSORGET", "fy{06S}", "META")[3] == [1, 3]
    assert client.execute_command("AI.INFO", "fm{06S}")[15] == 1  # the async run went through the queue


def test_dag_execute(cluster1):
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.MODELSTORE", "dm{d}", "TORCH", "CPU", "BLOB", torchscript(Affine()))
    client.execute_command("AI.TENSORSET", "dx{d}", "FLOAT", 1, 4, "VALUES", 1, 2, 3, 4)
    reply = client.execute_command(
        "AI.DAGEXECUTE", "LOAD", 1, "dx{d}", "PERSIST", 1, "dy{d}", "|>",
        "AI.TENSORSET", "tmp", "FLOAT", 1, 4, "VALUES", 0, 0, 0, 1, "|>",
        "AI.MODELEXECUTE", "dm{d}", "INPUTS", 1, "dx{d}", "OUTPUTS", 1, "dy{d}", "|>",
        "AI.MODELEXECUTE", "dm{d}", "INPUTS", 1, "tmp", "OUTPUTS", 1, "other", "|>",
        "AI.TENSORGET", "other", "VALUES", "|>", "AI.TENSORGET", "never", "META",
    )
    assert reply[:3] == [b"OK", b"OK", b"OK"] and reply[4] == b"NA"
    assert [round(float(v), 4) for v in reply[3]] == [0.9, 1.0, 1.1]
    assert client.execute_command("AI.TENSORGET", "dy{d}", "META")[3] == [1, 3]
    assert client.exists("tmp") == 0 and client.exists("other") == 0  # DAG-local names stay local
    with pytest.raises(redis.ResponseError, match="INPUT key cannot be found in DAG"):
        client.execute_command("AI.DAGEXECUTE", "LOAD", 1, "dx{d}", "|>", "AI.MODELEXECUTE", "dm{d}", "INPUTS", 1, "nope", "OUTPUTS", 1, "o")
    with pytest.raises(redis.ResponseError, match="PERSIST key cannot be found in DAG"):
        client.execute_command("AI.DAGEXECUTE", "PERSIST", 1, "zz{d}", "|>", "AI.TENSORGET", "x")
    with pytest.raises(redis.ResponseError, match="must contain at least one out of ROUTING, LOAD, PERSIST"):
        client.execute_command("AI.DAGEXECUTE", "TIMEOUT", 100, "|>", "AI.TENSORGET", "x", "META")
    with pytest.raises(redis.ResponseError, match="PERSIST cannot be specified in a read-only DAG"):
        client.execute_command("AI.DAGEXECUTE_RO", "PERSIST", 1, "dy{d}", "|>", "AI.TENSORGET", "x", "META")
    failing = client.execute_command(
        "AI.DAGEXECUTE", "ROUTING", "{d}", "|>", "AI.TENSORSET", "bad", "FLOAT", 1, 2, "VALUES", 1, 2, "|>",
        "AI.MODELEXECUTE", "dm{d}", "INPUTS", 1, "bad", "OUTPUTS", 1, "o", "|>",
        "AI.MODELEXECUTE", "dm{d}", "INPUTS", 1, "bad", "OUTPUTS", 1, "o2",
    )
    assert failing[0] == b"OK" and isinstance(failing[1], redis.ResponseError) and failing[2] == b"NA"


def test_dag_ops_on_different_devices_run_side_by_side(cluster1):
    """A CPU op waiting for a batch partner (MINBATCHSIZE 2, no timeout) does not hold
    back the independent CPU:1 op after it; once a partner comes, the DAG completes."""
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.MODELSTORE", "pw{p}", "TORCH", "CPU", "BATCHSIZE", 2, "MINBATCHSIZE", 2, "BLOB", torchscript(Affine()))
    client.execute_command("AI.MODELSTORE", "px{p}", "TORCH", "CPU:1", "BLOB", torchscript(Affine()))
    client.execute_command("AI.TENSORSET", "pin{p}", "FLOAT", 1, 4, "VALUES", 1, 2, 3, 4)
    replies: list[object] = []

    def dag() -> None:
        own = redis.Redis(port=cluster1.ports[0])
        replies.append(own.execute_command(
            "AI.DAGEXECUTE", "LOAD", 1, "pin{p}", "PERSIST", 2, "pa{p}", "pb{p}", "|>",
            "AI.MODELEXECUTE", "pw{p}", "INPUTS", 1, "pin{p}", "OUTPUTS", 1, "pa{p}", "|>",
            "AI.MODELEXECUTE", "px{p}", "INPUTS", 1, "pin{p}", "OUTPUTS", 1, "pb{p}",
        ))

    thread = threading.Thread(target=dag, daemon=True)
    thread.start()
    try:
        wait_for(lambda: client.execute_command("AI.INFO", "px{p}")[15] == 1, timeout=30, what="the CPU:1 op to run")
        assert client.execute_command("AI.INFO", "pw{p}")[15] == 0 and replies == []  # the CPU op still waits
    finally:  # the partner that completes the CPU op's batch
        assert client.execute_command("AI.MODELEXECUTE", "pw{p}", "INPUTS", 1, "pin{p}", "OUTPUTS", 1, "pc{p}") == b"OK"
        thread.join(30)
    assert replies == [[b"OK", b"OK"]]
    outputs = {k: client.execute_command("AI.TENSORGET", k, "VALUES") for k in ("pa{p}", "pb{p}", "pc{p}")}
    assert outputs["pa{p}"] == outputs["pb{p}"] == outputs["pc{p}"]
    assert client.execute_command("AI.INFO", "pw{p}")[15] == 2  # the DAG's op and its partner, one batch


def test_dag_ops_read_the_latest_version_of_a_name(cluster1):
    """A name written twice has two versions: each op reads the one before it, across devices."""
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.SCRIPTSTORE", "vs{v}", "CPU:1", "ENTRY_POINTS", 1, "double", "SOURCE",
                           "def double(tensors: List[Tensor], keys: List[str], args: List[str]):\n    return tensors[0] * 2\n")
    reply = client.execute_command(
        "AI.DAGEXECUTE", "ROUTING", "{v}", "|>",
        "AI.TENSORSET", "x", "FLOAT", 1, "VALUES", 1, "|>",
        "AI.SCRIPTEXECUTE", "vs{v}", "double", "INPUTS", 1, "x", "OUTPUTS", 1, "x", "|>",
        "AI.TENSORGET", "x", "VALUES", "|>",
        "AI.SCRIPTEXECUTE", "vs{v}", "double", "INPUTS", 1, "x", "OUTPUTS", 1, "x", "|>",
        "AI.TENSORGET", "x", "VALUES",
    )
    assert reply[:2] == [b"OK", b"OK"] and reply[3] == b"OK"
    assert [float(v) for v in reply[2]] == [2.0] and [float(v) for v in reply[4]] == [4.0]


def test_a_model_larger_than_512mb_is_stored_in_chunks(cluster1, tmp_path):
    """Random weights, built locally: bigger than proto-max-bulk-len, sent as two BLOB chunks."""
    big = torch.nn.Linear(12000, 11500, bias=False)  # 552 MB of float32 weights
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(big), buffer)
    blob = buffer.getvalue()
    del buffer
    assert len(blob) > 512 * 1024 * 1024
    half = len(blob) // 2
    client = redis.Redis(port=cluster1.ports[0], socket_timeout=300)
    assert client.execute_command("AI.MODELSTORE", "big{b}", "TORCH", "CPU", "BLOB", blob[:half], blob[half:]) == b"OK"
    meta = client.execute_command("AI.MODELGET", "big{b}", "META")
    assert meta[1] == b"TORCH"
    fields = client.hlen("big{b}")
    assert fields > 3  # marker, meta and several chunk fields
    x = np.ones((1, 12000), dtype=np.float32)
    client.execute_command("AI.TENSORSET", "bigx{b}", "FLOAT", 1, 12000, "BLOB", x.tobytes())
    assert client.execute_command("AI.MODELEXECUTE", "big{b}", "INPUTS", 1, "bigx{b}", "OUTPUTS", 1, "bigy{b}") == b"OK"
    got = np.frombuffer(client.execute_command("AI.TENSORGET", "bigy{b}", "BLOB"), "<f4")
    with torch.inference_mode():
        expected = big(torch.from_numpy(x)).numpy().ravel()
    assert np.allclose(got, expected, atol=1e-3)
    assert client.execute_command("AI.MODELDEL", "big{b}") == b"OK"


def test_scriptrun_and_dag_runner_in_functions(cluster1):
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.SCRIPTSET", "old{06S}", "CPU", "SOURCE", "def add(a, b):\n    return a + b\n")
    client.execute_command("AI.TENSORSET", "p{06S}", "FLOAT", 2, "VALUES", 1, 2)
    client.execute_command("AI.TENSORSET", "q{06S}", "FLOAT", 2, "VALUES", 10, 20)
    assert client.execute_command("AI.SCRIPTRUN", "old{06S}", "add", "INPUTS", "p{06S}", "q{06S}", "OUTPUTS", "r{06S}") == b"OK"
    assert client.execute_command("AI.TENSORGET", "r{06S}", "VALUES") == [b"11", b"22"]
    client.execute_command("AI.MODELSTORE", "dagm{06S}", "TORCH", "CPU", "BLOB", torchscript(Affine()))
    script = """
import redisAI
async def run(x):
    t = redisAI.createTensorFromValues('FLOAT', [1, 4], [1.0, 0.0, 0.0, 0.0])
    dag = redisAI.createDAGRunner()
    dag.Input('in', t)
    dag.ModelRun(name='dagm{06S}', inputs=['in'], outputs=['out'])
    dag.TensorGet('out')
    dag.OpsFromString('|> AI.MODELEXECUTE dagm{06S} INPUTS 1 in OUTPUTS 1 again |> AI.TENSORGET again')
    first, second = await dag.Run()
    return redisAI.tensorToFlatList(first) == redisAI.tensorToFlatList(second), [round(v, 4) for v in redisAI.tensorToFlatList(first)]
GB('ShardsIDReader').map(run).run()
"""
    results, errors = client.execute_command("RG.PYEXECUTE", script)
    assert errors == [] and results == [b"(True, [0.0, 0.1, 0.2])"]
    bad = "import redisAI\nasync def run(x):\n    dag = redisAI.createDAGRunner()\n    dag.ModelRun(name='nope{06S}', inputs=['a'], outputs=['b'])\n    return 1\nGB('ShardsIDReader').map(run).run()"
    assert b"model key is empty" in client.execute_command("RG.PYEXECUTE", bad)[1][0]
