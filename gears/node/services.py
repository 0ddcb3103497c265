"""What a gears node offers its collaborators: the command handlers, the coordinator, the
session store, the registration interceptor and the metrics take a :class:`NodeServices`
rather than :class:`~gears.node.node.GearsNode` itself.

This module imports none of them (only, for type checking, the node's leaf parts), so
``node.py`` wires them without an import cycle. The collaborators' own objects appear
here as ``Any`` for the same reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import redis.asyncio as aioredis

    from gears.node.access import AccessControl
    from gears.node.config import GearsConfig
    from gears.node.peers import PeerLink
    from gears.node.slowlog import SlowLog
    from gears.node.topology import ClusterView
    from gears.node.worker_handle import WorkerHandle
    from gears.node.worker_pool import WorkerPool
    from gears.wire.peerauth import PeerSecret

__all__ = ["NodeServices"]


class NodeServices(Protocol):
    """The node's parts and actions its collaborators use."""

    # --- parts
    config: GearsConfig
    view: ClusterView
    server: aioredis.Redis
    server_address: tuple[str, int]
    announce_text: str
    run_id: str
    peer_secret: PeerSecret
    requirements_root: Path
    access: AccessControl
    slowlog: SlowLog
    workers: WorkerPool
    server_reachable: bool
    ai_config: dict[str, Any]
    #: :class:`~gears.node.coordinator.Coordinator`
    coordinator: Any
    #: :class:`~gears.node.sessions.SessionStore`
    sessions: Any
    #: :class:`~gears.node.interception.CommandTable` (``None`` until the node started)
    command_table: Any
    #: :class:`~gears.node.frontdoor.FrontDoor`
    frontdoor: Any
    #: :class:`~gears.node.metrics.CommandMetrics`
    command_metrics: Any
    #: :class:`~gears.node.metrics.MetricsServer` (``None``: no ``--metrics``)
    metrics: Any

    # --- peers
    def peer(self, index: int) -> PeerLink: ...
    def peer_indexes(self) -> list[int]: ...
    def peer_run_id(self, index: int) -> str | None: ...
    async def ensure_peers(self) -> None: ...
    async def broadcast(self, kind: str, header: Any) -> list[Any]: ...
    async def on_peer_message(self, kind: str, header: Any, blob: bytes | None) -> Any: ...

    # --- keys and topology
    def key_is_local(self, key: bytes) -> bool: ...
    def check_key_is_local(self, key: bytes) -> None: ...
    async def refresh_topology(self) -> None: ...
    def replica_reads(self) -> aioredis.Redis: ...

    # --- workers, sessions, requirements
    async def worker_for(self, requirement_list: list[str] | tuple[str, ...] | None) -> WorkerHandle: ...
    def registrations_changed(self) -> None: ...
    def config_changed(self) -> None: ...
    async def clear_registration_stats(self) -> None: ...
    async def apply_session_everywhere(self, record: Any, replaces: str | None) -> list[str]: ...
    async def install_requirements_everywhere(self, reqs: list[str], *, force: bool = False) -> None: ...
    async def import_requirement_everywhere(self, package: bytes) -> None: ...
    def dump_requirements(self) -> list[Any]: ...
