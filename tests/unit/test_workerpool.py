"""The node's worker processes per user environment (gears/node/worker_pool.py), with stand-in
handles: one worker per environment however many ask at once, a failed start leaves
nothing behind, and only set workers that nothing uses stop, after the idle time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from unit.fakes import run

from gears.node.worker_pool import BASE_ENVIRONMENT, Environment, WorkerPool


class StubHandle:
    """A worker handle that starts after one loop turn (or fails to) and counts closes."""

    def __init__(self, environment: Environment, fail: bool = False) -> None:
        self.environment = environment
        self.fail = fail
        self.started = 0
        self.closed = 0
        self.pid = id(self)

    async def start(self) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise OSError("could not start")
        self.started += 1

    async def close(self) -> None:
        self.closed += 1

    def memory(self) -> tuple[int, int]:
        return 100, 150


class Pool:
    """A pool over stub handles; ``busy`` holds the keys whose workers still have work."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.made: list[StubHandle] = []
        self.prepared: list[Environment] = []
        self.busy: set[str] = set()
        failing = failing or set()

        def make(environment: Environment) -> Any:
            handle = StubHandle(environment, fail=environment.key in failing)
            self.made.append(handle)
            return handle

        async def prepare(environment: Environment) -> None:
            self.prepared.append(environment)

        async def in_use(environment: Environment, worker: Any) -> bool:
            return environment.key in self.busy

        self.pool = WorkerPool(make, prepare, in_use)


SET_A = Environment.of(["a==1"])
SET_B = Environment.of(["b==2", "a==1"])


def test_environments_are_normalised_and_named() -> None:
    assert Environment.of(["a==1", " a==1 ", ""]) == SET_A
    assert Environment.of(None) == Environment.of([]) == BASE_ENVIRONMENT
    assert BASE_ENVIRONMENT.label == "base" and SET_B.label == "requirements a==1 b==2"
    assert SET_A.key != SET_B.key and len(SET_A.key) == 40


def test_one_worker_per_environment_however_many_ask_at_once() -> None:
    pools = Pool()
    pool = pools.pool

    async def scenario() -> list[Any]:
        await pool.start()
        return await asyncio.gather(*(pool.ensure(env) for env in (SET_A, SET_B, SET_A, BASE_ENVIRONMENT, SET_A)))

    got = run(scenario())
    assert got[0] is got[2] is got[4] and got[3] is pool.base and got[1] is not got[0]
    assert [h.environment for h in pools.made] == [BASE_ENVIRONMENT, SET_A, SET_B]
    assert pools.prepared == [SET_A, SET_B]  # prepared once each; the base needs nothing
    assert [env for env, _ in pool.environments()] == [BASE_ENVIRONMENT, SET_A, SET_B]
    assert pool.memory() == (300, 450)


def test_a_worker_that_fails_to_start_leaves_nothing_behind() -> None:
    pools = Pool(failing={SET_A.key})
    with pytest.raises(OSError, match="could not start"):
        run(pools.pool.ensure(SET_A))
    assert pools.pool.get(SET_A.key) is None and pools.pool.handles() == [pools.pool.base]


def test_only_unused_set_workers_stop_and_only_after_the_idle_time() -> None:
    pools = Pool()
    pool = pools.pool

    async def scenario() -> list[list[str]]:
        await pool.ensure(SET_A)
        await pool.ensure(SET_B)
        pools.busy = {SET_B.key}
        rounds = [await pool.reap_idle(10.0, now=100.0), await pool.reap_idle(10.0, now=105.0)]
        rounds.append(await pool.reap_idle(10.0, now=110.0))  # SET_A unused for 10 s: stops
        await pool.ensure(SET_B)  # asked for again: its idle time starts over
        pools.busy = set()
        rounds += [await pool.reap_idle(10.0, now=200.0), await pool.reap_idle(10.0, now=210.0)]
        return rounds

    assert run(scenario()) == [[], [], [SET_A.key], [], [SET_B.key]]
    assert pool.handles() == [pool.base] and pool.base.closed == 0
    assert [h.closed for h in pools.made[1:]] == [1, 1]


def test_stop_never_stops_the_base_worker() -> None:
    pools = Pool()
    assert run(pools.pool.stop("")) is False
    assert run(pools.pool.stop(SET_A.key)) is False  # none runs
