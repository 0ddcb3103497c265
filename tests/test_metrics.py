"""Observability on real clusters: the Prometheus families of every gears node, the
``# Gears`` section of ``INFO``, and registration failures in the log."""

from __future__ import annotations

import logging
import socket
import urllib.request
import uuid
from pathlib import Path

import hiredis
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from gears_cluster import launcher
from conftest import wait_for
from gears.node.frontdoor import PASSTHROUGH_SAMPLE_EVERY, _info_with
from gears.node.metrics import FAMILIES, PASSTHROUGH
from gears.engine.records import error_headline, format_error, readable_error
from gears.worker.registrations.failure_log import LINES_PER_WINDOW, WINDOW_SECONDS, FailureLog

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[set[str], Samples]:
    """The family names a node declares and its samples (``(name, labels) -> value``)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    declared: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        declared.add(family.name + "_total" if family.type == "counter" else family.name)
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return declared, samples


def scrape_families(url: str) -> dict[str, str]:
    """``family name -> type`` of every family a node declares (counters with ``_total``)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {
        family.name + "_total" if family.type == "counter" else family.name: family.type
        for family in text_string_to_metric_families(text)
    }


def metrics_urls(state: launcher.ClusterState) -> dict[str, str]:
    """Front door address -> metrics URL, from ``gears cluster status --json``'s data."""
    return {node["gears"]: node["metrics"] for node in launcher.status(state.dir)["nodes"]}


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample (0 when absent: a labelled series appears with its first event)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(state: launcher.ClusterState, name: str, **labels: str) -> float:
    """The sum of a sample over every node of the cluster (``node`` label set per node)."""
    return sum(value(scrape(url)[1], name, node=door, **labels) for door, url in metrics_urls(state).items())


def test_every_node_serves_every_family_with_its_node_label(gc):
    urls = metrics_urls(gc)
    assert len(urls) == len(gc.nodes)
    for node in gc.nodes:
        assert urls[node.gears_address] == f"http://127.0.0.1:{node.gears_port + launcher.METRICS_PORT_OFFSET}/metrics"
    for door, url in urls.items():
        declared, samples = scrape(url)
        assert set(FAMILIES) <= declared
        assert value(samples, "gears_worker_memory_bytes", node=door) > 0
        assert ("gears_worker_restarts_total", frozenset({("node", door)})) in samples
        assert {dict(labels)["node"] for _, labels in samples} == {door}


def test_commands_are_counted_by_class(cluster1):
    door = cluster1.nodes[0].gears_address
    url = metrics_urls(cluster1)[door]
    client = cluster1.client()
    client.ping()  # the connection exists before the first scrape
    _, before = scrape(url)
    pipe = client.pipeline(transaction=False)
    for i in range(10):
        pipe.set(f"mcount{i}", i)
    pipe.execute()
    for _ in range(5):
        client.get("mcount0")
    client.execute_command("CLUSTER", "SLOTS")  # forwarded on the exact path (its reply is rewritten)
    client.info("server")  # forwarded (no # Gears section asked for)
    for _ in range(3):
        client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').run()")
    _, after = scrape(url)
    delta = lambda name, **labels: value(after, name, node=door, **labels) - value(before, name, node=door, **labels)  # noqa: E731
    assert delta("gears_commands_total", command=PASSTHROUGH) == 17
    assert delta("gears_commands_total", command="RG.PYEXECUTE") == 3
    assert delta("gears_command_duration_seconds_count", command="RG.PYEXECUTE") == 3
    assert delta("gears_executions_total", status="ok") == 3


def test_passthrough_latency_is_sampled(cluster1):
    door = cluster1.nodes[0].gears_address
    url = metrics_urls(cluster1)[door]
    client = cluster1.client()
    _, before = scrape(url)
    for _ in range(3 * PASSTHROUGH_SAMPLE_EVERY):  # one request per batch, each on an idle connection
        client.get("msample")
    _, after = scrape(url)
    name = "gears_command_duration_seconds_count"
    sampled = value(after, name, node=door, command=PASSTHROUGH) - value(before, name, node=door, command=PASSTHROUGH)
    assert sampled == 3  # the forwarded count passed 3 multiples of 64, each time on an idle connection


def _failing_registration(client: redis.Redis, prefix: str, error: str) -> str:
    script = f"def boom(r):\n    raise ValueError({error!r})\nGB().foreach(boom).register(prefix='{prefix}*', mode='async_local')"
    assert client.execute_command("RG.PYEXECUTE", script) == "OK"
    entries = client.execute_command("RG.DUMPREGISTRATIONS")
    return next(e[1] for e in entries if prefix in repr(e[7]))


def test_registration_failures_count_and_log_once_per_distinct_error(gc):
    prefix = f"mfail{uuid.uuid4().hex[:6]}:"
    client = gc.client(decode_responses=True)
    reg_id = _failing_registration(client, prefix, "metrics test failure")
    errors_before = total(gc, "gears_executions_total", status="error")
    try:
        cluster = gc.cluster_client()
        for i in range(6):
            cluster.set(f"{prefix}{i}", i)
        labels = {"registration": reg_id, "reader": "KeysReader"}
        wait_for(lambda: total(gc, "gears_registration_failures_total", **labels) == 6, timeout=30,
                 what="6 failures counted")
        assert total(gc, "gears_registration_triggered_total", **labels) == 6
        assert total(gc, "gears_executions_total", status="error") - errors_before == 6
        failing_nodes = 0
        for node in gc.nodes:
            _, samples = scrape(node_url(gc, node))
            failed = value(samples, "gears_registration_failures_total", node=node.gears_address, **labels)
            assert ("gears_registration_lag_seconds", frozenset({("node", node.gears_address), *labels.items()})) in samples
            lines = [line for line in Path(node.gears_log).read_text().splitlines()
                     if f"registration {reg_id} failed" in line]
            assert len(lines) == (1 if failed else 0), lines
            if failed:
                failing_nodes += 1
                assert lines[0].endswith("failed: ValueError: metrics test failure")
        assert failing_nodes >= 1
    finally:
        client.execute_command("RG.UNREGISTER", reg_id)


def test_stream_registration_counts_and_lag(cluster1):
    door = cluster1.nodes[0].gears_address
    url = metrics_urls(cluster1)[door]
    client = cluster1.client(decode_responses=True)
    stream = f"mstream{uuid.uuid4().hex[:6]}"
    assert client.execute_command("RG.PYEXECUTE", f"GB('StreamReader').foreach(lambda r: r).register(prefix='{stream}')") == "OK"
    reg_id = next(e[1] for e in client.execute_command("RG.DUMPREGISTRATIONS") if stream in repr(e[7]))
    try:
        for i in range(4):
            client.xadd(stream, {"n": i})
        labels = {"node": door, "registration": reg_id, "reader": "StreamReader"}
        wait_for(lambda: value(scrape(url)[1], "gears_registration_triggered_total", **labels) == 4, timeout=30,
                 what="4 stream batches counted")
        _, samples = scrape(url)
        assert value(samples, "gears_registration_failures_total", **labels) == 0
        assert ("gears_registration_lag_seconds", frozenset(labels.items())) in samples
        assert value(samples, "gears_registration_lag_seconds", **labels) >= 0
    finally:
        client.execute_command("RG.UNREGISTER", reg_id)


def node_url(state: launcher.ClusterState, node: launcher.NodeInfo) -> str:
    return metrics_urls(state)[node.gears_address]


def test_model_runs_batches_and_queue_depth(cluster1):
    torch = pytest.importorskip("torch")
    from ai_models import Affine, torchscript

    door = cluster1.nodes[0].gears_address
    url = metrics_urls(cluster1)[door]
    client = cluster1.client()
    tag = uuid.uuid4().hex[:6]
    key = f"mmodel{{{tag}}}"
    client.execute_command("AI.MODELSTORE", key, "TORCH", "CPU", "BLOB", torchscript(Affine()))
    client.execute_command("AI.TENSORSET", f"min{{{tag}}}", "FLOAT", 2, 4, "VALUES", *range(8))
    _, before = scrape(url)
    for _ in range(3):
        client.execute_command("AI.MODELEXECUTE", key, "INPUTS", 1, f"min{{{tag}}}", "OUTPUTS", 1, f"mout{{{tag}}}")
    _, after = scrape(url)
    labels = {"node": door, "model": key, "device": "CPU"}
    assert value(after, "gears_ai_runs_total", **labels) == 3
    assert value(after, "gears_ai_run_duration_seconds_count", **labels) == 3
    batches = value(after, "gears_ai_batch_size_count", node=door) - value(before, "gears_ai_batch_size_count", node=door)
    assert batches == 3
    samples = value(after, "gears_ai_batch_size_sum", node=door) - value(before, "gears_ai_batch_size_sum", node=door)
    assert samples == 6  # three runs of 2 samples each
    assert value(after, "gears_ai_queue_depth", node=door, device="CPU") == 0
    assert value(after, "gears_commands_total", node=door, command="AI.MODELEXECUTE") - value(
        before, "gears_commands_total", node=door, command="AI.MODELEXECUTE") == 3
    del torch


def test_worker_restart_is_counted(cluster1):
    door = cluster1.nodes[0].gears_address
    url = metrics_urls(cluster1)[door]
    client = cluster1.client()
    _, before = scrape(url)
    try:
        reply = client.execute_command("RG.PYEXECUTE", "import os\nGB('ShardsIDReader').map(lambda x: os._exit(3)).run()")
        assert "worker process exited" in str(reply[1][0])
    except redis.ResponseError as exc:  # the worker died before it answered the script itself
        assert "worker process exited" in str(exc)
    wait_for(lambda: value(scrape(url)[1], "gears_worker_restarts_total", node=door)
             == value(before, "gears_worker_restarts_total", node=door) + 1, timeout=30, what="the restart counted")
    wait_for(lambda: client.info("gears")["worker_status"] == "up", timeout=30, what="the new worker answering")
    assert value(scrape(url)[1], "gears_worker_memory_bytes", node=door) > 0


# ------------------------------------------------------------------------ INFO


def _raw(port: int, payload: bytes, replies: int) -> list[object]:
    """Send ``payload`` as is and read ``replies`` replies (hiredis framing)."""
    reader = hiredis.Reader()
    out: list[object] = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        while len(out) < replies:
            reader.feed(sock.recv(1 << 16))
            while (reply := reader.gets()) is not False:
                out.append(reply)
    return out


def test_info_has_a_gears_section(gc):
    for node in gc.nodes:
        client = redis.Redis(port=node.gears_port, decode_responses=True)
        everything = client.info()
        assert everything["gears_node"] == node.gears_address
        assert "redis_version" in everything or "valkey_version" in everything
        only = wait_for(lambda client=client: (info := client.info("gears"))["worker_status"] == "up" and info, timeout=30,
                        what="the worker answering")
        assert only["gears_node"] == node.gears_address
        assert only["gears_shard_count"] == len(gc.nodes)
        assert {"executions_ok", "registrations", "registrations_failures", "ai_queues"} <= set(only)
        assert "redis_version" not in only and "valkey_version" not in only
        assert "gears_node" not in client.info("server")


def test_info_framing_is_exact_pipelined_inline_and_resp3(cluster1):
    port = cluster1.ports[0]
    replies = _raw(port, b"INFO gears\r\n*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\nPING\r\n", 4)
    assert replies[0].startswith(b"# Gears\r\n") and replies[0].endswith(b"\r\n")
    assert replies[1] == b"PONG" and replies[3] == b"PONG"
    assert b"# Server" in replies[2] and b"# Gears" not in replies[2]
    resp3 = _raw(port, b"HELLO 3\r\nINFO gears\r\nINFO\r\n", 3)
    assert resp3[1].startswith(b"# Gears\r\n")
    assert b"# Server" in resp3[2] and b"\r\n\r\n# Gears\r\n" in resp3[2]


def test_info_inside_multi_is_forwarded(cluster1):
    client = cluster1.client()
    pipe = client.pipeline(transaction=True)
    pipe.info("server")
    pipe.ping()
    info, pong = pipe.execute()
    assert "gears_node" not in info and pong is True


def _bulk(kind: bytes, text: bytes) -> bytes:
    return b"%b%d\r\n%b\r\n" % (kind, len(text), text)


def test_info_with_appends_or_replaces_the_section():
    section = b"# Gears\r\na:1\r\n"
    server = b"# Server\r\nx:1\r\n"
    assert _info_with(_bulk(b"$", server), section, only=False) == _bulk(b"$", server + b"\r\n" + section)
    assert _info_with(_bulk(b"$", b""), section, only=False) == _bulk(b"$", section)
    assert _info_with(_bulk(b"$", b""), section, only=True) == _bulk(b"$", section)
    assert _info_with(_bulk(b"=", b"txt:" + server), section, only=False) == _bulk(b"=", b"txt:" + server + b"\r\n" + section)
    assert _info_with(_bulk(b"=", b"txt:"), section, only=True) == _bulk(b"=", b"txt:" + section)


# ----------------------------------------------------------------- failure log


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_failure_log_once_per_distinct_error_and_rate_limited(caplog):
    clock = _Clock()
    failures = FailureLog(clock)
    with caplog.at_level(logging.ERROR, logger="gears.registrations"):
        assert failures.report("r-1", "boom") is True
        assert [failures.report("r-1", "boom") for _ in range(5)] == [False] * 5
        assert failures.report("r-2", "boom") is True  # another registration: its own line
        logged = [failures.report("r-1", f"error {i}") for i in range(LINES_PER_WINDOW + 3)]
        assert logged == [True] * (LINES_PER_WINDOW - 1) + [False] * 4
        clock.now = WINDOW_SECONDS
        assert failures.report("r-1", "later") is True
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 + 1 + (LINES_PER_WINDOW - 1) + 1
    assert messages[0] == "registration r-1 failed: boom"
    assert messages[-1] == "registration r-1 failed: later (4 other new errors were not logged)"


def test_failure_log_forgets_an_unregistered_registration():
    failures = FailureLog(_Clock())
    assert failures.report("r-1", "boom") is True
    failures.forget("r-1")
    assert failures.report("r-1", "boom") is True


def test_failure_log_writes_the_error_line_then_the_traceback(caplog):
    try:
        raise ValueError("no graph")
    except ValueError as exc:
        text = format_error(exc)
    assert text.startswith("['Traceback")
    assert error_headline(text) == "ValueError: no graph"
    assert readable_error(text).splitlines()[0] == "Traceback (most recent call last):"
    assert error_headline("ERR plain\n") == "ERR plain" and readable_error("['not", ) == "['not"
    with caplog.at_level(logging.ERROR, logger="gears.registrations"):
        assert FailureLog(_Clock()).report("r-9", text) is True
    message = caplog.records[-1].getMessage()
    assert message.startswith("registration r-9 failed: ValueError: no graph\nTraceback (most recent call last):\n")
