"""``gears cluster up/down/status`` and the launcher API, with real server processes."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import ROOT, free_base_port, launched_cluster

from gears_cluster import launcher
from gears.engine.shards import hashtag_for_slot, key_slot
from gears_cluster.servers import LauncherError, port_listening, wait_for


def _gears_node_available() -> bool:
    try:
        return importlib.util.find_spec("gears.node.node") is not None
    except ImportError:
        return False


GEARS_NODE = _gears_node_available()
needs_gears_node = pytest.mark.skipif(
    not GEARS_NODE, reason="gears.node.node (the `gears node` command) does not exist yet"
)

NODE_KEYS = {"gears", "redis", "role", "hashtag", "slots", "pid", "gears_pid", "metrics", "health"}
THIRDS = [[[0, 5460]], [[5461, 10922]], [[10923, 16383]]]


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gears ARGS`` the way a user does (from another folder)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    return subprocess.run(
        [sys.executable, "-m", "gears", *args],
        capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=env, check=False,
    )


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def assert_nothing_running(dir: Path, ports: list[int]) -> None:
    saved = launcher.load_state(dir)
    if saved is not None:
        for node in saved.nodes:
            assert not node.server_running() and not node.gears_running()
    assert [p for p in ports if port_listening(p)] == []


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """3 masters + 1 replica each (with gears nodes once `gears node` exists)."""
    with launched_cluster(
        tmp_path_factory.mktemp("replicated"), masters=3, replicas=1,
        base_port=free_base_port(12001, 3, 1, GEARS_NODE),
        gears=GEARS_NODE, what="replicated cluster",
    ) as state:
        yield state


# --------------------------------------------------------------------------- shape


def test_slot_ranges_even_and_contiguous() -> None:
    assert launcher.slot_ranges(1) == [(0, 16383)]
    assert launcher.slot_ranges(3) == [(0, 5460), (5461, 10922), (10923, 16383)]
    for masters in (2, 5, 7, 100):
        ranges = launcher.slot_ranges(masters)
        assert ranges[0][0] == 0 and ranges[-1][1] == 16383
        assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(ranges))
        sizes = [hi - lo + 1 for lo, hi in ranges]
        assert max(sizes) - min(sizes) <= 1


def test_status_json_shape(replicated: launcher.ClusterState) -> None:
    done = run_cli("cluster", "status", "--dir", replicated.dir, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report) == {"state", "nodes"}
    assert report["state"] == "ok"
    assert len(report["nodes"]) == 6
    base = replicated.base_port
    for i, node in enumerate(report["nodes"]):
        assert set(node) == NODE_KEYS
        assert node["gears"] == f"127.0.0.1:{base + i}"
        assert node["redis"] == f"127.0.0.1:{base + 10000 + i}"
        assert node["metrics"] == (f"http://127.0.0.1:{base + 5000 + i}/metrics" if GEARS_NODE else None)
        assert isinstance(node["pid"], int) and pid_alive(node["pid"])
        if GEARS_NODE:
            assert isinstance(node["gears_pid"], int) and pid_alive(node["gears_pid"])
        else:
            assert node["gears_pid"] is None
        health = node["health"]
        assert health["server"] == "ok"
        if GEARS_NODE:
            assert health["worker"] == "alive" and health["not_running"] == [] and health["with_errors"] == []
        else:
            assert health["worker"] is None and health["registrations"] is None
    assert replicated.ports == [base + i for i in range(6)]
    assert replicated.server_ports == [base + 10000 + i for i in range(6)]

    table = run_cli("cluster", "status", "--dir", replicated.dir)
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].startswith("cluster ok")
    assert "127.0.0.1:" + str(base + 10005) in table.stdout


def test_state_file(replicated: launcher.ClusterState) -> None:
    data = json.loads((Path(replicated.dir) / "cluster.json").read_text())
    assert data["masters"] == 3 and data["replicas"] == 1 and data["base_port"] == replicated.base_port
    for node in data["nodes"]:
        for key in ("port", "gears_port", "role", "dir", "pid", "gears_pid", "binary", "config"):
            assert key in node
        assert Path(node["dir"]) == Path(replicated.dir) / f"node-{node['port']}"
        assert (Path(node["dir"]) / "nodes.conf").is_file()
        assert (Path(node["dir"]) / "appendonlydir").is_dir()


def test_roles_hashtags_and_config(replicated: launcher.ClusterState) -> None:
    nodes = launcher.status(replicated.dir)["nodes"]
    assert [n["role"] for n in nodes] == ["master"] * 3 + ["replica"] * 3
    assert [n["slots"] for n in nodes] == THIRDS + THIRDS
    for node in nodes:
        lowest = node["slots"][0][0]
        assert node["hashtag"] == hashtag_for_slot(lowest)
        assert key_slot("{" + node["hashtag"] + "}x") == lowest
    assert nodes[0]["hashtag"] == "06S"
    # the replica of master i is node 3+i, live from the server itself
    for i in range(3):
        role = replicated.server_client(3 + i).execute_command("ROLE")
        assert role[0] == "slave" and int(role[2]) == replicated.server_ports[i]
    server = replicated.server_client(0)
    config = server.config_get("notify-keyspace-events")["notify-keyspace-events"]
    assert {"K", "E", "m"} <= set(config) and ("A" in config or {"g", "$", "h"} <= set(config))
    assert server.config_get("appendonly")["appendonly"] == "yes"
    assert "cluster_state:ok" in server.execute_command("CLUSTER", "INFO")


@needs_gears_node
def test_gears_nodes(replicated: launcher.ClusterState) -> None:
    for node in launcher.load_state(replicated.dir).nodes:  # type: ignore[union-attr]
        assert redis.Redis(port=node.gears_port, decode_responses=True).ping()
        cmdline = Path(f"/proc/{node.gears_pid}/cmdline").read_bytes().split(b"\0")[:-1]
        socket_path = Path(node.dir).resolve() / "server.sock"
        assert [part.decode() for part in cmdline[1:]] == [
            "-m", "gears", "node", "--redis", f"127.0.0.1:{node.port}", "--listen", f"127.0.0.1:{node.gears_port}",
            "--peer-secret-file", str(Path(replicated.dir) / "peer.secret"), "--redis-socket", str(socket_path),
            "--metrics", f"127.0.0.1:{node.gears_port + launcher.METRICS_PORT_OFFSET}",
        ]
        assert socket_path.is_socket() and socket_path.stat().st_mode & 0o777 == 0o700
        # clients' commands reach the server over the socket: their connections show its path
        client = redis.Redis(port=node.gears_port, decode_responses=True)
        assert client.client_setname("via-door") and str(socket_path) in client.client_info()["addr"]
        client.close()
        assert os.readlink(f"/proc/{node.gears_pid}/cwd") == os.getcwd()
        assert (Path(replicated.dir) / f"gears-{node.gears_port}.log").is_file()


@needs_gears_node
def test_a_cluster_wide_run_is_refused_clearly_beside_a_replica(replicated: launcher.ClusterState) -> None:
    nodes = launcher.load_state(replicated.dir).nodes  # type: ignore[union-attr]
    replica = next(n for n in nodes if n.role == "replica")
    door = redis.Redis(port=replica.gears_port, decode_responses=True)
    with pytest.raises(redis.ResponseError) as refused:
        door.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').run()")
    assert str(refused.value) == (
        f"this gears node serves a replica (server 127.0.0.1:{replica.port}): start cluster-wide runs at a master's front door"
    )
    results, errors = replicated.client().execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').run()")
    assert errors == [] and len(set(results)) == 3
    door.close()


# --------------------------------------------------------------------------- restart


def test_restart_after_kill_keeps_data(replicated: launcher.ClusterState) -> None:
    client = redis.RedisCluster(host="127.0.0.1", port=replicated.server_ports[0], decode_responses=True)
    try:
        for i in range(200):
            client.set(f"key:{i}", i)
    finally:
        client.close()
    before = launcher.load_state(replicated.dir)
    assert before is not None
    victim = before.nodes[1]  # a master with data
    os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
    killed = [victim.pid]
    if GEARS_NODE:
        os.kill(before.nodes[2].gears_pid, signal.SIGKILL)  # type: ignore[arg-type]
        killed.append(before.nodes[2].gears_pid)
    wait_for(
        lambda: not victim.server_running() and not (GEARS_NODE and before.nodes[2].gears_running()),
        timeout=10, what="killed processes to exit",
    )
    report = launcher.status(replicated.dir)
    assert report["state"] in ("degraded", "fail"), report
    assert report["nodes"][1]["pid"] is None

    after = launcher.up(dir=replicated.dir, gears=GEARS_NODE)
    assert after.nodes[1].pid != victim.pid and pid_alive(after.nodes[1].pid)
    assert after.nodes[0].pid == before.nodes[0].pid  # running nodes are left alone
    if GEARS_NODE:
        assert after.nodes[2].gears_pid not in killed and pid_alive(after.nodes[2].gears_pid)
        assert after.nodes[1].gears_pid == before.nodes[1].gears_pid
        assert redis.Redis(port=after.nodes[2].gears_port).ping()
    assert launcher.status(replicated.dir)["state"] == "ok"

    # through the front doors when there are gears nodes (all of them must be mapped, once
    # the restarted master's replica has linked up again and is listed in CLUSTER SLOTS)
    if GEARS_NODE:
        def door_ports() -> list[int]:
            probe = replicated.cluster_client()
            try:
                return sorted(node.port for node in probe.get_nodes())
            finally:
                probe.close()

        wait_for(lambda: door_ports() == replicated.ports, timeout=30, interval=0.2, what="every front door listed")
    client = (
        replicated.cluster_client() if GEARS_NODE
        else redis.RedisCluster(host="127.0.0.1", port=replicated.server_ports[1], decode_responses=True)
    )
    try:
        if GEARS_NODE:
            assert sorted(node.port for node in client.get_nodes()) == replicated.ports
        assert [client.get(f"key:{i}") for i in range(200)] == [str(i) for i in range(200)]
    finally:
        client.close()
        if GEARS_NODE:  # worker processes the killed gears node may have left behind
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(killed[1], signal.SIGKILL)


def test_conflicting_options_on_restart(replicated: launcher.ClusterState) -> None:
    with pytest.raises(LauncherError, match="--masters 3, not 2"):
        launcher.up(masters=2, dir=replicated.dir, gears=GEARS_NODE)
    done = run_cli("cluster", "up", "--dir", replicated.dir, "--replicas", "2")
    assert done.returncode == 1
    assert done.stderr.startswith("gears: ") and done.stderr.count("\n") == 1
    assert "--replicas 1, not 2" in done.stderr
    assert launcher.status(replicated.dir)["state"] == "ok"


# --------------------------------------------------------------------------- down


def test_one_master_up_and_down_idempotent(tmp_path: Path) -> None:
    base = free_base_port(12101, 1, 0, gears=False)
    done = run_cli("cluster", "up", "--masters", "1", "--base-port", str(base), "--dir", str(tmp_path), "--no-gears")
    try:
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines()[0].startswith("cluster ok")
        report = launcher.status(tmp_path)
        assert report["state"] == "ok"
        assert [(n["role"], n["slots"], n["hashtag"]) for n in report["nodes"]] == [("master", [[0, 16383]], "06S")]
        pid = report["nodes"][0]["pid"]
        client = redis.Redis(port=base + 10000, decode_responses=True)
        client.set("kept", "yes")
        client.close()

        first = run_cli("cluster", "down", "--dir", str(tmp_path))
        assert first.returncode == 0 and "stopped 1" in first.stdout
        assert not pid_alive(pid)
        assert launcher.status(tmp_path)["state"] == "down"
        second = run_cli("cluster", "down", "--dir", str(tmp_path))
        assert second.returncode == 0 and "nothing is running" in second.stdout
        assert launcher.down(tmp_path) == 0
        assert launcher.down(tmp_path / "never-used") == 0

        again = launcher.start_servers_only(dir=tmp_path)  # restart keeps topology and data
        assert again.masters == 1 and again.server_ports == [base + 10000]
        assert again.server_client(0).get("kept") == "yes"
    finally:
        launcher.down(tmp_path)
    assert_nothing_running(tmp_path, [base + 10000])


# --------------------------------------------------------------------------- errors


def test_port_in_use_is_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for preferred in range(12201, 12201 + 1000, 100):
            base = free_base_port(preferred, 3)
            with contextlib.suppress(OSError):
                holder.bind(("127.0.0.1", base + 10001))
                break
        holder.listen()
        ports = launcher.ports_needed(3, 0, base, gears=True)
        done = run_cli("cluster", "up", "--base-port", str(base), "--dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == f"gears: port {base + 10001} is already in use\n"
    assert done.stdout == ""
    assert_nothing_running(tmp_path, [p for p in ports if p != base + 10001])


def test_failure_after_start_stops_what_was_started(tmp_path: Path) -> None:
    base = free_base_port(12201, 3)
    # servers start, but refuse cluster commands: everything started must be stopped again
    done = run_cli("cluster", "up", "--base-port", str(base), "--dir", str(tmp_path), "--config", "cluster-enabled=no")
    assert done.returncode == 1
    assert done.stderr.startswith("gears: ") and done.stderr.count("\n") == 1, done.stderr
    assert "cluster" in done.stderr
    assert_nothing_running(tmp_path, launcher.ports_needed(3, 0, base))
    # a bad directive: the server's own complaint is reported
    with pytest.raises(LauncherError, match="failed to start.*server.log"):
        launcher.up(masters=1, base_port=base, dir=tmp_path, config={"no-such-directive": "1"}, gears=False)
    assert_nothing_running(tmp_path, launcher.ports_needed(1, 0, base))


def test_missing_binary_is_clear_error(tmp_path: Path) -> None:
    done = run_cli("cluster", "up", "--server", "/nonexistent/valkey-server", "--dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr == "gears: server binary not found: /nonexistent/valkey-server\n"
    assert not (tmp_path / "cluster.json").exists()
    with pytest.raises(LauncherError, match="server binary not found"):
        launcher.up(server="no-such-server-program", dir=tmp_path)


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not on PATH")
def test_server_redis(tmp_path: Path) -> None:
    """Debian's redis-server (7.0) as the server nodes, with gears nodes and a real run."""
    base = free_base_port(12301, 3, 0)
    with launched_cluster(tmp_path, masters=3, base_port=base, what="redis-server cluster", server="redis") as state:
        assert state.binary == os.path.abspath(shutil.which("redis-server"))  # type: ignore[arg-type]
        assert launcher.status(tmp_path)["state"] == "ok"
        cluster = state.cluster_client()
        for i in range(30):
            cluster.hset(f"h{i}", mapping={"n": i})
        reply = state.client().execute_command(
            "RG.PYEXECUTE", "GB().map(lambda r: int(r['value']['n'])).aggregate(0, lambda a, r: a + r, lambda a, r: a + r).run('h*')"
        )
        assert reply == [[str(sum(range(30)))], []]
        cluster.close()


@pytest.mark.skipif(shutil.which("redis-server") is not None, reason="redis-server is on PATH")
def test_server_redis_missing_is_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LauncherError, match="redis-server not found on PATH"):
        launcher.up(server="redis", dir=tmp_path)
