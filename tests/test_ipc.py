"""The node/worker channel (no servers): a handler that fails on one message must not
close the channel, on either end."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import pytest

from gears.ipc import AsyncChannel, ChannelClosed, ThreadChannel


def test_a_failing_message_handler_leaves_the_node_end_open(caplog: pytest.LogCaptureFixture) -> None:
    node_sock, worker_sock = socket.socketpair()
    worker = ThreadChannel(worker_sock)
    threading.Thread(
        target=lambda: _serve_until_closed(worker, lambda kind, *args: None, lambda kind, *args: ("pong", args)),
        daemon=True,
    ).start()
    seen: list[tuple[str, tuple[Any, ...]]] = []

    def on_message(kind: str, *args: Any) -> None:
        if kind == "send":
            raise LookupError("no gears node is known for shard 0 yet")
        seen.append((kind, args))

    async def scenario() -> Any:
        reader, writer = await asyncio.open_unix_connection(sock=node_sock)
        channel = AsyncChannel(reader, writer)
        serving = asyncio.ensure_future(channel.serve(on_message, _no_calls))
        worker.send("send", "exec-1", 0)
        worker.send("finished", "exec-1")
        answer = await channel.call("ping", 1, timeout=10)
        closed_while_serving = channel.closed
        channel.close()
        await asyncio.gather(serving, return_exceptions=True)
        return answer, closed_while_serving

    answer, closed_while_serving = asyncio.run(scenario())
    assert closed_while_serving is False
    assert answer == ("pong", (1,))
    assert seen == [("finished", ("exec-1",))]
    assert "no action was taken on a 'send' message" in caplog.text


def test_a_failing_message_handler_leaves_the_worker_end_open() -> None:
    node_sock, worker_sock = socket.socketpair()
    worker = ThreadChannel(worker_sock)
    handled: list[str] = []

    def on_message(kind: str, *args: Any) -> None:
        if kind == "bad":
            raise ValueError("cannot act on this")
        handled.append(kind)

    thread = threading.Thread(target=_serve_until_closed, args=(worker, on_message, lambda kind, *a: kind), daemon=True)
    thread.start()

    async def scenario() -> Any:
        reader, writer = await asyncio.open_unix_connection(sock=node_sock)
        channel = AsyncChannel(reader, writer)
        serving = asyncio.ensure_future(channel.serve(lambda *a: None, _no_calls))
        channel.send("bad")
        channel.send("good")
        answer = await channel.call("still-there", timeout=10)
        channel.close()
        await asyncio.gather(serving, return_exceptions=True)
        return answer

    assert asyncio.run(scenario()) == "still-there"
    thread.join(10)
    assert handled == ["good"]


async def _no_calls(kind: str, *args: Any) -> Any:
    raise AssertionError(f"unexpected call {kind}")


def _serve_until_closed(channel: ThreadChannel, on_message: Any, on_call: Any) -> None:
    try:
        channel.serve(on_message, on_call)
    except (ChannelClosed, OSError):
        pass
