"""The registrations of a shard inside its worker (gears/worker/registrations/registry.py), for
``CommandReader`` registrations (no server is touched: KeysReader and StreamReader
registrations start listeners and consumers on the server node, so they are covered by
tests/test_registrations.py on live clusters). Sessions apply all-or-nothing, trigger and
hook clashes get RedisGears' texts, unregistering empties sessions, kept executions."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import cloudpickle
import pytest

from gears.engine.builder import GB
from gears.engine.records import GearsScriptError
from gears.engine.registration import Registration
from gears.wire.serverconn import ServerEndpoint
from gears.engine.testing import register_flow
from gears.worker.context import thread_context
from gears.worker.registrations.registry import Registry
from gears.worker.registrations.triggered import TriggeredExecution


def registration(reg_id: str, **options: Any) -> Registration:
    made = register_flow(lambda: GB("CommandReader").map(lambda args: args[1:]).register(**options))
    return dataclasses.replace(made, id=reg_id)


def session(session_id: str, *registrations: Registration, removed: list[str] | None = None) -> dict[str, Any]:
    return {"id": session_id, "blob": cloudpickle.dumps(list(registrations)), "description": f"{session_id} desc",
            "removed": removed or [], "user": None}


def registry() -> Registry:
    process = SimpleNamespace(config={"MaxExecutionsPerRegistration": 2}, shard_map=SimpleNamespace(my_id="shard-a"))
    # the endpoint is never connected to: CommandReader registrations need no server
    return Registry(process, ServerEndpoint("127.0.0.1", 1))  # type: ignore[arg-type]


def test_apply_installs_the_active_registrations_and_returns_their_metas() -> None:
    shard = registry()
    metas = shard.apply(session("s1", registration("0-1", trigger="t1"), registration("0-2", trigger="t2"), removed=["0-2"]), None)
    assert [(m["id"], m["reader"], m["trigger"]) for m in metas] == [("0-1", "CommandReader", "t1")]
    assert list(shard.registrations) == ["0-1"] and shard.registrations["0-1"].session_id == "s1"
    assert shard.sessions["s1"]["registrations"] == ["0-1"]
    assert shard.history["0-1"].maxlen == 2


#: The sessions ``note_session`` saw (a module-level function: pickled by reference).
SEEN_SESSIONS: list[str] = []


def note_session() -> None:
    SEEN_SESSIONS.append(thread_context.session.id)


def test_on_registered_runs_inside_its_session() -> None:
    SEEN_SESSIONS.clear()
    shard = registry()
    shard.apply(session("s1", registration("0-1", trigger="t", onRegistered=note_session)), None)
    assert SEEN_SESSIONS == ["s1"] and thread_context.session is None


def test_a_trigger_name_belongs_to_one_session_unless_it_is_replaced() -> None:
    shard = registry()
    shard.apply(session("s1", registration("0-1", trigger="t")), None)
    with pytest.raises(GearsScriptError, match="^trigger already registered$"):
        shard.apply(session("s2", registration("0-2", trigger="t")), None)
    assert list(shard.sessions) == ["s1"]  # all or nothing
    shard.apply(session("s2", registration("0-3", trigger="t")), "s1")
    assert list(shard.sessions) == ["s2"] and list(shard.registrations) == ["0-3"]
    shard.apply(session("s2", registration("0-4", trigger="t")), None)  # an upgrade of the same session
    assert list(shard.registrations) == ["0-4"]


@pytest.mark.parametrize(
    "first_mode, message",
    [("async", "Can not override a none sync registration"), ("sync", None)],
)
def test_hooks_stack_only_over_sync_hooks_of_other_sessions(first_mode: str, message: str | None) -> None:
    shard = registry()
    shard.apply(session("s1", registration("0-1", hook="set", mode=first_mode)), None)
    newer = session("s2", registration("0-2", hook="set", mode="sync"))
    if message is None:
        shard.apply(newer, None)
        assert sorted(shard.registrations) == ["0-1", "0-2"]
    else:
        with pytest.raises(GearsScriptError, match=f"^{message}$"):
            shard.apply(newer, None)


def test_one_session_cannot_hook_a_command_twice() -> None:
    with pytest.raises(GearsScriptError, match="^Can not override a command which already created on this session$"):
        registry().apply(session("s1", registration("0-1", hook="get"), registration("0-2", hook="get")), None)


def test_unregister_reports_what_is_left_and_forgets_an_empty_session() -> None:
    shard = registry()
    shard.apply(session("s1", registration("0-1", trigger="a"), registration("0-2", trigger="b")), None)
    assert shard.unregister("0-1", False) == {"session": "s1", "left": ["0-2"]}
    assert shard.unregister("0-1", False) is None
    assert shard.unregister("0-2", True) == {"session": "s1", "left": []}
    assert shard.sessions == {} and shard.registrations == {}


def test_pause_and_trigger_errors_name_what_is_wrong() -> None:
    shard = registry()
    shard.apply(session("s1", registration("0-1", trigger="a")), None)
    with pytest.raises(GearsScriptError, match="^Execution 9-9 does not exists on shard shard-a$"):
        shard.pause("9-9", True)
    with pytest.raises(GearsScriptError, match="^Reader CommandReader does not support unpause$"):
        shard.pause("0-1", False)
    with pytest.raises(GearsScriptError, match="^subcommand not found$"):
        shard.trigger("nope", [])


def test_kept_executions_are_listed_fetched_and_dropped() -> None:
    shard = registry()
    shard.apply(session("s1", registration("0-1", trigger="a")), None)
    done = TriggeredExecution("e-1")
    done.status, done.results, done.errors = "done", ["r"], ["x"]
    shard.history["0-1"].append(done)
    assert shard.executions() == [(done.created, ["executionId", "e-1", "status", "done", "registered", 1])]
    assert shard.execution("e-1") == ("done", ["r"], ["x"])
    assert shard.drop_execution("e-1") is True and shard.drop_execution("e-1") is False
    assert shard.execution("e-1") is None and shard.executions() == []


def test_dump_lists_each_registration_with_its_session() -> None:
    shard = registry()
    shard.apply(session("s1", registration("0-1", trigger="a")), None)
    (entry,) = shard.dump()
    assert entry[:4] == ["id", "0-1", "reader", "CommandReader"]
    assert "s1 desc" in repr(entry)


def test_kept_executions_beyond_max_executions_leave_oldest_first_across_registrations() -> None:
    shard = registry()
    shard._process.config["MaxExecutions"] = 3  # type: ignore[attr-defined]
    shard.apply(session("s1", registration("0-1", trigger="a"), registration("0-2", trigger="b")), None)
    kept = []
    for n, reg_id in enumerate(["0-1", "0-2", "0-1", "0-2"]):
        outcome = TriggeredExecution(f"e-{n}")
        outcome.created = 1000.0 + n
        shard._keep(reg_id, outcome)
        kept.append(outcome)
    assert [entry[1] for _, entry in shard.executions()] == ["e-2", "e-1", "e-3"]  # per registration, e-0 left
    assert shard.execution("e-0") is None and shard.execution("e-3") is not None
