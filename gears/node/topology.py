"""The cluster as one gears node sees it.

:class:`~gears.engine.shards.ShardMap` is a plain snapshot (shards, slot owners, this
node's place) that the node hands to its worker process. :class:`ClusterView` builds it from the local
server node (``CLUSTER SHARDS``) and finds every gears node's front door: a gears node names its connections to its
server node ``gears-frontdoor@host:port``, so ``CLIENT LIST`` on a server node tells
where the gears node beside it listens (nothing is written to the keyspace, and a
node that is gone disappears from the list).
"""

from __future__ import annotations

import asyncio
import logging
from array import array
from typing import Any

from gears.engine.shards import NO_CLUSTER_ID, SLOTS, ShardInfo, ShardMap

__all__ = ["ShardInfo", "ShardMap", "ClusterView", "NO_CLUSTER_ID", "CLIENT_NAME_PREFIX"]

log = logging.getLogger(__name__)

#: A gears node names its connections to its server node ``gears-frontdoor@host:port``.
CLIENT_NAME_PREFIX = "gears-frontdoor@"
#: Seconds a server node has to answer the front-door registry's ``CLIENT LIST``.
REGISTRY_TIMEOUT = 2.0


def _frontdoor_in_client_list(listing: str) -> tuple[str, int] | None:
    for line in listing.splitlines():
        for part in line.split(" "):
            if part.startswith("name=" + CLIENT_NAME_PREFIX):
                host, _, port = part[len("name=" + CLIENT_NAME_PREFIX):].rpartition(":")
                if host and port.isdigit():
                    return host, int(port)
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def shard_map_from_cluster_shards(reply: list[Any], my_node_id: str) -> ShardMap:
    """Build a :class:`ShardMap` from a RESP2 ``CLUSTER SHARDS`` reply (as redis-py parses it)."""
    shards: list[ShardInfo] = []
    my_index, my_role = 0, "master"
    for entry in reply:
        info = {(_text(k)): v for k, v in (entry.items() if isinstance(entry, dict) else zip(entry[::2], entry[1::2]))}
        slots = [int(s) for s in info.get("slots", [])]
        ranges = tuple((slots[i], slots[i + 1]) for i in range(0, len(slots), 2))
        master: tuple[str, int] | None = None
        master_id = ""
        replicas: list[tuple[str, int]] = []
        member_ids: dict[str, str] = {}
        for node in info.get("nodes", []):
            n = {(_text(k)): v for k, v in (node.items() if isinstance(node, dict) else zip(node[::2], node[1::2]))}
            # A server that speaks only TLS (``port 0``) lists its ``tls-port`` alone.
            address = (_text(n.get("ip") or n.get("endpoint")), int(n.get("port") or n.get("tls-port") or 0))
            role = _text(n.get("role"))
            node_id = _text(n["id"])
            if _text(n.get("health", "online")) != "online" and role != "master" and node_id != my_node_id:
                continue  # a replica still loading or failed (but never this node: its role counts)
            member_ids[node_id] = role
            if role == "master":
                master, master_id = address, node_id
            elif _text(n.get("health", "online")) == "online":
                replicas.append(address)
        if master is None or not ranges:
            continue
        if my_node_id in member_ids:
            my_index, my_role = len(shards), member_ids[my_node_id]
        shards.append(ShardInfo(master_id, ranges, master, tuple(replicas)))
    if len(shards) <= 1:
        standalone = ShardMap.standalone()
        if shards:
            standalone.shards[0] = ShardInfo(NO_CLUSTER_ID, shards[0].ranges, shards[0].master, shards[0].replicas)
        standalone.my_role = my_role
        return standalone
    order = sorted(range(len(shards)), key=lambda i: shards[i].min_slot)
    shards = [shards[i] for i in order]
    my_index = order.index(my_index)
    owner = array("H", bytes(2 * SLOTS))
    for index, shard in enumerate(shards):
        for lo, hi in shard.ranges:
            for slot in range(lo, hi + 1):
                owner[slot] = index
    return ShardMap(shards[my_index].id if my_role == "master" else shards[my_index].id, my_index, shards, owner, my_role)


class ClusterView:
    """Keeps a node's :class:`ShardMap` and the front-door registry up to date."""

    def __init__(
        self, server: Any, server_address: tuple[str, int], frontdoor: tuple[str, int],
        server_login: dict[str, Any] | None = None,
    ) -> None:
        """``server`` is a ``redis.asyncio.Redis`` client of the local server node;
        ``server_login`` the keyword arguments (credentials, TLS) for the other server nodes."""
        self._server = server
        self._server_login = server_login or {}
        self.server_address = server_address
        self.frontdoor = frontdoor
        self.shard_map = ShardMap.standalone()
        self.node_id = NO_CLUSTER_ID
        self.server_cluster_enabled = False
        self._frontdoors: dict[tuple[str, int], tuple[str, int]] = {server_address: frontdoor}

    async def refresh(self) -> ShardMap:
        """Re-read the topology from the local server node and the front-door registry."""
        info = await self._server.info("cluster")
        self.server_cluster_enabled = bool(int(info.get("cluster_enabled", 0)))
        if not self.server_cluster_enabled:
            self.shard_map = ShardMap.standalone()
            self.shard_map.shards[0] = ShardInfo(NO_CLUSTER_ID, ((0, SLOTS - 1),), self.server_address)
            return self.shard_map
        self.node_id = _text(await self._server.execute_command("CLUSTER", "MYID"))
        reply = await self._server.execute_command("CLUSTER", "SHARDS")
        self.shard_map = shard_map_from_cluster_shards(reply, self.node_id)
        await self._read_registry()
        return self.shard_map

    async def _read_registry(self) -> None:
        """Find every gears node's front door from the client names on each server node.

        The servers are asked at once, each with a short timeout: a server on a machine
        that is gone (no RST, only lost packets) costs :data:`REGISTRY_TIMEOUT` seconds,
        not the kernel's connect timeout, so a refresh (and the promotion it may carry)
        is never held up by a dead host."""
        found: dict[tuple[str, int], tuple[str, int]] = {self.server_address: self.frontdoor}
        servers = {a for shard in self.shard_map.shards for a in (shard.master, *shard.replicas)} - found.keys()
        doors = await asyncio.gather(*(self._frontdoor_beside(address) for address in servers))
        found.update((address, door) for address, door in zip(servers, doors, strict=True) if door is not None)
        self._frontdoors.update(found)

    async def _frontdoor_beside(self, address: tuple[str, int]) -> tuple[str, int] | None:
        """The front door named in ``CLIENT LIST`` of the server at ``address`` (``None``: none, or no answer)."""
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = aioredis.Redis(
            host=address[0], port=address[1], **self._server_login,
            socket_connect_timeout=REGISTRY_TIMEOUT, socket_timeout=REGISTRY_TIMEOUT, retry=Retry(NoBackoff(), 0),
        )
        try:
            listing = await client.execute_command("CLIENT", "LIST", "TYPE", "normal")
        except Exception as exc:  # noqa: BLE001 - a node that is down keeps its old entry
            log.warning("could not list clients of server node %s:%d: %s", *address, exc)
            return None
        finally:
            await client.aclose()
        return _frontdoor_in_client_list(_text(listing))

    def frontdoor_for(self, host: str, port: int) -> tuple[str, int] | None:
        """The front door of the gears node beside server ``host:port`` (``None`` if unknown)."""
        return self._frontdoors.get((host, port))

    def shard_frontdoor(self, index: int) -> tuple[str, int] | None:
        """The front door of shard ``index``'s master."""
        return self._frontdoors.get(self.shard_map.shards[index].master)
