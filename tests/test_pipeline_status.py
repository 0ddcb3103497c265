"""``gears pipeline status`` on a real 3-shard cluster: it finds the graph the NLP
pipeline was registered with, shows each stage's failures and last error, never dies with
a traceback when the graph is unreachable, and ``--watch`` refreshes until Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import redis

pytest.importorskip("falkordb")
pytest.importorskip("symspellpy")

from gears_cluster import launcher  # noqa: E402
from conftest import require_free_ports, shifted_port, wait_for  # noqa: E402
from gears_pipelines.deploy import deploy_nlp, pipeline_status  # noqa: E402

BASE_PORT = shifted_port(11801)
GRAPH_PORT = shifted_port(11899)
DEAD_GRAPH_PORT = shifted_port(11898)  # nothing listens there


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    require_free_ports(3, 0, BASE_PORT, True, "pipeline status cluster")
    folder = tmp_path_factory.mktemp("pipeline-status")
    started = launcher.up(masters=3, base_port=BASE_PORT, dir=folder, graph_port=GRAPH_PORT)
    try:
        yield started
    finally:
        launcher.down(folder)


def status_cli(state: launcher.ClusterState, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gears", "pipeline", "status", "--port", str(state.ports[0]), *options],
        capture_output=True, text=True, timeout=120,
    )


def _stage(status: dict, prefix: str) -> dict:
    return next(s for s in status["stages"] if s["stage"].startswith(prefix))


def test_status_before_any_registration_has_no_graph_and_no_stages(state):
    done = status_cli(state, "--json")
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["graph"] is None and status["graph_error"] is None and status["stages"] == []


def test_a_failing_stage_shows_its_failures_and_last_error(state):
    deploy_nlp(redis.Redis(port=state.ports[0]), ("127.0.0.1", DEAD_GRAPH_PORT))
    cluster = state.cluster_client()
    cluster.xadd("edges_matched_status", {"source": "C1", "destination": "C2", "source_name": "a",
                                          "destination_name": "b", "year": "2020", "sentence": "sentence:x:{y}:0"})
    wait_for(lambda: _stage(pipeline_status(cluster), "nlp stage 3")["failures"] >= 1, timeout=120,
             what="the graph stage failing")
    status = pipeline_status(cluster)  # no graph given: the registered one is used
    assert status["graph"] == f"127.0.0.1:{DEAD_GRAPH_PORT}"
    assert f"127.0.0.1:{DEAD_GRAPH_PORT} is unavailable" in status["graph_error"]
    assert status["graph_nodes"] is None and status["graph_edges"] is None
    stage3 = _stage(status, "nlp stage 3")
    assert stage3["session"] == "nlp" and stage3["reader"] == "StreamReader"
    assert stage3["triggered"] >= stage3["failures"] >= 1
    assert stage3["last_error"].startswith(f"gears_pipelines.graph.GraphUnavailable: graph server 127.0.0.1:{DEAD_GRAPH_PORT}")
    assert stage3["last_traceback"].startswith("Traceback (most recent call last):")
    assert {s["stage"] for s in status["stages"]} == {
        "nlp stage 1: paragraphs -> sentences", "nlp stage 2: sentences -> concept pairs", "nlp stage 3: concept pairs -> graph"}

    text = status_cli(state)
    assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr
    line = next(line for line in text.stdout.splitlines() if line.startswith("nlp stage 3"))
    assert line.split()[-2:] == ["Connection", "refused."] and "GraphUnavailable" in line
    assert "graph_error" in text.stdout
    as_json = json.loads(status_cli(state, "--json").stdout)
    assert _stage(as_json, "nlp stage 3")["failures"] >= 1

    # registered again with the live graph: status follows it without --graph
    deploy_nlp(redis.Redis(port=state.ports[0]), ("127.0.0.1", GRAPH_PORT))
    status = pipeline_status(cluster)
    assert status["graph"] == f"127.0.0.1:{GRAPH_PORT}" and status["graph_error"] is None
    assert isinstance(status["graph_nodes"], int)
    cluster.close()


def test_watch_refreshes_until_interrupted(state):
    process = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "gears", "pipeline", "status", "--port", str(state.ports[0]),
         "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        headers = 0
        while headers < 2:
            line = process.stdout.readline()
            assert line, process.stderr.read()
            headers += line.startswith("Every 0.2s: gears pipeline status")
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # faulthandler writes every thread's stack to stderr
            process.wait(10)
            pytest.fail(f"--watch still running 30 s after SIGINT; its stacks:\n{process.stderr.read()}")
        assert process.returncode == 0
        assert "Traceback" not in process.stderr.read()
    finally:
        process.kill()


def test_unreachable_cluster_is_one_line_not_a_traceback(state):
    done = subprocess.run(
        [sys.executable, "-m", "gears", "pipeline", "status", "--port", str(shifted_port(11897))],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and done.stderr.startswith("gears: cannot reach 127.0.0.1:")
