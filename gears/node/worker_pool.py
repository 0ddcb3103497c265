"""The node's worker processes: one per user environment.

A *user environment* is what a session's code can import: the base user environment
(:mod:`gears.environments.base`) plus, for a session started with ``REQUIREMENTS``, exactly that
requirement set. Python cannot hold two versions of one module in one process, so each
environment in use gets a worker process of its own: sessions asking for ``redis==3.5.3``
and ``redis==5.0.8`` run side by side on one node, each seeing its own, and the sessions
without requirements (the project's own pipelines among them) see neither.

The base worker (:attr:`WorkerPool.base`, environment key ``""``) always runs; it also
serves the model layer. A requirement set's worker starts when a session, an execution
or a stored time event of that set first needs it, and stops once nothing uses it any
more for a while (``EnvironmentWorkerIdleMS``, :meth:`WorkerPool.reap_idle`). Installs stay shared on
disk: every worker of a set on a host imports from the set's one installed copy
(:mod:`gears.environments.requirements`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from gears.environments.requirements import normalize_requirements, set_key
from gears.node.worker_handle import WorkerHandle

__all__ = ["BASE_ENVIRONMENT", "Environment", "WorkerPool"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Environment:
    """What a worker's user code imports: the base environment plus ``requirements``.

    >>> Environment.of(["b", " a", "b"]).requirements
    ('a', 'b')
    >>> Environment.of([]).key
    ''
    """

    #: The normalised requirement set (empty: the base environment only).
    requirements: tuple[str, ...] = ()

    @classmethod
    def of(cls, requirements: list[str] | tuple[str, ...] | None) -> Environment:
        """The environment of a ``REQUIREMENTS`` list (``None`` or empty: the base one)."""
        return cls(normalize_requirements(requirements or ()))

    @property
    def key(self) -> str:
        """``""`` for the base environment, else the requirement set's key."""
        return set_key(self.requirements) if self.requirements else ""

    @property
    def label(self) -> str:
        """How logs and listings name it."""
        return "base" if not self.requirements else "requirements " + " ".join(self.requirements)


#: The environment of sessions without ``REQUIREMENTS``.
BASE_ENVIRONMENT = Environment()


class WorkerPool:
    """The worker processes of one node, by environment key."""

    def __init__(
        self,
        make_worker: Callable[[Environment], WorkerHandle],
        prepare: Callable[[Environment], Awaitable[None]],
        in_use: Callable[[Environment, WorkerHandle], Awaitable[bool]],
    ) -> None:
        """``make_worker`` builds a (not started) handle; ``prepare`` makes an environment
        importable on this host before its worker starts (installs the set when missing);
        ``in_use`` tells whether a running set worker still has work (sessions, executions,
        time events)."""
        self._make_worker = make_worker
        self._prepare = prepare
        self._in_use = in_use
        self.base = make_worker(BASE_ENVIRONMENT)
        self._workers: dict[str, WorkerHandle] = {"": self.base}
        self._environments: dict[str, Environment] = {"": BASE_ENVIRONMENT}
        self._starting: dict[str, asyncio.Task[WorkerHandle]] = {}
        self._idle_since: dict[str, float] = {}

    async def start(self) -> None:
        """Start the base worker."""
        await self.base.start()

    def get(self, key: str) -> WorkerHandle | None:
        """The worker of environment ``key`` if it runs (or is starting)."""
        return self._workers.get(key)

    def handles(self) -> list[WorkerHandle]:
        """Every worker, the base one first."""
        return list(self._workers.values())

    def environments(self) -> list[tuple[Environment, WorkerHandle]]:
        """Every worker with its environment, the base one first."""
        return [(self._environments[key], worker) for key, worker in self._workers.items()]

    def memory(self) -> tuple[int, int]:
        """``(current, peak)`` resident bytes of every worker together."""
        samples = [worker.memory() for worker in self._workers.values()]
        return sum(current for current, _ in samples), sum(peak for _, peak in samples)

    async def ensure(self, environment: Environment) -> WorkerHandle:
        """The running worker of ``environment``, started (its set installed) if needed."""
        worker = self._workers.get(environment.key)
        if worker is not None:
            self._idle_since.pop(environment.key, None)
            return worker
        starting = self._starting.get(environment.key)
        if starting is None:
            starting = self._starting[environment.key] = asyncio.ensure_future(self._start(environment))
            starting.add_done_callback(lambda _: self._starting.pop(environment.key, None))
        return await asyncio.shield(starting)

    async def _start(self, environment: Environment) -> WorkerHandle:
        await self._prepare(environment)
        worker = self._make_worker(environment)
        self._workers[environment.key] = worker
        self._environments[environment.key] = environment
        try:
            await worker.start()
        except BaseException:
            self._workers.pop(environment.key, None)
            raise
        log.info("worker process %s started for %s", worker.pid, environment.label)
        return worker

    async def stop(self, key: str) -> bool:
        """Stop the worker of a requirement set (``False`` if none runs; the base worker
        is never stopped). What it was running is lost: the caller says so."""
        worker = self._workers.get(key)
        if worker is None or not key or key in self._starting:
            return False
        log.info("stopping the worker process %s of %s", worker.pid, self._environments[key].label)
        del self._workers[key]
        self._environments.pop(key, None)
        self._idle_since.pop(key, None)
        await worker.close()
        return True

    async def reap_idle(self, idle_seconds: float, now: float | None = None) -> list[str]:
        """Stop the set workers unused for ``idle_seconds``; the keys stopped."""
        now = time.monotonic() if now is None else now
        stopped = []
        for key, worker in list(self._workers.items()):
            if not key or key in self._starting:
                continue
            if await self._in_use(self._environments[key], worker):
                self._idle_since.pop(key, None)
                continue
            since = self._idle_since.setdefault(key, now)
            if now - since >= idle_seconds and await self.stop(key):
                stopped.append(key)
        return stopped

    async def close(self) -> None:
        """Stop every worker."""
        for task in list(self._starting.values()):
            task.cancel()
        await asyncio.gather(*(worker.close() for worker in self._workers.values()), return_exceptions=True)
