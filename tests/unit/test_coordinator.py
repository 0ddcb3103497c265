"""Executions as a gears node tracks them (gears/node/coordinator.py), on a fake node: the
prepare/run handshake with peers, completion and max-idle, the MaxExecutions list,
drop/abort rules and what a lost worker does to running executions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from unit.fakes import FakeNode, FakePeer, FakeWorker, run, settle

from gears.node.coordinator import ABORTED_ERROR, MAX_IDLE_ERROR, Coordinator, NodeExecution
from gears.errors import ExecutionError, GearsError, NodeUnavailable

STEPS = [("MAP", "<lambda>", "")]
STATS = {"total_ms": 3.5, "read_ms": 1.2}


def meta(exec_id: str, distributed: bool = True, **extra: Any) -> dict[str, Any]:
    return {"id": exec_id, "distributed": distributed, "mode": "async", "steps": STEPS, **extra}


def started(node: FakeNode, exec_id: str, distributed: bool = True) -> tuple[Coordinator, NodeExecution]:
    coordinator = Coordinator(node)  # type: ignore[arg-type]

    async def go() -> str:
        return await coordinator.start(b"plan", meta(exec_id, distributed), "")

    assert run(go()) == exec_id
    return coordinator, coordinator.get(exec_id)


def test_a_local_run_is_running_and_listed() -> None:
    coordinator, execution = started(FakeNode(), "0000-17", distributed=False)
    assert (execution.status, execution.shard_count, execution.is_initiator) == ("running", 1, True)
    assert run(coordinator.dump()) == [["executionId", "0000-17", "status", "running", "registered", 0]]


def test_a_distributed_run_prepares_every_peer_then_tells_them_to_run() -> None:
    node = FakeNode(shards=3, index=1)
    coordinator, execution = started(node, "abc-1")
    for i in (0, 2):
        assert node.peer(i).calls == [("prepare", ("abc-1", 1, meta("abc-1")), b"plan")]
        assert node.peer(i).sent == [("run", "abc-1")]
    assert (execution.status, execution.shards_received, execution.shard_count) == ("running", 2, 3)


@pytest.mark.parametrize(
    "failure, error, text",
    [
        (NodeUnavailable("peer 2 did not answer"), ExecutionError, f"{MAX_IDLE_ERROR}: peer 2 did not answer"),
        (GearsError("worker refused the plan"), GearsError, "worker refused the plan"),
    ],
)
def test_a_peer_that_cannot_prepare_cancels_the_run_everywhere(failure: Exception, error: type, text: str) -> None:
    node = FakeNode(shards=3, peers={1: FakePeer(), 2: FakePeer(failure)})
    coordinator = Coordinator(node)  # type: ignore[arg-type]
    with pytest.raises(error) as raised:
        run(coordinator.start(None, meta("x-1"), ""))
    assert str(raised.value) == text
    assert node.peer(1).sent == node.peer(2).sent == [("drop", "x-1")]
    assert run(coordinator.dump()) == []
    with pytest.raises(ExecutionError, match="execution plan does not exist"):
        coordinator.get("x-1")


def test_a_replica_node_refuses_cluster_wide_runs_naming_its_server() -> None:
    coordinator = Coordinator(FakeNode(shards=3, role="replica"))  # type: ignore[arg-type]
    with pytest.raises(ExecutionError, match=r"serves a replica \(server 127.0.0.1:6379\)"):
        run(coordinator.start(None, meta("r-1"), ""))


def test_the_initiator_is_done_when_every_shard_reported() -> None:
    node = FakeNode(shards=3)

    async def scenario() -> NodeExecution:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        await coordinator.start(b"p", meta("e-1"), "")
        execution = coordinator.get("e-1")
        coordinator.local_finished("e-1", "done", ["r1", "r2"], [], STATS)
        assert execution.status == "pending_cluster" and not execution.done.is_set()
        coordinator.shard_done("e-1")
        assert not execution.done.is_set()
        coordinator.shard_done("e-1")
        assert execution.done.is_set()
        assert coordinator.outcomes == {"ok": 1}
        return execution

    execution = run(scenario())
    assert execution.status == "done" and Coordinator.reply_of(execution) == [["r1", "r2"], []]
    assert (execution.total_ms, execution.read_ms) == (3.5, 1.2)


def test_a_participant_reports_to_its_initiator() -> None:
    node = FakeNode(shards=3, index=2)

    async def scenario() -> NodeExecution:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        await coordinator.prepare("e-9", 0, meta("e-9"), b"p")
        assert coordinator.get("e-9").status == "pending_run"
        coordinator.run("e-9")
        coordinator.local_finished("e-9", "done", ["ignored"], [], STATS)
        return coordinator.get("e-9")

    execution = run(scenario())
    assert node.worker.calls == [("prepare", "e-9", b"p", 0, meta("e-9"))]
    assert node.worker.sent == [("run", "e-9")]
    assert node.peer(0).sent == [("shard_done", "e-9")]
    assert execution.status == "done" and execution.done.is_set() and not execution.is_initiator


def test_a_participant_whose_worker_cannot_prepare_forgets_the_execution() -> None:
    node = FakeNode(shards=2, index=1, worker=FakeWorker(prepare=GearsError("bad plan")))
    coordinator = Coordinator(node)  # type: ignore[arg-type]
    with pytest.raises(GearsError, match="bad plan"):
        run(coordinator.prepare("e-3", 0, meta("e-3"), b"p"))
    assert coordinator.executions == {}


def test_silent_peers_end_the_run_with_the_max_idle_error() -> None:
    node = FakeNode(shards=2, config={"ExecutionMaxIdleTime": 20})

    async def scenario() -> NodeExecution:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        await coordinator.start(b"p", meta("s-1"), "")
        coordinator.local_finished("s-1", "done", ["mine"], [], STATS)
        execution = coordinator.get("s-1")
        await asyncio.wait_for(execution.done.wait(), 10)
        assert coordinator.outcomes == {"error": 1}
        return execution

    execution = run(scenario())
    assert execution.status == "done" and execution.errors == [MAX_IDLE_ERROR]
    assert Coordinator.reply_of(execution) == [["mine"], [MAX_IDLE_ERROR]]


def test_max_executions_evicts_the_oldest_and_keeps_a_running_one_reachable() -> None:
    node = FakeNode(config={"MaxExecutions": 2})

    async def scenario() -> None:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        for n in (1, 2):
            await coordinator.start(None, meta(f"m-{n}", distributed=False), "")
        coordinator.local_finished("m-2", "done", [], [], STATS)
        await coordinator.start(None, meta("m-3", distributed=False), "")  # evicts m-1, still running
        assert [e[1] for e in await coordinator.dump()] == ["m-2", "m-3"]
        assert coordinator.get("m-1").status == "running"  # unlisted, reachable by id
        await coordinator.start(None, meta("m-4", distributed=False), "")  # evicts m-2, finished: forgotten
        assert [e[1] for e in await coordinator.dump()] == ["m-3", "m-4"]
        with pytest.raises(ExecutionError):
            coordinator.get("m-2")
        coordinator.local_finished("m-1", "done", [], [], STATS)
        await settle()  # the evicted execution is forgotten once its waiter ran
        assert "m-1" not in coordinator.executions

    run(scenario())


def test_find_gives_a_finished_view_of_a_registration_execution_kept_by_the_worker() -> None:
    node = FakeNode(worker=FakeWorker(registered_execution=lambda exec_id: ("done", ["r"], []) if exec_id == "k-1" else None))
    coordinator = Coordinator(node)  # type: ignore[arg-type]
    view = run(coordinator.find("k-1"))
    assert (view.status, view.results, view.registered, view.done.is_set()) == ("done", ["r"], True, True)
    with pytest.raises(ExecutionError, match="execution plan does not exist"):
        run(coordinator.find("k-2"))


def test_drop_needs_a_finished_execution_and_reaches_every_shard() -> None:
    node = FakeNode(shards=3)

    async def scenario() -> Coordinator:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        await coordinator.start(None, meta("d-1"), "")
        with pytest.raises(ExecutionError, match="can not drop a not yet finished execution, abort it first."):
            coordinator.drop("d-1")
        coordinator.local_finished("d-1", "done", [], [], STATS)
        coordinator.shard_done("d-1")
        coordinator.shard_done("d-1")
        coordinator.drop("d-1")
        return coordinator

    coordinator = run(scenario())
    assert coordinator.executions == {}
    assert node.peer(1).sent[-1] == node.peer(2).sent[-1] == ("drop", "d-1")


def test_a_peer_drop_forgets_a_prepared_execution_at_once() -> None:
    node = FakeNode(shards=2, index=1)
    coordinator = Coordinator(node)  # type: ignore[arg-type]
    run(coordinator.prepare("q-1", 0, meta("q-1"), None))
    coordinator.drop_quietly("q-1")
    coordinator.drop_quietly("never-seen")
    assert coordinator.executions == {}


def test_abort_tells_the_worker_and_the_peers_and_replaces_a_worker_that_ignores_it() -> None:
    node = FakeNode(shards=2, config={"AbortGracePeriodMS": 10})

    async def scenario() -> None:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        await coordinator.start(None, meta("a-1"), "")
        coordinator.abort("a-1")
        coordinator.abort("a-1")  # asked twice: one watcher only
        await settle()  # the abort watcher gave up on the worker
        coordinator.worker_lost("", "the worker was replaced")
        execution = coordinator.get("a-1")
        assert (execution.status, execution.errors) == ("aborted", [ABORTED_ERROR])
        assert coordinator.outcomes == {"aborted": 1}
        with pytest.raises(ExecutionError, match="execution does not exist"):
            coordinator.abort("nope")

    run(scenario())
    assert node.worker.sent == [("abort", "a-1"), ("abort", "a-1")]
    assert node.peer(1).sent[-2:] == [("abort", "a-1"), ("abort", "a-1")]
    assert node.worker.replaced == [
        "replaced because execution a-1 did not stop within AbortGracePeriodMS=10 of RG.ABORTEXECUTION"
    ]


def test_an_aborted_execution_that_stops_in_time_keeps_its_worker() -> None:
    node = FakeNode(config={"AbortGracePeriodMS": 5000})

    async def scenario() -> None:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        await coordinator.start(None, meta("a-2", distributed=False), "")
        coordinator.abort("a-2")
        coordinator.local_finished("a-2", "aborted", [], [], STATS)
        await settle()  # the abort watcher saw it stop
        assert coordinator.get("a-2").status == "aborted"

    run(scenario())
    assert node.worker.replaced == []


def test_a_lost_worker_ends_running_executions_with_its_reason() -> None:
    node = FakeNode(shards=2, index=1)

    async def scenario() -> Coordinator:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        await coordinator.prepare("p-1", 0, meta("p-1"), None)
        await coordinator.start(None, meta("i-1", distributed=False), "")
        coordinator.worker_lost("", "the worker process exited (signal 9)")
        return coordinator

    coordinator = run(scenario())
    participant, initiated = coordinator.get("p-1"), coordinator.get("i-1")
    assert participant.errors == initiated.errors == ["the worker process exited (signal 9)"]
    assert participant.status == initiated.status == "done"
    assert node.peer(0).sent == [("shard_done", "p-1")]
    assert initiated.results == [] and coordinator.outcomes == {"error": 1}


def test_plan_entry_shows_results_only_when_finished() -> None:
    execution = NodeExecution("e", 0, True, "async", STEPS, 1, results=["a", "b"], errors=["x"])
    running = execution.plan_entry("shard-0")[3]
    assert running[running.index("results") + 1] == -1 and running[running.index("errors") + 1] == []
    execution.status = "done"
    entry = execution.plan_entry("shard-0")
    assert entry[:2] == ["shard_id", "shard-0"]
    plan = entry[3]
    assert plan[plan.index("results") + 1] == 2 and plan[plan.index("errors") + 1] == ["x"]
    assert plan[plan.index("steps") + 1] == [["type", "MAP", "duration", 0, "name", "<lambda>", "arg", ""]]


def test_the_list_holds_the_newest_max_executions_of_batch_runs_and_kept_triggered_ones() -> None:
    """RG.DUMPEXECUTIONS merges the worker's kept triggered executions into the node's
    list by time and trims the whole to MaxExecutions, dropping the oldest wherever they are."""
    dropped: list[str] = []

    def kept() -> list[tuple[float, list[Any]]]:
        return [(when, ["executionId", exec_id, "status", "done", "registered", 1])
                for when, exec_id in ((1.0, "k-1"), (3.0, "k-3")) if exec_id not in dropped]

    node = FakeNode(config={"MaxExecutions": 3},
                    worker=FakeWorker(registered_executions=kept, drop_registered_execution=dropped.append))

    async def scenario() -> list[str]:
        coordinator = Coordinator(node)  # type: ignore[arg-type]
        for n, listed_at in ((2, 2.0), (4, 4.0)):
            await coordinator.start(None, meta(f"b-{n}", distributed=False), "")
            coordinator.get(f"b-{n}").listed_at = listed_at
            coordinator.local_finished(f"b-{n}", "done", [], [], STATS)
        first = [entry[1] for entry in await coordinator.dump()]
        node.config["MaxExecutions"] = 2
        second = [entry[1] for entry in await coordinator.dump()]
        with pytest.raises(ExecutionError):
            coordinator.get("b-2")
        return first + ["|"] + second

    assert run(scenario()) == ["b-2", "k-3", "b-4", "|", "k-3", "b-4"]
    assert dropped == ["k-1"]
