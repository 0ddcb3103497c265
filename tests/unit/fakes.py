"""Stand-ins for a gears node's collaborators (its worker, its peers, its view of the
cluster) for the unit lane: they record what the code under test asked of them and
answer from what the test set up. Nothing here crosses a wire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeShardMap:
    """The part of ``gears.engine.shards.ShardMap`` node-side code reads."""

    my_index: int = 0
    shard_count: int = 1
    my_role: str = "master"
    hashtag: str = "06S"


@dataclass
class FakeView:
    shard_map: FakeShardMap = field(default_factory=FakeShardMap)
    server_cluster_enabled: bool = False


class FakeWorker:
    """A worker handle: ``call``/``query`` answer from ``answers`` (a value, or a function
    of the arguments; an exception is raised); every message is kept in ``sent``/``calls``."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[Any, ...]] = []
        self.sent: list[tuple[Any, ...]] = []
        self.replaced: list[str] = []
        self.pid = 4242
        self.alive = True

    async def call(self, kind: str, *args: Any, **_: Any) -> Any:
        self.calls.append((kind, *args))
        answer = self.answers.get(kind)
        if isinstance(answer, BaseException):
            raise answer
        return answer(*args) if callable(answer) else answer

    query = call

    def send(self, kind: str, *args: Any) -> None:
        self.sent.append((kind, *args))

    def replace(self, reason: str) -> None:
        self.replaced.append(reason)


class FakeWorkers:
    """A node's worker pool with only the base worker (every user environment maps to it)."""

    def __init__(self, worker: FakeWorker) -> None:
        self.base = worker

    def get(self, key: str) -> FakeWorker | None:
        return self.base if key == "" else None

    def handles(self) -> list[FakeWorker]:
        return [self.base]


class FakeSessions:
    """Routes every registration to the base worker."""

    def __init__(self, node: FakeNode) -> None:
        self._node = node

    def worker_of(self, reg_id: str) -> FakeWorker:
        return self._node.worker


class FakePeer:
    """A peer gears node: ``call`` answers ``answer`` (raised if an exception)."""

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.calls: list[tuple[Any, ...]] = []
        self.sent: list[tuple[Any, ...]] = []

    async def call(self, kind: str, *args: Any, timeout: float | None = None) -> Any:
        self.calls.append((kind, *args))
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer

    def send(self, kind: str, *args: Any) -> None:
        self.sent.append((kind, *args))


class FakeServer:
    """The node's connection to its server node: a dict of hashes."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, Any]] = {}

    async def hset(self, key: str, field_name: str | None = None, value: Any = None, mapping: dict[str, Any] | None = None) -> int:
        entry = self.hashes.setdefault(key, {})
        if mapping:
            entry.update(mapping)
        if field_name is not None:
            entry[field_name] = value
        return 1

    async def delete(self, *keys: str) -> int:
        return sum(self.hashes.pop(k, None) is not None for k in keys)

    async def exists(self, key: str | bytes) -> int:
        return int((key.decode() if isinstance(key, bytes) else key) in self.hashes)


class FakeNode:
    """What the coordinator, sessions and interceptor reach through ``GearsNode``."""

    def __init__(self, *, shards: int = 1, index: int = 0, role: str = "master", config: dict[str, Any] | None = None,
                 worker: FakeWorker | None = None, peers: dict[int, FakePeer] | None = None) -> None:
        self.config: dict[str, Any] = {"MaxExecutions": 1000, "ExecutionMaxIdleTime": 5000, "AbortGracePeriodMS": 2000,
                                       **(config or {})}
        self.view = FakeView(FakeShardMap(my_index=index, shard_count=shards, my_role=role))
        self.worker = worker or FakeWorker()
        self.worker.answers.setdefault("registered_executions", [])
        self.workers = FakeWorkers(self.worker)
        self.sessions: Any = FakeSessions(self)
        self.peers = peers if peers is not None else {i: FakePeer() for i in range(shards) if i != index}
        self.server = FakeServer()
        self.server_address = ("127.0.0.1", 6379)
        self.command_table: Any = None
        self.local_keys: Callable[[bytes], bool] = lambda key: True
        self.changes = 0

    async def worker_for(self, requirements: Any) -> FakeWorker:
        """The base environment's worker is the only one here."""
        return self.worker

    def peer(self, index: int) -> FakePeer:
        return self.peers[index]

    def peer_indexes(self) -> list[int]:
        return sorted(self.peers)

    def key_is_local(self, key: bytes) -> bool:
        return self.local_keys(key)

    def registrations_changed(self) -> None:
        self.changes += 1


def run(coroutine: Any) -> Any:
    """Run a coroutine on a fresh loop (each test has its own)."""
    return asyncio.run(coroutine)


async def settle() -> None:
    """Wait until every other task of the running loop (watchers the code started) ended."""
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    await asyncio.wait_for(asyncio.gather(*others), 10)
