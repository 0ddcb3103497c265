"""The real redisai-py client (PyPI redisai 1.3.0) against a front door, unchanged.

redisai 1.3.0 pins ``redis<5``, so it runs from its own virtual environment (made once
per machine and reused), as a subprocess.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ai_models import Affine  # noqa: E402

VENV = Path(os.environ.get("GEARS_REDISAI_VENV", "/tmp/redisai-py-venv"))

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from redisai import Client

    port, model_path = int(sys.argv[1]), sys.argv[2]
    con = Client(host="127.0.0.1", port=port)
    out = {}
    out["tensorset"] = con.tensorset("x{p}", np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32))
    out["tensorget"] = con.tensorget("x{p}").tolist()
    out["meta"] = con.tensorget("x{p}", meta_only=True)
    out["values"] = con.tensorget("x{p}", as_numpy=False)["values"]
    out["modelstore"] = con.modelstore("m{p}", "TORCH", "CPU", open(model_path, "rb").read(), tag="t1")
    out["modelget"] = {k: v for k, v in con.modelget("m{p}", meta_only=True).items()}
    out["modelexecute"] = con.modelexecute("m{p}", inputs=["x{p}"], outputs=["y{p}"])
    out["y"] = con.tensorget("y{p}").round(4).tolist()
    out["info"] = {k: v for k, v in con.infoget("m{p}").items() if k in ("key", "type", "backend", "device", "tag", "calls", "errors")}
    dag = con.dag(load=["x{p}"], persist=["z{p}"])
    dag.modelexecute("m{p}", inputs=["x{p}"], outputs=["z{p}"])
    dag.tensorget("z{p}")
    result = dag.execute()
    out["dag"] = [result[0], np.asarray(result[1]).round(4).tolist()]
    source = "def twice(tensors: List[Tensor], keys: List[str], args: List[str]):\\n    return tensors[0] * 2\\n"
    out["scriptstore"] = con.scriptstore("s{p}", "CPU", source, entry_points=["twice"])
    out["scriptexecute"] = con.scriptexecute("s{p}", "twice", inputs=["x{p}"], outputs=["w{p}"])
    out["w"] = con.tensorget("w{p}").tolist()
    pipe = con.pipeline()  # a transaction (MULTI/EXEC), redisai-py's default
    pipe.tensorset("q{p}", np.array([5, 6], dtype=np.int64))
    pipe.tensorget("q{p}")
    out["pipeline"] = [r.tolist() if isinstance(r, np.ndarray) else r for r in pipe.execute()]  # OK comes raw, as from RedisAI
    out["modeldel"] = con.modeldel("m{p}")
    print(json.dumps(out, default=str))
    """
)


@pytest.fixture(scope="module")
def redisai_python() -> str:
    """The interpreter of a venv with redisai 1.3.0 (skip only when the index is unreachable)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{VENV}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        python = VENV / "bin" / "python"
        ready = VENV / ".ready"
        if not ready.exists():
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
            done = subprocess.run([str(python), "-m", "pip", "install", "-q", "redisai==1.3.0"], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"could not install redisai 1.3.0: {done.stderr.strip().splitlines()[-1:]}")
            ready.write_text("ok")
    return str(python)


def test_redisai_py_client_works_unchanged(cluster1, redisai_python, tmp_path):
    model_path = tmp_path / "affine.pt"
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Affine()), buffer)
    model_path.write_bytes(buffer.getvalue())
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    done = subprocess.run([redisai_python, str(script), str(cluster1.ports[0]), str(model_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    expected = (torch.tensor([[1.0, 2.0, 3.0, 4.0]]) @ Affine().weight).detach().numpy().round(4).tolist()
    assert out["tensorset"] == "OK" and out["tensorget"] == [[1.0, 2.0, 3.0, 4.0]]
    assert out["meta"] == {"dtype": "FLOAT", "shape": [1, 4]}
    assert out["values"] == [1.0, 2.0, 3.0, 4.0]
    assert out["modelstore"] == "OK" and out["modelget"]["backend"] == "TORCH" and out["modelget"]["tag"] == "t1"
    assert out["modelexecute"] == "OK" and out["y"] == expected
    assert out["info"]["calls"] == 1 and out["info"]["type"] == "MODEL" and out["info"]["errors"] == 0
    assert out["dag"] == ["OK", expected]
    assert out["scriptstore"] == "OK" and out["scriptexecute"] == "OK" and out["w"] == [[2.0, 4.0, 6.0, 8.0]]
    assert out["pipeline"] == ["b'OK'", [5, 6]]
    assert out["modeldel"] == "OK"
