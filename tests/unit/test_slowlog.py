"""The node's own slow log (gears/node/slowlog.py): the server's rules (threshold, length,
argument cutting), merging with the server's entries, configuration re-reads."""

from __future__ import annotations

import asyncio
from typing import Any

from gears.node.slowlog import MAX_ARG_BYTES, MAX_ARGS, NODE_ID_BASE, SlowEntry, SlowLog, merge_entries, trim_arguments


class ServerConfig:
    """``CONFIG GET slowlog-*`` answers, counted."""

    def __init__(self, slower_than: int = 100, max_len: int = 3) -> None:
        self.values: dict[Any, Any] = {b"slowlog-log-slower-than": str(slower_than).encode(), "slowlog-max-len": str(max_len)}
        self.reads = 0

    async def __call__(self) -> dict[Any, Any]:
        self.reads += 1
        return self.values


async def named() -> str:
    return "client-a"


def test_arguments_are_cut_like_the_server_cuts_them() -> None:
    long = b"x" * (MAX_ARG_BYTES + 5)
    assert trim_arguments([b"SET", long]) == (b"SET", b"x" * MAX_ARG_BYTES + b"... (5 more bytes)")
    many = [b"%d" % i for i in range(40)]
    trimmed = trim_arguments(many)
    assert len(trimmed) == MAX_ARGS and trimmed[-1] == b"... (9 more arguments)" and trimmed[:-1] == tuple(many[:31])
    assert trim_arguments([b"a"] * MAX_ARGS) == (b"a",) * MAX_ARGS


def test_only_slow_commands_are_kept_up_to_the_max_length() -> None:
    config = ServerConfig(slower_than=100, max_len=2)

    async def scenario() -> SlowLog:
        log = SlowLog(config)
        assert await log.record([b"RG.PYEXECUTE", b"x"], 99, "1.2.3.4:5", named) is False
        for i in range(3):
            assert await log.record([b"AI.MODELEXECUTE", b"%d" % i], 100 + i, "1.2.3.4:5", named) is True
        return log

    log = asyncio.run(scenario())
    entries = asyncio.run(log.entries())
    assert [e.arguments[1] for e in entries] == [b"1", b"2"] and log.max_len == 2
    assert [e.id for e in entries] == [NODE_ID_BASE + 1, NODE_ID_BASE + 2]
    assert entries[0].reply()[2:] == [101, [b"AI.MODELEXECUTE", b"1"], "1.2.3.4:5", "client-a"]
    assert config.reads == 1  # read once, used while fresh
    log.reset()
    assert asyncio.run(log.entries()) == []


def test_a_negative_threshold_or_zero_length_logs_nothing_and_config_changes_are_read_again() -> None:
    config = ServerConfig(slower_than=-1)

    async def scenario() -> list[bool]:
        log = SlowLog(config)
        outcomes = [await log.record([b"RG.X"], 10**9, "a", named)]
        config.values[b"slowlog-log-slower-than"] = b"0"
        outcomes.append(await log.record([b"RG.X"], 0, "a", named))  # the old value is still fresh
        log.config_changed()
        outcomes.append(await log.record([b"RG.X"], 0, "a", named))
        config.values["slowlog-max-len"] = "0"
        log.config_changed()
        outcomes.append(await log.record([b"RG.X"], 5, "a", named))
        return outcomes

    assert asyncio.run(scenario()) == [False, False, True, False]
    assert config.reads == 3


def test_merged_entries_are_newest_first_and_a_node_entry_is_newer_than_a_server_one_of_its_second() -> None:
    server = [[5, 200, 10, [b"GET"], "", ""], [4, 100, 10, [b"SET"], "", ""]]  # newest first, as the server answers
    node = [SlowEntry(NODE_ID_BASE, 100, 50, (b"RG.A",), "", ""), SlowEntry(NODE_ID_BASE + 1, 300, 50, (b"RG.B",), "", "")]
    merged = merge_entries(server, node, -1)
    assert [e[0] for e in merged] == [NODE_ID_BASE + 1, 5, NODE_ID_BASE, 4]
    assert [e[0] for e in merge_entries(server, node, 2)] == [NODE_ID_BASE + 1, 5]
    assert merge_entries([], [], 10) == []
