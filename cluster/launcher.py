"""``gears cluster up/down/status``: a local Redis Cluster / Valkey cluster plus gears nodes.

Port contract for base port ``P`` and node ``i`` (1-based; masters first, then
replicas): the gears node (front door) listens on ``P+i-1``, its server node on
``P+S+i-1`` and the server's cluster bus on ``P+S+B+i-1``, with the server offset ``S``
and the bus offset ``B`` 10000 each unless chosen (``--server-port-offset``,
``--bus-port-offset``; a bus offset other than the servers' own default of 10000 is given
to each server as ``cluster-port``).
The gears node serves Prometheus metrics on ``P+5000+i-1``
(``http://127.0.0.1:<port>/metrics``).

Everything lives under one folder (default ``.gears/cluster``): ``cluster.json``
(the state file: topology, binary, config, pids; no secrets), ``peer.secret`` (the
gears nodes' shared peer secret, :mod:`gears.wire.peerauth`), ``password`` (with
``requirepass``: the servers' password), ``node-<server port>/`` per server node
(``secrets.conf``, ``nodes.conf``, AOF/RDB, ``server.log``) and
``gears-<front door port>.log`` per gears node. Files holding secrets are mode 0600 and
the folder 0700. Running :func:`up` again on that folder restarts whatever is not
running, keeping data and topology. A first :func:`up` that fails stops what it started
and leaves no trace: a folder it made is removed, and so is whatever it added to a folder
that existed. With ``graph_port`` (``--with-graph``) a FalkorDB
graph server runs beside the cluster, its files in ``graph/`` (see :mod:`gears_cluster.graph`).

Python API (used by the CLI, the test fixtures and benchmarks)::

    state = up(masters=3, dir="/tmp/c")     # -> ClusterState; .client(), .ports ...
    up(dir="/tmp/c", graph_port=9001)       # ... plus the graph server on 127.0.0.1:9001
    status("/tmp/c")                        # -> {"state": "ok", "nodes": [...], "graph": {...}}
    down("/tmp/c")
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from gears_cluster.formation import BUS_PORT_OFFSET, cluster_info, cluster_shards, cluster_slots_ports, form_cluster, wait_cluster_ok
from gears_cluster.graph import graph_status, start_graph, stop_graph
from gears.engine.shards import SLOTS, hashtag_for_slot
from gears.wire.peerauth import PeerSecret, SecretFileError, read_secret_file, write_secret_file
from gears_cluster.servers import (
    HOST,
    LauncherError,
    ProcessRef,
    await_exit,
    check_ports_free,
    close_probes,
    is_running,
    log_failure_line,
    ping,
    probe_client,
    resolve_server_binary,
    server_version,
    set_probe_password,
    start_gears_node,
    start_server,
    stop_processes,
    wait_for,
)
from gears_cluster.statefiles import folder_lock, read_state_file, write_state_file

__all__ = [
    "LauncherError",
    "NodeInfo",
    "ClusterState",
    "DEFAULT_DIR",
    "DEFAULT_BASE_PORT",
    "DEFAULT_SERVER_CONFIG",
    "STATE_FILE",
    "slot_ranges",
    "ports_needed",
    "up",
    "start_servers_only",
    "down",
    "status",
    "load_state",
]

log = logging.getLogger(__name__)

DEFAULT_DIR = ".gears/cluster"
DEFAULT_BASE_PORT = 30001
DEFAULT_MASTERS = 3
DEFAULT_REPLICAS = 0
DEFAULT_SERVER = "valkey"
STATE_FILE = "cluster.json"
PEER_SECRET_FILE = "peer.secret"
PASSWORD_FILE = "password"
#: Server directives that hold secrets: given with ``requirepass=`` only, never in ``config``.
SECRET_DIRECTIVES = ("requirepass", "masterauth")
SERVER_PORT_OFFSET = 10000
#: Highest TCP port.
MAX_PORT = 65535
#: A gears node's metrics port = its front door port + this (between front doors and servers).
METRICS_PORT_OFFSET = 5000
STATE_VERSION = 1
GRAPH_DIR = "graph"  # the graph server's folder inside the cluster folder

#: Directives every server node gets; ``--config K=V`` overrides any of them.
#: ``KEAm``: keyspace + keyevent notifications for every event class incl. keymiss.
#: No diskless-sync delay, so replicas attach at once on a local machine.
DEFAULT_SERVER_CONFIG: dict[str, str] = {
    "appendonly": "yes",
    "notify-keyspace-events": "KEAm",
    "cluster-announce-ip": HOST,
    "enable-debug-command": "local",
    "repl-diskless-sync-delay": "0",
}

_SERVER_STOP_TIMEOUT = 30.0
_GEARS_STOP_TIMEOUT = 15.0


@dataclass
class NodeInfo:
    """One server node and its gears node, as recorded in ``cluster.json``.

    ``role``, ``master_port`` and ``slots`` are the topology the cluster was created
    with (live roles can differ after a failover: see :func:`status`).
    """

    index: int
    role: str
    port: int
    gears_port: int
    bus_port: int
    dir: str
    gears_log: str
    binary: str
    config: dict[str, str]
    master_port: int | None = None
    slots: list[list[int]] = field(default_factory=list)
    node_id: str | None = None
    pid: int | None = None
    gears_pid: int | None = None
    python: str | None = None  # the interpreter running the gears node
    metrics_port: int | None = None  # the gears node's Prometheus endpoint (None: a cluster made before it)

    @property
    def metrics_url(self) -> str | None:
        """``http://127.0.0.1:<metrics port>/metrics`` (``None`` without a metrics port)."""
        return f"http://{HOST}:{self.metrics_port}/metrics" if self.metrics_port is not None else None

    @property
    def host(self) -> str:
        """Where the server node listens (local clusters: loopback)."""
        return HOST

    @property
    def master_address(self) -> tuple[str, int] | None:
        """A replica's master as ``(host, port)``."""
        return None if self.master_port is None else (HOST, self.master_port)

    @property
    def address(self) -> str:
        """``127.0.0.1:<server port>``."""
        return f"{HOST}:{self.port}"

    @property
    def gears_address(self) -> str:
        """``127.0.0.1:<front door port>``."""
        return f"{HOST}:{self.gears_port}"

    def server_ref(self) -> ProcessRef | None:
        if self.pid is None:
            return None
        return ProcessRef(pid=self.pid, exe=self.binary, marker=str(self.port), name=f"server {self.address}")

    def gears_ref(self) -> ProcessRef | None:
        if self.gears_pid is None:
            return None
        return ProcessRef(
            pid=self.gears_pid, exe=self.python or sys.executable, marker=self.gears_address,
            name=f"gears node {self.gears_address}", group=True,
        )

    def server_running(self) -> bool:
        return is_running(self.server_ref())

    def gears_running(self) -> bool:
        return is_running(self.gears_ref())


@dataclass
class ClusterState:
    """A launched cluster: what :func:`up` returns and ``cluster.json`` holds.

    ``ports`` are the front-door ports (reserved by the port contract even when the
    cluster runs without gears nodes), ``server_ports`` the server nodes' ports, both
    in node order (masters first). ``graph_port``/``graph_pid`` describe the graph
    server (None: the cluster has none).
    """

    dir: str
    masters: int
    replicas: int
    base_port: int
    server: str
    binary: str
    config: dict[str, str]
    nodes: list[NodeInfo]
    gears: bool = True
    created: bool = False
    version: int = STATE_VERSION
    graph_port: int | None = None
    graph_pid: int | None = None
    #: The servers require a password (kept in ``<dir>/password``, not here).
    requirepass: bool = False
    #: Server port = front-door port + this; bus port = server port + ``bus_port_offset``.
    server_port_offset: int = SERVER_PORT_OFFSET
    bus_port_offset: int = BUS_PORT_OFFSET

    @property
    def password(self) -> str | None:
        """The servers' password (read from ``<dir>/password``), or None."""
        return read_secret_file(Path(self.dir) / PASSWORD_FILE) if self.requirepass else None

    @property
    def peer_secret_file(self) -> Path:
        """The gears nodes' peer secret file."""
        return Path(self.dir) / PEER_SECRET_FILE

    @property
    def graph_dir(self) -> str:
        """The graph server's folder (``<dir>/graph``)."""
        return str(Path(self.dir) / GRAPH_DIR)

    @property
    def ports(self) -> list[int]:
        return [node.gears_port for node in self.nodes]

    @property
    def server_ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def _client_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("decode_responses", True)
        if self.requirepass and "password" not in kwargs:
            kwargs["password"] = self.password
        return kwargs

    def client(self, **kwargs: Any) -> redis.Redis:
        """A ``redis.Redis`` on the first front door (``decode_responses=True``; as
        ``default`` with the servers' password when they require one)."""
        return redis.Redis(host=HOST, port=self.ports[0], **self._client_kwargs(kwargs))

    def cluster_client(self, **kwargs: Any) -> redis.RedisCluster:
        """A ``redis.RedisCluster`` started from the first front door."""
        return redis.RedisCluster(host=HOST, port=self.ports[0], **self._client_kwargs(kwargs))

    def server_client(self, i: int = 0, **kwargs: Any) -> redis.Redis:
        """A ``redis.Redis`` straight on server node ``i`` (0-based, node order)."""
        return redis.Redis(host=HOST, port=self.server_ports[i], **self._client_kwargs(kwargs))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClusterState:
        """Inverse of :meth:`to_json` (keys it does not know are ignored)."""
        node_keys = {f.name for f in dataclasses.fields(NodeInfo)}
        state_keys = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in state_keys}
        values["nodes"] = [NodeInfo(**{k: v for k, v in node.items() if k in node_keys}) for node in data["nodes"]]
        return cls(**values)


# --------------------------------------------------------------------------- planning


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """Contiguous, even slot ranges for ``masters`` masters (the split redis-cli makes)."""
    if not 1 <= masters <= SLOTS:
        raise LauncherError(f"--masters must be between 1 and {SLOTS}, got {masters}")
    per = SLOTS / masters
    ranges: list[tuple[int, int]] = []
    first, cursor = 0, 0.0
    for i in range(masters):
        last = math.floor(cursor + per - 1 + 0.5)
        if last > SLOTS or i == masters - 1:
            last = SLOTS - 1
        last = max(last, first)
        ranges.append((first, last))
        first, cursor = last + 1, cursor + per
    return ranges


def ports_needed(
    masters: int, replicas: int, base_port: int, gears: bool = True,
    server_offset: int = SERVER_PORT_OFFSET, bus_offset: int = BUS_PORT_OFFSET,
) -> list[int]:
    """Every port a cluster of this shape uses: front doors and metrics (if ``gears``), servers, buses."""
    count = masters * (1 + replicas)
    servers = [base_port + server_offset + i for i in range(count)]
    ports = [base_port + i for i in range(count)] + [base_port + METRICS_PORT_OFFSET + i for i in range(count)] if gears else []
    return ports + servers + [port + bus_offset for port in servers]


def check_port_layout(masters: int, replicas: int, base_port: int, server_offset: int, bus_offset: int) -> None:
    """Raise :class:`LauncherError` unless the front-door, server and bus port ranges are
    disjoint and within 1..65535."""
    count = masters * (1 + replicas)
    for name, offset in (("--server-port-offset", server_offset), ("--bus-port-offset", bus_offset)):
        if offset < count:
            raise LauncherError(f"{name} must be at least the node count ({count}) so port ranges do not overlap, got {offset}")
    if base_port < 1 or base_port + server_offset + bus_offset + count - 1 > MAX_PORT:
        raise LauncherError(
            f"--base-port {base_port} leaves no room for {count} nodes "
            f"(bus ports up to {base_port + server_offset + bus_offset + count - 1}, the highest port is {MAX_PORT})"
        )


def _plan(
    path: Path, masters: int, replicas: int, base_port: int, server: str, binary: str,
    config: dict[str, str], gears: bool, server_offset: int = SERVER_PORT_OFFSET, bus_offset: int = BUS_PORT_OFFSET,
) -> ClusterState:
    if masters < 1:
        raise LauncherError(f"--masters must be at least 1, got {masters}")
    if replicas < 0:
        raise LauncherError(f"--replicas must be at least 0, got {replicas}")
    check_port_layout(masters, replicas, base_port, server_offset, bus_offset)
    count = masters * (1 + replicas)
    needed = ports_needed(masters, replicas, base_port, gears, server_offset, bus_offset)
    if len(set(needed)) != len(needed):
        raise LauncherError(f"{count} nodes are too many for one port contract (ports would repeat)")
    effective = {**DEFAULT_SERVER_CONFIG, **config}
    ranges = slot_ranges(masters)
    nodes: list[NodeInfo] = []
    for i in range(count):
        port = base_port + server_offset + i
        is_master = i < masters
        master_index = i if is_master else (i - masters) % masters
        node_config = dict(effective)
        if bus_offset != BUS_PORT_OFFSET:  # the servers' own default needs no directive
            node_config["cluster-port"] = str(port + bus_offset)
        nodes.append(NodeInfo(
            index=i + 1,
            role="master" if is_master else "replica",
            port=port,
            gears_port=base_port + i,
            bus_port=port + bus_offset,
            metrics_port=base_port + METRICS_PORT_OFFSET + i,
            dir=str(path / f"node-{port}"),
            gears_log=str(path / f"gears-{base_port + i}.log"),
            binary=binary,
            config=node_config,
            master_port=None if is_master else base_port + server_offset + master_index,
            slots=[list(ranges[master_index])],
        ))
    return ClusterState(
        dir=str(path), masters=masters, replicas=replicas, base_port=base_port, server=server,
        binary=binary, config=dict(config), nodes=nodes, gears=gears,
        server_port_offset=server_offset, bus_port_offset=bus_offset,
    )


# --------------------------------------------------------------------------- state file


def _state_path(path: Path) -> Path:
    return path / STATE_FILE


def load_state(dir: str | os.PathLike[str] = DEFAULT_DIR) -> ClusterState | None:
    """The saved state of the cluster in ``dir``, or None when there is none."""
    file = _state_path(Path(dir).resolve())
    data = read_state_file(file)
    if data is None:
        return None
    try:
        return ClusterState.from_json(data)
    except (KeyError, TypeError) as exc:
        raise LauncherError(f"{file} is not a gears cluster state file ({exc})") from exc


def _save(state: ClusterState) -> None:
    write_state_file(_state_path(Path(state.dir)), state.to_json())


# --------------------------------------------------------------------------- waits


def _check_alive(nodes: list[NodeInfo], *, gears: bool = False) -> None:
    """Raise a one-line error naming the log when a process we wait on has exited."""
    for node in nodes:
        if gears:
            if not node.gears_running():
                line = log_failure_line(Path(node.gears_log))
                detail = f": {line}" if line else ""
                raise LauncherError(
                    f"gears node {node.gears_address} exited during start-up{detail} (log: {node.gears_log})"
                )
        elif not node.server_running():
            logfile = Path(node.dir) / "server.log"
            line = log_failure_line(logfile)
            detail = f": {line}" if line else ""
            raise LauncherError(f"server {node.address} failed to start{detail} (log: {logfile})")


def _wait_servers(nodes: list[NodeInfo], timeout: float) -> None:
    wait_for(
        lambda: all(ping(node.port) for node in nodes),
        timeout=timeout,
        what="server nodes to answer PING",
        check=lambda: _check_alive(nodes),
    )


def _form_cluster(state: ClusterState, timeout: float) -> None:
    ids = form_cluster(state.nodes, timeout=timeout, check=lambda: _check_alive(state.nodes))
    for node in state.nodes:
        node.node_id = ids[node.host, node.port]


def _wait_cluster_ok(state: ClusterState, timeout: float) -> None:
    wait_cluster_ok([(HOST, port) for port in state.server_ports], timeout=timeout, check=lambda: _check_alive(state.nodes))


def _start_gears(state: ClusterState, nodes: list[NodeInfo], started: list[ProcessRef], timeout: float) -> None:
    if not nodes:
        return
    check_ports_free([node.gears_port for node in nodes] + [node.metrics_port for node in nodes if node.metrics_port])
    password_file = Path(state.dir) / PASSWORD_FILE if state.requirepass else None
    for node in nodes:
        ref = start_gears_node(
            node.port, node.gears_port, Path(node.gears_log), state.peer_secret_file, password_file, Path(node.dir),
            metrics_port=node.metrics_port,
        )
        started.append(ref)
        node.gears_pid = ref.pid
        node.python = ref.exe
    _save(state)
    _wait_gears(nodes, timeout)


def _wait_gears(nodes: list[NodeInfo], timeout: float) -> None:
    wait_for(
        lambda: all(ping(node.gears_port) for node in nodes),
        timeout=timeout,
        what="gears nodes to answer PING",
        check=lambda: _check_alive(nodes, gears=True),
    )


def _wait_front_doors_mapped(state: ClusterState, timeout: float) -> None:
    """Wait until every front door's ``CLUSTER SLOTS`` names front doors only.

    Each gears node learns its peers' front doors from a registry they fill as they
    start, so right after start-up a front door may still hand out a server address;
    a cluster client connecting then would bypass the gears nodes.
    """
    doors = set(state.ports)

    def mapped() -> bool:
        for node in state.nodes:
            seen = cluster_slots_ports(node.gears_port)
            if seen is None or not seen <= doors:
                return False
        return True

    wait_for(
        mapped,
        timeout=timeout,
        what="every front door to know the other gears nodes",
        check=lambda: _check_alive(state.nodes, gears=True),
    )


def _start_servers(state: ClusterState, nodes: list[NodeInfo], started: list[ProcessRef], timeout: float) -> None:
    if not nodes:
        return
    check_ports_free([node.port for node in nodes] + [node.bus_port for node in nodes])
    password = state.password
    for node in nodes:
        ref = start_server(node.binary, node.port, Path(node.dir), node.config, password)
        started.append(ref)
        node.pid = ref.pid
    _save(state)
    _wait_servers(nodes, timeout)


def _start_graph(state: ClusterState, started: list[ProcessRef], timeout: float) -> None:
    """Start the graph server if the cluster has one and it is not running."""
    if state.graph_port is None:
        return
    server = start_graph(state.graph_dir, state.graph_port, timeout=timeout)
    if server.started:
        started.append(server.ref())
    state.graph_pid = server.pid
    _save(state)


def _abort(state: ClusterState | None, started: list[ProcessRef]) -> None:
    """Stop what this call started (gears nodes first) and record it."""
    gears_refs = [ref for ref in started if ref.group]
    server_refs = [ref for ref in started if not ref.group]
    with contextlib.suppress(Exception):
        stop_processes(gears_refs, timeout=_GEARS_STOP_TIMEOUT)
    with contextlib.suppress(Exception):
        stop_processes(server_refs, timeout=_SERVER_STOP_TIMEOUT)
    if state is not None:
        pids = {ref.pid for ref in started}
        for node in state.nodes:
            if node.pid in pids:
                node.pid = None
            if node.gears_pid in pids:
                node.gears_pid = None
        if state.graph_pid in pids:
            state.graph_pid = None
        with contextlib.suppress(OSError):
            _save(state)


def _discard_partial(state: ClusterState) -> None:
    """A folder whose cluster was never fully created: stop leftovers, wipe node data."""
    log.info("discarding the unfinished cluster in %s", state.dir)
    stop_processes([n.gears_ref() for n in state.nodes], timeout=_GEARS_STOP_TIMEOUT)
    stop_processes([n.server_ref() for n in state.nodes], timeout=_SERVER_STOP_TIMEOUT)
    for node in state.nodes:
        shutil.rmtree(node.dir, ignore_errors=True)


def _create(state: ClusterState, gears: bool, timeout: float) -> None:
    started: list[ProcessRef] = []
    touched = False  # from here on, cluster.json records this attempt (even a failed one)
    try:
        for node in state.nodes:
            folder = Path(node.dir)
            if folder.is_dir() and any(folder.iterdir()):
                raise LauncherError(
                    f"{folder} holds files but {Path(state.dir) / STATE_FILE} is missing; "
                    "restore it or remove the folder"
                )
        extra = [] if state.graph_port is None else [state.graph_port]
        check_ports_free(_ports_of(state, gears) + extra)
        touched = True
        _start_servers(state, state.nodes, started, timeout)
        _form_cluster(state, timeout)
        _wait_cluster_ok(state, timeout)
        state.created = True
        _save(state)
        log.info("cluster created in %s", state.dir)
        if gears:
            _start_gears(state, state.nodes, started, timeout)
            _wait_front_doors_mapped(state, timeout)
        _start_graph(state, started, timeout)
        _save(state)
    except BaseException:
        _abort(state if touched else None, started)
        raise


def _restart(state: ClusterState, gears: bool, timeout: float) -> None:
    started: list[ProcessRef] = []
    try:
        if not os.access(state.binary, os.X_OK):
            raise LauncherError(f"server binary not found: {state.binary}")
        servers = [node for node in state.nodes if not node.server_running()]
        gears_nodes = [node for node in state.nodes if gears and not node.gears_running()]
        if not servers and not gears_nodes:
            log.info("everything in %s is already running", state.dir)
        await_exit([n.server_ref() for n in servers] + [n.gears_ref() for n in gears_nodes])
        check_ports_free(
            [n.port for n in servers] + [n.bus_port for n in servers] + [n.gears_port for n in gears_nodes]
        )
        _start_servers(state, servers, started, timeout)
        _wait_cluster_ok(state, timeout)
        log.debug("cluster_state ok on every server node")
        _start_gears(state, gears_nodes, started, timeout)
        if gears:
            _wait_gears(state.nodes, timeout)
            log.debug("gears nodes answer PING")
            _wait_front_doors_mapped(state, timeout)
        _start_graph(state, started, timeout)
        _save(state)
    except BaseException:
        _abort(state, started)
        raise


def _ports_of(state: ClusterState, gears: bool) -> list[int]:
    return ports_needed(
        state.masters, state.replicas, state.base_port, gears, state.server_port_offset, state.bus_port_offset
    )


def _conflicts(
    saved: ClusterState, masters: int | None, replicas: int | None, base_port: int | None,
    server: str | None, config: Mapping[str, str] | None, graph_port: int | None = None,
    server_offset: int | None = None, bus_offset: int | None = None,
) -> None:
    where = saved.dir
    hint = f"(run `gears cluster down --dir {where}` and remove the folder to start afresh)"
    for name, given, have in (
        ("--masters", masters, saved.masters),
        ("--replicas", replicas, saved.replicas),
        ("--base-port", base_port, saved.base_port),
        ("--graph-port", graph_port, saved.graph_port),
        ("--server-port-offset", server_offset, saved.server_port_offset),
        ("--bus-port-offset", bus_offset, saved.bus_port_offset),
    ):
        if given is not None and have is not None and given != have:
            raise LauncherError(f"the cluster in {where} has {name} {have}, not {given} {hint}")
    if server is not None and resolve_server_binary(server) != saved.binary:
        raise LauncherError(f"the cluster in {where} runs {saved.binary}, not --server {server} {hint}")
    if config and dict(config) != saved.config:
        raise LauncherError(f"the cluster in {where} was created with a different --config {hint}")


# --------------------------------------------------------------------------- public API


def up(
    masters: int | None = None,
    replicas: int | None = None,
    base_port: int | None = None,
    server: str | None = None,
    dir: str | os.PathLike[str] = DEFAULT_DIR,
    config: Mapping[str, str] | None = None,
    *,
    gears: bool = True,
    timeout: float = 120.0,
    graph_port: int | None = None,
    requirepass: str | None = None,
    server_port_offset: int | None = None,
    bus_port_offset: int | None = None,
) -> ClusterState:
    """Start (or restart) the local cluster in ``dir`` and return its state.

    ``requirepass`` protects a new cluster's servers with that password (``requirepass``
    and ``masterauth``); it is kept in ``<dir>/password`` (0600), and the gears nodes and
    later calls read it from there. The gears nodes share a peer secret that a new
    cluster gets in ``<dir>/peer.secret`` (0600).

    A new folder gets ``masters`` (default 3) masters with ``replicas`` (default 0)
    replicas each on ``base_port`` (default 30001), run by ``server`` (``valkey``
    (default), ``redis`` or a path), each with ``config`` server directives on top
    of :data:`DEFAULT_SERVER_CONFIG`. Returns once ``cluster_state:ok`` holds on
    every server node and, with ``gears``, every gears node answers PING and names
    only front doors in ``CLUSTER SLOTS``. ``server_port_offset``/``bus_port_offset``
    (default 10000 each) place the server and bus ports (see the module docstring).
    ``graph_port`` adds a FalkorDB graph server
    on that port (:mod:`gears_cluster.graph`, data in ``<dir>/graph``), ready once it answers
    ``GRAPH.QUERY``; a cluster that has one gets it restarted when it is not running.

    A folder holding a cluster gets whatever is not running restarted (``None``
    options mean "as saved"); options that differ from the saved ones raise
    :class:`LauncherError`, as does any failure, after stopping what this call
    started; a new cluster that fails leaves no folder or files behind. ``timeout``
    bounds each wait.
    """
    path = Path(dir).resolve()
    config = {str(k): str(v) for k, v in (config or {}).items()}
    for name in SECRET_DIRECTIVES:
        if name in config:
            raise LauncherError(f"--config {name}=... would put the password in process arguments; use --requirepass")
    if requirepass is not None and (not requirepass or requirepass != requirepass.strip()):
        raise LauncherError("--requirepass must be non-empty, without leading or trailing white space")
    try:
        offsets = (server_port_offset, bus_port_offset)
        return _up(path, masters, replicas, base_port, server, config, gears, timeout, graph_port, requirepass, offsets)
    except SecretFileError as exc:
        raise LauncherError(str(exc)) from exc
    except redis.RedisError as exc:
        raise LauncherError(f"cluster set-up failed: {exc}") from exc
    except OSError as exc:
        raise LauncherError(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from exc
    finally:
        close_probes()


def _up(
    path: Path, masters: int | None, replicas: int | None, base_port: int | None, server: str | None,
    config: dict[str, str], gears: bool, timeout: float, graph_port: int | None = None,
    requirepass: str | None = None, offsets: tuple[int | None, int | None] = (None, None),
) -> ClusterState:
    started_at = time.monotonic()
    before = set(os.listdir(path)) if path.is_dir() else None
    with folder_lock(path):
        path.chmod(0o700)
        saved = load_state(path)
        if saved is not None and saved.created:
            _conflicts(saved, masters, replicas, base_port, server, config, graph_port, *offsets)
            if requirepass is not None and requirepass != saved.password:
                raise LauncherError(f"the cluster in {path} was created with another --requirepass (or none)")
            set_probe_password(saved.password)
            if not saved.peer_secret_file.exists():  # a folder made before peer secrets existed
                write_secret_file(saved.peer_secret_file, PeerSecret.generate())
            saved.gears = gears or saved.gears
            if graph_port is not None:
                _check_graph_port(saved, graph_port)
                saved.graph_port = graph_port
            _restart(saved, gears, timeout)
            log.info("cluster in %s ready (%.1fs)", path, time.monotonic() - started_at)
            return saved
        try:
            state = _new_cluster(path, saved, masters, replicas, base_port, server, config, gears, timeout, graph_port, requirepass, offsets)
        except BaseException as exc:
            _remove_attempt(path, before)
            if isinstance(exc, LauncherError) and str(path) in str(exc):  # it names a log that is gone now
                raise LauncherError(f"{exc} [removed with the rest of this attempt]") from exc
            raise
        log.info("cluster in %s ready (%.1fs)", path, time.monotonic() - started_at)
        return state


def _new_cluster(
    path: Path, saved: ClusterState | None, masters: int | None, replicas: int | None, base_port: int | None,
    server: str | None, config: dict[str, str], gears: bool, timeout: float, graph_port: int | None,
    requirepass: str | None, offsets: tuple[int | None, int | None],
) -> ClusterState:
    """Plan, write the secrets of and start a cluster in ``path`` (where ``saved`` is None or
    an unfinished attempt, discarded first)."""
    server_name = server or DEFAULT_SERVER
    binary = resolve_server_binary(server_name)
    server_version(binary)
    server_offset, bus_offset = offsets
    state = _plan(
        path,
        DEFAULT_MASTERS if masters is None else masters,
        DEFAULT_REPLICAS if replicas is None else replicas,
        DEFAULT_BASE_PORT if base_port is None else base_port,
        server_name, binary, config, gears,
        SERVER_PORT_OFFSET if server_offset is None else server_offset,
        BUS_PORT_OFFSET if bus_offset is None else bus_offset,
    )
    if graph_port is not None:
        _check_graph_port(state, graph_port)
        state.graph_port = graph_port
    if saved is not None:
        set_probe_password(saved.password)
        _discard_partial(saved)
    _write_secrets(state, requirepass)
    set_probe_password(requirepass)
    _create(state, gears, timeout)
    return state


def _remove_attempt(path: Path, before: set[str] | None) -> None:
    """Undo a failed first start in ``path``: remove the folder when this attempt made it,
    else what the attempt added to it (its processes are already stopped)."""
    if before is None:
        shutil.rmtree(path, ignore_errors=True)
        return
    for name in set(os.listdir(path)) - before | {STATE_FILE}:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)


def _write_secrets(state: ClusterState, requirepass: str | None) -> None:
    """A new cluster's secret files: a fresh peer secret and, with ``requirepass``, the password."""
    write_secret_file(state.peer_secret_file, PeerSecret.generate())
    password_file = Path(state.dir) / PASSWORD_FILE
    if requirepass is None:
        password_file.unlink(missing_ok=True)
    else:
        write_secret_file(password_file, requirepass)
    state.requirepass = requirepass is not None


def _check_graph_port(state: ClusterState, graph_port: int) -> None:
    if not 0 < graph_port < 65536:
        raise LauncherError(f"--graph-port {graph_port} is out of range")
    if graph_port in _ports_of(state, True):
        raise LauncherError(f"--graph-port {graph_port} is one of the cluster's own ports")


def start_servers_only(
    masters: int | None = None,
    replicas: int | None = None,
    base_port: int | None = None,
    server: str | None = None,
    dir: str | os.PathLike[str] = DEFAULT_DIR,
    config: Mapping[str, str] | None = None,
    *,
    timeout: float = 120.0,
) -> ClusterState:
    """:func:`up` without gears nodes: a bare server cluster (``--no-gears``).

    The front-door ports of the port contract (``state.ports``) stay free for a
    front door the caller runs itself.
    """
    return up(masters, replicas, base_port, server, dir, config, gears=False, timeout=timeout)


def down(dir: str | os.PathLike[str] = DEFAULT_DIR) -> int:
    """Stop every process of the cluster in ``dir``: gears nodes, servers, the graph server.

    Processes are found by the pids in ``cluster.json`` (and checked to still be
    ours). Data stays. Returns how many processes were running (0: nothing was,
    which is not an error).
    """
    path = Path(dir).resolve()
    if not _state_path(path).exists():
        return 0
    with folder_lock(path):
        state = load_state(path)
        if state is None:
            return 0
        stopped = stop_processes([n.gears_ref() for n in state.nodes], timeout=_GEARS_STOP_TIMEOUT)
        stopped += stop_processes([n.server_ref() for n in state.nodes], timeout=_SERVER_STOP_TIMEOUT)
        if state.graph_port is not None:
            stopped += stop_graph(state.graph_dir)
        for node in state.nodes:
            node.pid = None
            node.gears_pid = None
        state.graph_pid = None
        _save(state)
    log.info("stopped %d processes in %s", stopped, path)
    return stopped


def status(dir: str | os.PathLike[str] = DEFAULT_DIR) -> dict[str, Any]:
    """The live state of the cluster in ``dir``.

    ``{"state": ..., "nodes": [{"gears", "redis", "role", "hashtag", "slots", "pid",
    "gears_pid", "metrics", "health"}]}`` in node order (``metrics``: the gears node's
    Prometheus URL, ``None`` without gears nodes or in a folder made before metrics) (``health``: see :func:`_health`). Roles and slots come from ``CLUSTER SHARDS`` of a
    running server (the saved topology when none runs); ``pid``/``gears_pid`` are
    None for a process that is not running. ``state`` is the servers'
    ``cluster_state`` (``"ok"``, ``"fail"``), ``"degraded"`` when they say ok but a
    node of the cluster (or its graph server) is not running, ``"down"`` when no
    server runs and ``"absent"`` when ``dir`` holds no cluster. A cluster with a graph
    server adds ``"graph": {"address": "127.0.0.1:<port>", "pid": int | None}``.
    """
    try:
        return _status(dir)
    except SecretFileError as exc:
        raise LauncherError(str(exc)) from exc
    finally:
        close_probes()


def _health(node: NodeInfo, server_answers: bool, gears_running: bool) -> dict[str, Any]:
    """One node's health: its server answers, its worker runs, its registrations run.

    ``worker``: ``"alive"``, ``"down"`` (restarting), ``None`` (no gears node, or it
    does not answer); ``registrations`` counts this shard's registrations,
    ``not_running`` lists ``[id, status]`` of those stopped (aborted, paused, waiting to
    retry) and ``with_errors`` ``[id, failures, last error]`` of those that have failed
    (``None``: unknown, the worker did not answer)."""
    health: dict[str, Any] = {
        "server": "ok" if server_answers else "unreachable",
        "worker": None, "worker_restarts": None, "registrations": None, "not_running": None, "with_errors": None,
    }
    if not gears_running:
        return health
    try:
        reply = probe_client(node.gears_port).execute_command("RG.HEALTH")
    except redis.RedisError as exc:
        log.warning("gears node %s did not report its health: %s", node.gears_address, exc)
        return health
    fields = dict(zip(reply[::2], reply[1::2]))
    health.update(
        worker=fields["worker"], worker_restarts=fields["workerRestarts"], registrations=fields["registrations"],
        not_running=fields["notRunning"], with_errors=fields["withErrors"],
    )
    return health


def _status(dir: str | os.PathLike[str]) -> dict[str, Any]:
    state = load_state(dir)
    if state is None:
        return {"state": "absent", "nodes": []}
    set_probe_password(state.password)
    running = {node.port: node.server_running() for node in state.nodes}
    gears_running = {node.port: node.gears_running() for node in state.nodes}
    graph = graph_status(state.graph_dir) if state.graph_port is not None else None

    infos = {node.port: cluster_info(node.port) for node in state.nodes if running[node.port]}
    answering = [port for port, info in infos.items() if info is not None]
    shards = None
    for port in sorted(answering, key=lambda p: infos[p].get("cluster_state") != "ok"):  # type: ignore[union-attr]
        shards = cluster_shards(port)
        if shards is not None:
            break

    if not answering:
        overall = "down"
    else:
        states = [infos[port].get("cluster_state", "unknown") for port in answering]  # type: ignore[union-attr]
        bad = next((s for s in states if s != "ok"), None)
        if bad is not None:
            overall = bad
        elif (
            not all(running.values()) or (state.gears and not all(gears_running.values()))
            or (graph is not None and graph["state"] != "running")
        ):
            overall = "degraded"
        else:
            overall = "ok"

    live: dict[int, tuple[str, list[list[int]]]] = {}
    for shard in shards or []:
        for member in shard["nodes"]:
            live[member["port"]] = (member["role"], shard["slots"])
    nodes = []
    for node in state.nodes:
        if node.port in live:
            role, slots = live[node.port]
            role = "master" if role == "master" else "replica"
        else:
            role, slots = node.role, [list(r) for r in node.slots]
        nodes.append({
            "gears": node.gears_address,
            "redis": node.address,
            "role": role,
            "hashtag": hashtag_for_slot(min(lo for lo, _ in slots)) if slots else None,
            "slots": slots,
            "pid": node.pid if running[node.port] else None,
            "gears_pid": node.gears_pid if gears_running[node.port] else None,
            "metrics": node.metrics_url if state.gears else None,
            "health": _health(node, infos.get(node.port) is not None, gears_running[node.port]),
        })
    report: dict[str, Any] = {"state": overall, "nodes": nodes}
    if graph is not None:
        report["graph"] = {"address": f"{HOST}:{state.graph_port}", "pid": graph.get("pid")}
    return report
