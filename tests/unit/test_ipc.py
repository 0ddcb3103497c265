"""The node/worker channel (gears/wire/ipc.py) over a real socket pair: a handler that fails
on one message must not close the channel, on either end; frames split anywhere, calls
answered in any order, remote errors raised at the caller, unpicklable replies and a
vanished peer turned into clear errors."""

from __future__ import annotations

import asyncio
import pickle
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any

import pytest

from gears.errors import ExecutionError
from gears.wire.ipc import AsyncChannel, ChannelClosed, RemoteError, ThreadChannel, read_message


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


def frame(message: tuple[Any, ...]) -> bytes:
    """A frame as the protocol defines it: 4-byte big-endian length, pickled tuple."""
    payload = pickle.dumps(message)
    return struct.pack(">I", len(payload)) + payload


def serve_in_thread(channel: ThreadChannel, on_message: Callable[..., Any], on_call: Callable[..., Any]) -> threading.Thread:
    thread = threading.Thread(target=_serve_until_closed, args=(channel, on_message, on_call), daemon=True)
    thread.start()
    return thread


def test_read_message_takes_exactly_one_frame() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(frame(("hello", 1, b"x")) + frame(("next",)))
        assert read_message(right) == ("hello", 1, b"x")
        assert read_message(right) == ("next",)
        left.close()
        with pytest.raises(ChannelClosed):
            read_message(right)


def test_frames_split_at_every_byte_reach_the_worker_whole_and_in_order() -> None:
    node_sock, worker_sock = socket.socketpair()
    received: list[tuple[Any, ...]] = []
    done = threading.Event()

    def on_message(kind: str, *args: Any) -> None:
        received.append((kind, *args))
        if kind == "last":
            done.set()

    thread = serve_in_thread(ThreadChannel(worker_sock), on_message, lambda kind, *a: None)
    data = frame(("run", "exec-1", {"k": [1, 2]})) + frame(("abort", "exec-2")) + frame(("last",))
    for byte in range(len(data)):
        node_sock.sendall(data[byte : byte + 1])
    assert done.wait(10)
    assert received == [("run", "exec-1", {"k": [1, 2]}), ("abort", "exec-2"), ("last",)]
    node_sock.close()
    thread.join(10)


def test_node_calls_are_answered_with_values_and_errors() -> None:
    node_sock, worker_sock = socket.socketpair()

    def on_call(kind: str, *args: Any) -> Any:
        if kind == "fail":
            raise ExecutionError("execution plan does not exist")
        if kind == "unpicklable":
            return threading.Lock()
        return (kind, args)

    thread = serve_in_thread(ThreadChannel(worker_sock), lambda *a: None, on_call)

    async def scenario() -> list[Any]:
        reader, writer = await asyncio.open_unix_connection(sock=node_sock)
        channel = AsyncChannel(reader, writer)
        serving = asyncio.ensure_future(channel.serve(lambda *a: None, _no_calls))
        answers: list[Any] = list(await asyncio.gather(*(channel.call("echo", i, timeout=10) for i in range(5))))
        with pytest.raises(ExecutionError, match="execution plan does not exist"):
            await channel.call("fail", timeout=10)
        with pytest.raises(RemoteError, match="unpicklable reply to unpicklable"):
            await channel.call("unpicklable", timeout=10)
        channel.close()
        await asyncio.gather(serving, return_exceptions=True)
        return answers

    assert asyncio.run(scenario()) == [("echo", (i,)) for i in range(5)]
    thread.join(10)


def test_worker_calls_are_answered_by_the_node_coroutine() -> None:
    node_sock, worker_sock = socket.socketpair()
    worker = ThreadChannel(worker_sock)
    thread = serve_in_thread(worker, lambda *a: None, lambda *a: None)
    answers: list[Any] = []

    async def on_call(kind: str, *args: Any) -> Any:
        if kind == "missing":
            raise LookupError("no such shard")
        await asyncio.sleep(0)
        return sum(args)

    async def scenario() -> None:
        reader, writer = await asyncio.open_unix_connection(sock=node_sock)
        channel = AsyncChannel(reader, writer)
        serving = asyncio.ensure_future(channel.serve(lambda *a: None, on_call))
        loop = asyncio.get_running_loop()
        answers.append(await loop.run_in_executor(None, lambda: worker.call("add", 2, 3, timeout=10)))
        with pytest.raises(LookupError, match="no such shard"):
            await loop.run_in_executor(None, lambda: worker.call("missing", timeout=10))
        channel.close()
        await asyncio.gather(serving, return_exceptions=True)

    asyncio.run(scenario())
    assert answers == [5]
    thread.join(10)


def test_a_worker_call_without_an_answer_times_out_naming_it() -> None:
    node_sock, worker_sock = socket.socketpair()
    with node_sock, worker_sock:
        with pytest.raises(TimeoutError, match="no answer from the gears node to 'slow' within 0.05s"):
            ThreadChannel(worker_sock).call("slow", timeout=0.05)


def test_pending_node_calls_fail_when_the_worker_goes_away() -> None:
    node_sock, worker_sock = socket.socketpair()

    async def scenario() -> None:
        reader, writer = await asyncio.open_unix_connection(sock=node_sock)
        channel = AsyncChannel(reader, writer)
        serving = asyncio.ensure_future(channel.serve(lambda *a: None, _no_calls))
        pending = asyncio.ensure_future(channel.call("never-answered", timeout=10))
        await asyncio.sleep(0)  # the request is written
        worker_sock.close()
        with pytest.raises(ChannelClosed, match="the worker process exited"):
            await pending
        await serving
        assert channel.closed
        with pytest.raises(ChannelClosed, match="the worker process is gone"):
            channel.send("run", "x")
        writer.close()

    asyncio.run(scenario())


def test_what_runs_after_the_answer_waits_for_it_to_be_sent() -> None:
    """An action a request's handler puts off with ``after_answer`` runs on the same thread
    only once the answer is sent: here the action blocks until the node has the answer, so
    an action run first would hold the answer back and the call would time out. Off a
    request's thread the action runs at once."""
    node_sock, worker_sock = socket.socketpair()
    worker = ThreadChannel(worker_sock)
    answered = threading.Event()
    ran: list[str] = []

    def on_call(kind: str, *args: Any) -> Any:
        def action() -> None:
            ran.append("waiting for the answer to arrive")
            ran.append("after the answer" if answered.wait(10) else "before the answer")

        worker.after_answer(action)
        return "the id"

    thread = threading.Thread(target=_serve_until_closed, args=(worker, lambda *a: None, on_call), daemon=True)
    thread.start()

    async def scenario() -> Any:
        reader, writer = await asyncio.open_unix_connection(sock=node_sock)
        channel = AsyncChannel(reader, writer)
        serving = asyncio.ensure_future(channel.serve(lambda *a: None, _no_calls))
        answer = await channel.call("start", timeout=5)
        answered.set()
        channel.close()
        await asyncio.gather(serving, return_exceptions=True)
        return answer

    assert asyncio.run(scenario()) == "the id"
    thread.join(10)
    assert _wait(lambda: len(ran) == 2) and ran[1] == "after the answer", ran
    direct: list[str] = []
    worker.after_answer(lambda: direct.append("at once"))
    assert direct == ["at once"]


def _wait(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = threading.Event()
    for _ in range(int(seconds * 100)):
        if condition():
            return True
        deadline.wait(0.01)
    return condition()


async def _no_calls(kind: str, *args: Any) -> Any:
    raise AssertionError(f"unexpected call {kind}")


def _serve_until_closed(channel: ThreadChannel, on_message: Any, on_call: Any) -> None:
    try:
        channel.serve(on_message, on_call)
    except (ChannelClosed, OSError):
        pass
