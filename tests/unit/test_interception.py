"""Registrations acting on front-door commands (gears/node/interception.py), on a fake node:
the command table, which commands are intercepted, hook order and key prefixes,
read-through on a missing key, and sync writes waiting for the worker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from unit.fakes import FakeNode, FakeWorker, run

from gears.errors import CommandError
from gears.node.interception import CommandTable, RegistrationInterceptor

#: A piece of redis-py's parsed ``COMMAND`` reply.
COMMANDS = {
    b"get": {"flags": [b"readonly", b"fast"], "first_key_pos": 1},
    "set": {"flags": ["write", "denyoom"], "first_key_pos": 1},
    "ping": {"flags": ["fast"], "first_key_pos": 0},
    "hset": {"flags": ["write"], "first_key_pos": 1},
}


def hook(reg_id: str, command: str, keyprefix: str | None = None) -> dict[str, Any]:
    return {"id": reg_id, "reader": "CommandReader", "hook": command, "keyprefix": keyprefix}


def read_through(reg_id: str, prefix: str, commands: list[str], event_types: list[str] | None = None) -> dict[str, Any]:
    return {"id": reg_id, "reader": "KeysReader", "commands": commands, "prefix": prefix, "eventTypes": event_types, "mode": "async"}


def interceptor(metas: list[dict[str, Any]], worker: FakeWorker | None = None) -> tuple[RegistrationInterceptor, FakeNode]:
    node = FakeNode(worker=worker)
    node.command_table = CommandTable(COMMANDS)
    intercepting = RegistrationInterceptor(node)  # type: ignore[arg-type]
    intercepting.refresh(metas, node.command_table)
    return intercepting, node


def client(in_transaction: bool = False) -> Any:
    calls: list[tuple[str, ...]] = []

    async def call_server(*args: str) -> Any:
        calls.append(args)
        return "from-server"

    return SimpleNamespace(in_transaction=in_transaction, call_server=call_server, calls=calls)


def test_the_command_table_knows_writes_and_first_keys() -> None:
    table = CommandTable(COMMANDS)
    assert table.writes == {"SET", "HSET"}
    assert table.key_of([b"get", b"k"]) == b"k"
    assert table.key_of([b"PING"]) is None
    assert table.key_of([b"SET"]) is None  # too short to have its key
    assert table.key_of([b"NOSUCH", b"x"]) is None


def test_refresh_intercepts_hooked_and_read_through_commands_and_writes_when_sync() -> None:
    intercepting, node = interceptor([hook("0-1", "hset"), read_through("0-2", "user:*", ["get"])])
    assert intercepting.commands == {"HSET", "GET"}
    sync = {"id": "0-3", "reader": "KeysReader", "mode": "sync"}
    intercepting.refresh([sync], node.command_table)
    assert intercepting.commands == {"SET", "HSET"}
    intercepting.refresh([sync], None)
    assert intercepting.commands == frozenset()


def test_the_last_registered_hook_whose_prefix_matches_runs() -> None:
    worker = FakeWorker(hook=lambda reg_id, argv, context: ([f"{reg_id}:{argv}"], []))
    intercepting, node = interceptor(
        [hook("0-1", "set"), hook("0-2", "set", keyprefix="user:"), hook("0-3", "set", keyprefix="item:")], worker
    )
    assert run(intercepting.before(client(), [b"SET", b"user:1", b"v"])) == "0-2:['SET', 'user:1', 'v']"
    assert run(intercepting.before(client(), [b"set", b"other", b"v"])) == "0-1:['set', 'other', 'v']"


def test_no_matching_hook_forwards_and_another_shards_key_is_left_to_the_server() -> None:
    intercepting, node = interceptor([hook("0-1", "set", keyprefix="user:")])
    assert run(intercepting.before(client(), [b"SET", b"item:1", b"v"])) is None
    node.local_keys = lambda key: False
    assert run(intercepting.before(client(), [b"SET", b"user:1", b"v"])) is None
    assert node.worker.calls == []


@pytest.mark.parametrize(
    "answer, message",
    [((["a", "b"], []), "Command hook must return exactly one result"), (([], ["boom"]), "boom")],
)
def test_a_hook_must_reply_exactly_once(answer: tuple[list[Any], list[str]], message: str) -> None:
    intercepting, _ = interceptor([hook("0-1", "set")], FakeWorker(hook=answer))
    with pytest.raises(CommandError) as raised:
        run(intercepting.before(client(), [b"SET", b"k", b"v"]))
    assert str(raised.value) == message


def test_call_next_runs_on_the_hooked_clients_connection_while_the_hook_runs() -> None:
    seen: list[Any] = []
    caller = client()

    async def scenario() -> Any:
        intercepting, node = interceptor([hook("0-1", "set")])

        async def on_hook(kind: str, reg_id: str, argv: list[str], context_id: int) -> Any:
            seen.append(await intercepting.call_next(context_id, ["SET", "k", "changed"]))
            return ["hooked"], []

        node.worker.call = on_hook  # type: ignore[method-assign]
        reply = await intercepting.before(caller, [b"SET", b"k", b"v"])
        with pytest.raises(CommandError, match="Can not get CommandHook ctx"):
            await intercepting.call_next(1, ["GET", "k"])  # that hook is over
        return reply

    assert run(scenario()) == "hooked"
    assert seen == ["from-server"] and caller.calls == [("SET", "k", "changed")]


def test_read_through_runs_on_a_missing_key_and_its_override_is_the_reply() -> None:
    worker = FakeWorker(command_event=lambda reg_id, key, event, argv: f"loaded {key}" if reg_id == "0-2" else None)
    intercepting, node = interceptor(
        [read_through("0-1", "user:*", ["GET"]), read_through("0-2", "user:1", ["GET"], ["keymiss"]),
         read_through("0-3", "user:*", ["GET"], ["set"])],
        worker,
    )
    assert run(intercepting.before(client(), [b"GET", b"user:1"])) == "loaded user:1"
    assert [c[:2] for c in worker.calls] == [("command_event", "0-1"), ("command_event", "0-2")]
    assert worker.calls[0][2:] == ("user:1", "keymiss", ["GET", "user:1"])


def test_read_through_leaves_existing_keys_transactions_and_other_prefixes_alone() -> None:
    worker = FakeWorker(command_event="never")
    intercepting, node = interceptor([read_through("0-1", "user:*", ["GET"])], worker)
    node.server.hashes["user:1"] = {}
    assert run(intercepting.before(client(), [b"GET", b"user:1"])) is None  # exists
    assert run(intercepting.before(client(), [b"GET", b"item:1"])) is None  # prefix
    assert run(intercepting.before(client(in_transaction=True), [b"GET", b"user:2"])) is None  # queued in MULTI
    assert worker.calls == []
    assert run(intercepting.before(client(), [b"GET", b"user:2"])) == "never"


def test_a_sync_registration_holds_write_replies_until_the_worker_caught_up() -> None:
    intercepting, node = interceptor([{"id": "0-1", "reader": "KeysReader", "mode": "sync"}], FakeWorker(barrier=True))
    assert run(intercepting.after(client(), [b"SET", b"k", b"v"], b"+OK\r\n")) is None
    assert run(intercepting.after(client(), [b"GET", b"k"], b"$1\r\nv\r\n")) is None
    assert node.worker.calls == [("barrier",)]
