"""Making running server nodes one cluster, and reading its live state.

The cluster-management commands the launcher sends to local server nodes (there is
no ``valkey-cli``): ``CLUSTER ADDSLOTSRANGE`` on the masters, ``CLUSTER MEET`` from
the first node, ``CLUSTER REPLICATE`` on the replicas, then polls until every node
agrees. Also the parsed live reads ``status`` needs (``CLUSTER INFO``, ``CLUSTER
NODES``, ``CLUSTER SHARDS``). Functions talk to ``127.0.0.1:<port>`` unless given a
host: :func:`plan_cluster` and :func:`form_cluster` also make a cluster of server
nodes on several machines (``gears cluster create``, docs/deploy.md).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from gears_cluster.servers import HOST, LauncherError, probe_client, wait_for

__all__ = [
    "BUS_PORT_OFFSET",
    "FormationNode",
    "PlannedNode",
    "parse_node_address",
    "plan_cluster",
    "cluster_info",
    "cluster_nodes",
    "cluster_shards",
    "cluster_slots_ports",
    "form_cluster",
    "replicas_synced",
    "wait_cluster_ok",
]


#: A server's cluster bus port when not given: its port + 10000 (the servers' default).
BUS_PORT_OFFSET = 10000


class FormationNode(Protocol):
    """What :func:`form_cluster` needs to know about one planned server node."""

    index: int  # 1-based, masters first
    role: str  # "master" | "replica"
    host: str  # the address the other server nodes reach it at
    port: int
    bus_port: int
    master_port: int | None  # a replica's master
    slots: list[list[int]]  # a master's slot ranges


# --------------------------------------------------------------------------- live reads


def _command(port: int, *args: Any, host: str = HOST) -> Any | None:
    """``args`` sent to the server on ``host:port``; None when it does not answer or errs."""
    try:
        return probe_client(port, host=host).execute_command(*args)
    except (redis.RedisError, OSError):
        return None


def cluster_info(port: int, host: str = HOST) -> dict[str, str] | None:
    """``CLUSTER INFO`` as a dict (``cluster_state`` ...), None if the server does not answer."""
    text = _command(port, "CLUSTER", "INFO", host=host)
    if text is None:
        return None
    info: dict[str, str] = {}
    for line in str(text).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def cluster_nodes(port: int, host: str = HOST) -> list[dict[str, Any]] | None:
    """``CLUSTER NODES`` as ``[{"id", "port", "flags": set, "master": id | None}]``."""
    text = _command(port, "CLUSTER", "NODES", host=host)
    if text is None:
        return None
    nodes = []
    for line in str(text).splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split("@", 1)[0]
        nodes.append({
            "id": parts[0],
            "port": int(address.rsplit(":", 1)[1] or 0),
            "flags": set(parts[2].split(",")),
            "master": None if parts[3] == "-" else parts[3],
        })
    return nodes


def _pairs(value: Any) -> dict[str, Any]:
    """A RESP2 flat ``[key, value, ...]`` list (or a RESP3 map) as a dict."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    items = list(value)
    return {str(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def cluster_shards(port: int) -> list[dict[str, Any]] | None:
    """``CLUSTER SHARDS`` as ``[{"slots": [[lo, hi], ...], "nodes": [{"port", "role", "health"}]}]``."""
    raw = _command(port, "CLUSTER", "SHARDS")
    if raw is None:
        return None
    shards = []
    for item in raw:
        shard = _pairs(item)
        flat = [int(x) for x in shard.get("slots", [])]
        slots = [[flat[i], flat[i + 1]] for i in range(0, len(flat) - 1, 2)]
        members = []
        for node in shard.get("nodes", []):
            fields = _pairs(node)
            members.append({
                "port": int(fields.get("port", 0)),
                "role": str(fields.get("role", "")),
                "health": str(fields.get("health", "")),
            })
        shards.append({"slots": sorted(slots), "nodes": members})
    return shards


def cluster_slots_ports(port: int) -> set[int] | None:
    """Every node port ``CLUSTER SLOTS`` on ``port`` (a server or a front door) names."""
    raw = _command(port, "CLUSTER", "SLOTS")
    if raw is None:
        return None
    ports: set[int] = set()
    for entry in raw:
        for node in list(entry)[2:]:
            node = list(node)
            if len(node) >= 2:
                ports.add(int(node[1]))
    return ports


def replicas_synced(addresses: Sequence[tuple[str, int]]) -> bool:
    """Every server at ``addresses`` that is a replica now has its replication link up."""
    for host, port in addresses:
        info = _command(port, "INFO", "replication", host=host)
        if info is None:
            return False
        if not isinstance(info, str):  # redis-py parses INFO into a dict
            info = "\n".join(f"{k}:{v}" for k, v in dict(info).items())
        if "role:slave" in info and "master_link_status:up" not in info:
            return False
    return True


# --------------------------------------------------------------------------- formation


def _send(node: FormationNode, *args: Any) -> Any:
    """One cluster command to ``node``; a refusal propagates as ``redis.ResponseError``."""
    return probe_client(node.port, timeout=10.0, host=node.host).execute_command(*args)


def form_cluster(
    nodes: Sequence[FormationNode], *, timeout: float, check: Callable[[], None] | None = None
) -> dict[tuple[str, int], str]:
    """Make fresh server nodes one cluster; returns the node id per server ``(host, port)``.

    Masters get their slot ranges (and config epochs 1..N, as redis-cli does), the
    first node meets every other, replicas then replicate their master. Returns once
    every node knows every other one and sees each replica under its master.
    ``check`` runs between polls (to fail fast when a server died).
    """
    ids: dict[tuple[str, int], str] = {}
    for node in nodes:
        ids[node.host, node.port] = str(_send(node, "CLUSTER", "MYID"))
        _send(node, "CLUSTER", "SET-CONFIG-EPOCH", node.index)
        if node.role == "master":
            for lo, hi in node.slots:
                _send(node, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
    for node in nodes[1:]:
        _send(nodes[0], "CLUSTER", "MEET", socket.gethostbyname(node.host), node.port, node.bus_port)  # MEET takes an IP

    everyone = set(ids.values())

    def all_met(known: list[dict[str, Any]]) -> bool:
        return {n["id"] for n in known if not n["flags"] & {"handshake", "noaddr"}} == everyone

    wait_for(lambda: _every_view(nodes, all_met), timeout=timeout, what="server nodes to meet", check=check)

    expected: dict[str, str] = {}
    for node in nodes:
        if node.role == "replica" and node.master_address is not None:
            _send(node, "CLUSTER", "REPLICATE", ids[node.master_address])
            expected[ids[node.host, node.port]] = ids[node.master_address]

    def replicas_known(known: list[dict[str, Any]]) -> bool:
        master_of = {n["id"]: n["master"] for n in known}
        return all(master_of.get(replica) == master for replica, master in expected.items())

    wait_for(lambda: _every_view(nodes, replicas_known), timeout=timeout, what="replicas to attach", check=check)
    return ids


def _every_view(nodes: Sequence[FormationNode], accept: Callable[[list[dict[str, Any]]], bool]) -> bool:
    """Every node answers ``CLUSTER NODES`` and ``accept`` takes what it sees."""
    for node in nodes:
        known = cluster_nodes(node.port, node.host)
        if known is None or not accept(known):
            return False
    return True


def wait_cluster_ok(
    addresses: Sequence[tuple[str, int]], *, timeout: float, check: Callable[[], None] | None = None
) -> None:
    """Wait until every server at ``addresses`` says ``cluster_state:ok``, knows all of
    them, and every replica's link to its master is up."""
    total = str(len(addresses))

    def ok() -> bool:
        for host, port in addresses:
            info = cluster_info(port, host)
            if info is None or info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != total:
                return False
        return replicas_synced(addresses)

    wait_for(ok, timeout=timeout, what="cluster_state:ok on every server node", check=check)


# --------------------------------------------------------------------------- several machines


@dataclass(frozen=True)
class PlannedNode:
    """One server node of a cluster made by ``gears cluster create`` (a :class:`FormationNode`)."""

    index: int
    role: str
    host: str
    port: int
    bus_port: int
    master_address: tuple[str, int] | None = None
    slots: list[list[int]] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def parse_node_address(text: str) -> tuple[str, int, int]:
    """``HOST:PORT`` or ``HOST:PORT@BUSPORT`` as ``(host, port, bus port)`` (bus port
    default: port + 10000)."""
    address, _, bus = text.partition("@")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or (bus and not bus.isdigit()):
        raise LauncherError(f"expected a server node as HOST:PORT or HOST:PORT@BUSPORT, got {text!r}")
    return host, int(port), int(bus) if bus else int(port) + BUS_PORT_OFFSET


def plan_cluster(addresses: Sequence[str], replicas: int, ranges: Sequence[tuple[int, int]]) -> list[PlannedNode]:
    """The roles of the server nodes at ``addresses``: the first ``len(ranges)`` are masters
    (with those slot ranges, in order); the rest are replicas, the k-th of them (0-based)
    replicating master ``k % masters``. So an operator places each replica: listing
    ``h1 h2 h3`` then ``h2' h3' h1'`` puts every master's replica on the next machine."""
    masters = len(ranges)
    if replicas < 0 or len(addresses) != masters * (1 + replicas):
        raise LauncherError(
            f"{len(addresses)} server nodes given for {masters} masters with {replicas} replicas each: "
            f"expected {masters * (1 + replicas)}"
        )
    parsed = [parse_node_address(text) for text in addresses]
    if len({(host, port) for host, port, _ in parsed}) != len(parsed):
        raise LauncherError("a server node is listed twice")
    nodes = []
    for i, (host, port, bus) in enumerate(parsed):
        if i < masters:
            lo, hi = ranges[i]
            nodes.append(PlannedNode(i + 1, "master", host, port, bus, slots=[[lo, hi]]))
        else:
            master = nodes[(i - masters) % masters]
            nodes.append(PlannedNode(i + 1, "replica", host, port, bus, master_address=master.address))
    return nodes
