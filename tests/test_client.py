"""``gears run`` (the gears-cli-like command), ``gears.local.client`` and the real gears-cli.

Everything runs against one 3-shard cluster started for this module (base port 11501).
The real ``gears-cli`` 1.2.0 (which needs ``redis<5``) gets its own venv, created once
and cached in ``$GEARS_CLI_VENV`` (default ``/tmp/gears-cli-venv``); those tests skip
only when pip cannot reach the package index.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from conftest import ROOT, launched_cluster, shifted_port
from gears.local.client import GearsClient, GearsRemoteBuilder, dumps_by_value
from gears.local.runscript import format_reply, read_requirements

BASE_PORT = 11501
KEYS = {f"cl:{i}": str(i) for i in range(20)}
EXEC_ID = re.compile(r"^[0-9a-f]{40}-\d+$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
GEARS_CLI_VENV = Path(os.environ.get("GEARS_CLI_VENV", "/tmp/gears-cli-venv"))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """3 masters with gears nodes; requirements go to a folder of this test module."""
    reqs_dir = tmp_path_factory.mktemp("client-reqs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEARS_REQUIREMENTS_DIR", str(reqs_dir))
        with launched_cluster(
            tmp_path_factory.mktemp("client-cluster"), masters=3, base_port=shifted_port(BASE_PORT), what="client cluster"
        ) as state:
            rc = state.cluster_client()
            for key, value in KEYS.items():
                rc.set(key, value)
            rc.hset("clh:1", mapping={"a": "1"})
            rc.close()
            yield state


@pytest.fixture(scope="module")
def port(cluster) -> int:
    return cluster.ports[0]


@pytest.fixture
def client(port) -> Iterator[GearsClient]:
    with GearsClient(port=port) as c:
        yield c


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def gears_run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gears", "run", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def result_lines(stdout: str) -> list[str]:
    """The result texts of a ``Results`` section."""
    lines = stdout.splitlines()
    assert lines[:2] == ["Results", "-------"], stdout
    out = []
    for line in lines[2:]:
        if not line:
            break
        number, _, text = line.partition(")\t")
        assert number.isdigit(), line
        out.append(text)
    return out


def pip_can_download(package: str, dest: Path) -> str | None:
    """``None`` when pip can download ``package``, else why not (one line)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "-q", "-d", str(dest), package]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return f"pip download {package} timed out"
    if proc.returncode != 0:
        return " ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
    return None


# ------------------------------------------------------------------- gears run


def test_run_prints_results(port, tmp_path):
    script = write(tmp_path, "keys.py", "GB().map(lambda r: r['key']).run('cl:*')\n")
    proc = gears_run(script, "--port", str(port))
    assert proc.returncode == 0, proc.stderr
    assert sorted(result_lines(proc.stdout)) == sorted(KEYS)
    assert proc.stdout.endswith("\n\n") and "Errors" not in proc.stdout and "\x1b" not in proc.stdout
    assert proc.stderr == ""


def test_run_options_before_script_and_gears_cli_result_format(port, tmp_path):
    script = write(tmp_path, "count.py", "GB().count().run('cl:*')\n")
    proc = gears_run("--port", str(port), script)
    # gears-cli prints a result whose text parses as JSON JSON-quoted
    assert (proc.returncode, proc.stdout) == (0, 'Results\n-------\n1)\t"20"\n\n')
    proc = gears_run(script, "--port", str(port), "--color", "always")
    assert proc.stdout == '\x1b[1mResults\x1b[0m\n\x1b[1m-------\x1b[0m\n\x1b[1m1)\x1b[0m\t\x1b[1m"20"\x1b[0m\n\n'


def test_run_ok_reply(port, tmp_path):
    proc = gears_run(write(tmp_path, "ok.py", "x = 1\n"), "--port", str(port))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "OK\n", "")


def test_run_syntax_error_exits_1_with_message_on_stderr(port, tmp_path):
    proc = gears_run(write(tmp_path, "bad.py", "GB(\n"), "--port", str(port))
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("failed running gear function (") and "SyntaxError" in lines[0]


def test_run_errors_are_listed_and_exit_1(port, tmp_path):
    script = write(tmp_path, "err.py", "GB().map(lambda r: 1 / 0 if r['key'] == 'cl:3' else r['key']).run('cl:*')\n")
    proc = gears_run(script, "--port", str(port))
    assert proc.returncode == 1
    results_part, _, errors_part = proc.stdout.partition("\nErrors\n------\n")
    assert len(result_lines(results_part + "\n")) == len(KEYS) - 1
    assert errors_part.startswith("1)\t") and "ZeroDivisionError" in errors_part
    assert len(errors_part.splitlines()) == 1


def test_run_unblocking_prints_execution_id(port, tmp_path, client):
    script = write(tmp_path, "keys.py", "GB().map(lambda r: r['key']).run('cl:*')\n")
    for args in (["--unblocking"], ["UNBLOCKING"], ["--", "UNBLOCKING"]):
        proc = gears_run(script, "--port", str(port), *args)
        assert proc.returncode == 0, proc.stderr
        exec_id = proc.stdout.strip()
        assert EXEC_ID.match(exec_id), proc.stdout
        results, errors = client.getresults_blocking(exec_id)
        assert sorted(results) == sorted(KEYS) and errors == []
        assert client.dropexecution(exec_id) == "OK"


def test_run_connection_and_file_errors(port, tmp_path):
    script = write(tmp_path, "ok.py", "x = 1\n")
    proc = gears_run(script, "--port", "1")
    assert proc.returncode == 1 and proc.stderr.startswith("Cannot connect to Redis. Aborting (")
    proc = gears_run(str(tmp_path / "missing.py"), "--port", str(port))
    assert proc.returncode == 1 and proc.stderr.startswith("gears: ")
    proc = gears_run(script, "--port", str(port), "--bogus")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr


def test_read_requirements(tmp_path):
    path = write(tmp_path, "reqs.txt", "# pinned\n\nsix==1.16.0  # tiny\n  redis<5\n")
    assert read_requirements(path) == ["six==1.16.0", "redis<5"]


def test_format_reply():
    assert format_reply(b"OK") == ("OK\n", False)
    assert format_reply([[b"a", 3, [b"x", 1]], []]) == ("Results\n-------\n1)\ta\n2)\t\"3\"\n3)\t['x', 1]\n\n", False)
    text, has_errors = format_reply([[], [b"boom"]])
    assert has_errors and text == "Results\n-------\n\nErrors\n------\n1)\tboom\n"


def test_run_with_requirements(port, tmp_path, tmp_path_factory):
    why = pip_can_download("six==1.16.0", tmp_path_factory.mktemp("six-probe"))
    if why:
        pytest.skip(f"package index not reachable: {why}")
    reqs = write(tmp_path, "requirements.txt", "# tiny\n\nsix==1.16.0\n")
    script = write(tmp_path, "six.py", "import six\nGB('ShardsIDReader').map(lambda r: six.__version__).run()\n")
    proc = gears_run(script, "--port", str(port), "--requirements", reqs, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result_lines(proc.stdout) == ["1.16.0"] * 3


# ----------------------------------------------------------------- GearsClient


def test_pyexecute_reply_shapes(client):
    results, errors = client.pyexecute("GB().map(lambda r: r['key']).run('cl:*')")
    assert sorted(results) == sorted(KEYS) and errors == []
    assert client.pyexecute("GB().count().run('cl:*')") == [["20"], []]
    assert client.pyexecute("x = 1") == "OK"
    exec_id = client.pyexecute("GB().count().run('cl:*')", unblocking=True)
    assert isinstance(exec_id, str) and EXEC_ID.match(exec_id)
    assert client.getresults_blocking(exec_id) == [["20"], []]
    assert client.getresults(exec_id) == [["20"], []]
    dumped = {e["executionId"]: e for e in client.dumpexecutions()}
    assert dumped[exec_id]["status"] == "done"
    assert client.dropexecution(exec_id) == "OK"
    assert exec_id not in {e["executionId"] for e in client.dumpexecutions()}
    with pytest.raises(redis.ResponseError, match="SyntaxError"):
        client.pyexecute("GB(")
    value, unknown = client.configget("MaxExecutions", "NoSuchConfig")
    assert isinstance(value, int) and isinstance(unknown, redis.ResponseError)


def test_pyexecute_command_words():
    words = GearsClient.pyexecute_command(
        "s", unblocking=True, id="a", description="d", upgrade=True, replace_with="b",
        requirements=["x", "y"], extra_args=["E"],
    )
    assert words == ["RG.PYEXECUTE", "s", "UNBLOCKING", "ID", "a", "DESCRIPTION", "d", "UPGRADE",
                     "REPLACE_WITH", "b", "E", "REQUIREMENTS", "x", "y"]
    assert GearsClient.pyexecute_command("s", requirements="six") == ["RG.PYEXECUTE", "s", "REQUIREMENTS", "six"]


def test_client_wraps_redis_connections(cluster, port):
    with redis.Redis(port=port, decode_responses=True) as conn:
        assert GearsClient(connection=conn).pyexecute("GB().count().run('cl:*')") == [["20"], []]
    rc = cluster.cluster_client()
    try:
        assert GearsClient(connection=rc).pyexecute("GB().count().run('cl:*')") == [["20"], []]
    finally:
        rc.close()


# ----------------------------------------------------------- GearsRemoteBuilder


def key_and_number(record):
    """A module-level function: shipped by value although this module is importable here."""
    return (record["key"], int(record["value"]))


def test_remote_builder_returns_python_objects(client):
    results, errors = GearsRemoteBuilder("KeysReader", client).map(lambda r: r["key"]).run("cl:*")
    assert errors == [] and sorted(results) == sorted(KEYS)
    results, errors = GearsRemoteBuilder("KeysReader", client).map(key_and_number).sort().run("cl:*")
    assert errors == [] and results == sorted((k, int(v)) for k, v in KEYS.items())
    assert all(isinstance(r, tuple) for r in results)
    results, _ = GearsRemoteBuilder("KeysReader", client, defaultArg="cl:*").map(lambda r: int(r["value"])).avg().run()
    assert results == [sum(range(20)) / 20]


def test_remote_builder_countby_gives_dicts(client):
    results, errors = GearsRemoteBuilder("KeysReader", client).countby(lambda r: r["type"]).run("cl*")
    assert errors == []
    assert sorted(results, key=lambda d: d["key"]) == [{"key": "hash", "value": 1}, {"key": "string", "value": 20}]


def test_remote_builder_more_operations(client):
    gb = (
        GearsRemoteBuilder("KeysReader", client)
        .filter(lambda r: int(r["value"]) % 2 == 0)
        .map(lambda r: int(r["value"]))
        .flatmap(lambda n: [n, n])
        .distinct()
        .aggregate(0, lambda a, r: a + r, lambda a, r: a + r)
    )
    assert gb.run("cl:*") == [[sum(range(0, 20, 2))], []]
    results, errors = (
        GearsRemoteBuilder("KeysReader", client)
        .groupby(lambda r: str(int(r["value"]) % 3), lambda k, a, r: (a or 0) + 1)
        .run("cl:*")
    )
    assert errors == [] and {d["key"]: d["value"] for d in results} == {"0": 7, "1": 7, "2": 6}
    assert GearsRemoteBuilder("ShardsIDReader", client).count().run() == [[3], []]


def test_remote_builder_errors(client):
    results, errors = GearsRemoteBuilder("KeysReader", client).map(lambda r: 1 / 0).run("cl:1")
    assert results == [] and len(errors) == 1 and "ZeroDivisionError" in errors[0]
    with pytest.raises(redis.ResponseError, match="map argument must be a function"):
        GearsRemoteBuilder("KeysReader", client).map(len).run("cl:1")
    with pytest.raises(TypeError, match="defaultArg"):
        GearsRemoteBuilder("KeysReader", "cl:*")


def test_remote_builder_register_sends_a_script(client):
    sent: list[tuple] = []

    class Spy(GearsClient):
        def execute_command(self, *args):
            sent.append(args)
            return super().execute_command(*args)

    spy = Spy(connection=client.redis)
    try:
        reply = GearsRemoteBuilder("KeysReader", spy).map(lambda r: r["key"]).register("clreg:*", mode="sync")
    except redis.ResponseError as exc:  # registrations are not in the engine yet: the server says so
        assert "register" in str(exc)
    else:
        assert reply == "OK"
    (args,) = sent
    assert args[0] == "RG.PYEXECUTE" and "GB(" in args[1] and "cloudpickle" in args[1]


def test_dumps_by_value_ships_functions_of_user_modules(tmp_path, monkeypatch):
    (tmp_path / "gfc_helper_mod.py").write_text("def helper(x):\n    return x * 2\n\ndef outer(x):\n    return helper(x) + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import gfc_helper_mod

    blob = dumps_by_value(gfc_helper_mod.outer)
    # where the blob is loaded, the module cannot be imported
    monkeypatch.delitem(sys.modules, "gfc_helper_mod")
    sys.path.remove(str(tmp_path))
    with pytest.raises(ImportError):
        import gfc_helper_mod  # noqa: F401
    assert pickle.loads(blob)(5) == 11


# ------------------------------------------------------------- the real gears-cli


@pytest.fixture(scope="session")
def gears_cli(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``gears-cli`` 1.2.0 in its own venv (``redis<5``), created once and cached."""
    exe = GEARS_CLI_VENV / "bin" / "gears-cli"
    marker = GEARS_CLI_VENV / ".gears-cli-1.2.0-ok"
    GEARS_CLI_VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{GEARS_CLI_VENV}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and exe.exists():
            return exe
        why = pip_can_download("gears-cli==1.2.0", tmp_path_factory.mktemp("gears-cli-probe"))
        if why:
            pytest.skip(f"package index not reachable, cannot install gears-cli: {why}")
        shutil.rmtree(GEARS_CLI_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(GEARS_CLI_VENV)], check=True, capture_output=True, timeout=300)
        proc = subprocess.run(
            [str(GEARS_CLI_VENV / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", "gears-cli==1.2.0"],
            capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, f"pip install gears-cli==1.2.0 failed: {proc.stderr[-2000:]}"
        marker.write_text("ok\n")
    return exe


def gears_cli_run(exe: Path, port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(exe), "run", "--host", "127.0.0.1", "--port", str(port), *args],
        capture_output=True, text=True, timeout=60,
    )


def test_gears_cli_prints_results(gears_cli, port, tmp_path):
    script = write(tmp_path, "keys.py", "GB().map(lambda r: r['key']).run('cl:*')\n")
    proc = gears_cli_run(gears_cli, port, script)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(result_lines(ANSI.sub("", proc.stdout))) == sorted(KEYS)


@pytest.mark.parametrize(
    "script",
    [
        "GB().map(lambda r: r['key']).sort().run('cl:*')",
        "GB().count().run('cl:*')",
        "GB().countby(lambda r: r['type']).map(lambda r: r['value']).sort().run('cl*')",
        "GB().map(lambda r: [r['key'], 1, 2.5]).run('cl:1')",
        "GB().map(lambda r: 1 / 0 if r['key'] == 'cl:3' else r['key']).sort().run('cl:*')",
        "x = 1",
    ],
    ids=["keys", "count", "countby", "list", "errors", "ok"],
)
def test_gears_run_output_matches_gears_cli(gears_cli, port, tmp_path, script):
    path = write(tmp_path, "script.py", script + "\n")
    theirs = gears_cli_run(gears_cli, port, path)
    ours = gears_run(path, "--port", str(port))
    assert ours.stdout == ANSI.sub("", theirs.stdout)
    assert ours.returncode == theirs.returncode


def test_gears_cli_error_reply_matches(gears_cli, port, tmp_path):
    path = write(tmp_path, "bad.py", "GB(\n")
    theirs = gears_cli_run(gears_cli, port, path)
    ours = gears_run(path, "--port", str(port))
    assert theirs.returncode == ours.returncode == 1
    # gears-cli prints the message on stdout; `gears run` on stderr
    assert ANSI.sub("", theirs.stdout) == ours.stderr


def test_gears_cli_extra_args(gears_cli, port, tmp_path):
    path = write(tmp_path, "keys.py", "GB().map(lambda r: r['key']).run('cl:*')\n")
    theirs = gears_cli_run(gears_cli, port, path, "ID", "clisession")
    ours = gears_run(path, "--port", str(port), "ID", "clisession2")
    assert theirs.returncode == ours.returncode == 0
    assert sorted(result_lines(ANSI.sub("", theirs.stdout))) == sorted(result_lines(ours.stdout)) == sorted(KEYS)
