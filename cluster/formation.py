"""Making running server nodes one cluster, and reading its live state.

The cluster-management commands the launcher sends to local server nodes (there is
no ``valkey-cli``): ``CLUSTER ADDSLOTSRANGE`` on the masters, ``CLUSTER MEET`` from
the first node, ``CLUSTER REPLICATE`` on the replicas, then polls until every node
agrees. Also the parsed live reads ``status`` needs (``CLUSTER INFO``, ``CLUSTER
NODES``, ``CLUSTER SHARDS``). Every function talks to ``127.0.0.1:<port>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import redis

from cluster.servers import HOST, probe_client, wait_for

__all__ = [
    "FormationNode",
    "cluster_info",
    "cluster_nodes",
    "cluster_shards",
    "cluster_slots_ports",
    "form_cluster",
    "replicas_synced",
    "wait_cluster_ok",
]


class FormationNode(Protocol):
    """What :func:`form_cluster` needs to know about one planned server node."""

    index: int  # 1-based, masters first
    role: str  # "master" | "replica"
    port: int
    bus_port: int
    master_port: int | None  # a replica's master
    slots: list[list[int]]  # a master's slot ranges


# --------------------------------------------------------------------------- live reads


def _command(port: int, *args: Any) -> Any | None:
    """``args`` sent to the server on ``port``; None when it does not answer or errs."""
    try:
        return probe_client(port).execute_command(*args)
    except (redis.RedisError, OSError):
        return None


def cluster_info(port: int) -> dict[str, str] | None:
    """``CLUSTER INFO`` as a dict (``cluster_state`` ...), None if the server does not answer."""
    text = _command(port, "CLUSTER", "INFO")
    if text is None:
        return None
    info: dict[str, str] = {}
    for line in str(text).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def cluster_nodes(port: int) -> list[dict[str, Any]] | None:
    """``CLUSTER NODES`` as ``[{"id", "port", "flags": set, "master": id | None}]``."""
    text = _command(port, "CLUSTER", "NODES")
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


def replicas_synced(ports: Sequence[int]) -> bool:
    """Every one of ``ports`` that is a replica now has its replication link up."""
    for port in ports:
        info = _command(port, "INFO", "replication")
        if info is None:
            return False
        if not isinstance(info, str):  # redis-py parses INFO into a dict
            info = "\n".join(f"{k}:{v}" for k, v in dict(info).items())
        if "role:slave" in info and "master_link_status:up" not in info:
            return False
    return True


# --------------------------------------------------------------------------- formation


def _send(port: int, *args: Any) -> Any:
    """One cluster command; a refusal propagates as ``redis.ResponseError``."""
    return probe_client(port, timeout=10.0).execute_command(*args)


def form_cluster(
    nodes: Sequence[FormationNode], *, timeout: float, check: Callable[[], None] | None = None
) -> dict[int, str]:
    """Make fresh server nodes one cluster; returns the node id per server port.

    Masters get their slot ranges (and config epochs 1..N, as redis-cli does), the
    first node meets every other, replicas then replicate their master. Returns once
    every node knows every other one and sees each replica under its master.
    ``check`` runs between polls (to fail fast when a server died).
    """
    ids: dict[int, str] = {}
    for node in nodes:
        ids[node.port] = str(_send(node.port, "CLUSTER", "MYID"))
        _send(node.port, "CLUSTER", "SET-CONFIG-EPOCH", node.index)
        if node.role == "master":
            for lo, hi in node.slots:
                _send(node.port, "CLUSTER", "ADDSLOTSRANGE", lo, hi)
    for node in nodes[1:]:
        _send(nodes[0].port, "CLUSTER", "MEET", HOST, node.port, node.bus_port)

    everyone = set(ids.values())

    def all_met() -> bool:
        for node in nodes:
            known = cluster_nodes(node.port)
            if known is None:
                return False
            if {n["id"] for n in known if not n["flags"] & {"handshake", "noaddr"}} != everyone:
                return False
        return True

    wait_for(all_met, timeout=timeout, what="server nodes to meet", check=check)

    expected: dict[str, str] = {}
    for node in nodes:
        if node.role == "replica" and node.master_port is not None:
            _send(node.port, "CLUSTER", "REPLICATE", ids[node.master_port])
            expected[ids[node.port]] = ids[node.master_port]

    def replicas_known() -> bool:
        for node in nodes:
            known = cluster_nodes(node.port)
            if known is None:
                return False
            master_of = {n["id"]: n["master"] for n in known}
            if any(master_of.get(replica) != master for replica, master in expected.items()):
                return False
        return True

    wait_for(replicas_known, timeout=timeout, what="replicas to attach", check=check)
    return ids


def wait_cluster_ok(ports: Sequence[int], *, timeout: float, check: Callable[[], None] | None = None) -> None:
    """Wait until every server on ``ports`` says ``cluster_state:ok``, knows all of
    them, and every replica's link to its master is up."""
    total = str(len(ports))

    def ok() -> bool:
        for port in ports:
            info = cluster_info(port)
            if info is None or info.get("cluster_state") != "ok" or info.get("cluster_known_nodes") != total:
                return False
        return replicas_synced(ports)

    wait_for(ok, timeout=timeout, what="cluster_state:ok on every server node", check=check)
