"""What a worker process offers its parts: the registrations' registry and the API host
take a :class:`WorkerServices` rather than :class:`~gears.worker.process.WorkerProcess`
itself, so ``process.py`` wires them without an import cycle (an execution appears here
as ``Any`` for the same reason)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from gears.engine.plan import Plan
    from gears.engine.shards import ShardMap
    from gears.wire.ipc import ThreadChannel
    from gears.wire.serverconn import ConnectionPerThread
    from gears.worker.context import Session
    from gears.worker.registrations.time_events import TimeEvents
    from gears_readers.base import Reader

__all__ = ["WorkerServices"]


class WorkerServices(Protocol):
    """The worker's parts and actions its registry and API host use."""

    channel: ThreadChannel
    config: dict[str, Any]
    shard_map: ShardMap
    server: ConnectionPerThread
    frontdoor: ConnectionPerThread
    timers: TimeEvents

    @property
    def ai(self) -> Any: ...

    def new_registration_id(self) -> str: ...

    def start_execution(
        self, plan: Plan, reader: Reader, mode: str, session: Session | None, *, registration: dict[str, Any] | None = None
    ) -> Any: ...

    def local_execution(self, plan: Plan, reader: Reader, session: Session | None) -> Any: ...

    def check_access(self, user: str | None, args: tuple[Any, ...]) -> None: ...

    def denied(self, user: str | None, commands: list[tuple[Any, ...]]) -> dict[int, str]: ...
