"""Messages between a gears node and its worker process over a Unix socket pair.

A frame is a 4-byte big-endian length and a pickled tuple ``(kind, *args)``.
Requests that want an answer are ``("call", call_id, kind, args)`` and are answered
with ``("reply", call_id, ok, value)``; everything else is one-way.

:class:`ThreadChannel` is the worker's side (blocking, thread-safe sends);
:class:`AsyncChannel` is the node's side (asyncio).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import pickle
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

__all__ = ["ThreadChannel", "AsyncChannel", "ChannelClosed", "RemoteError", "read_message"]

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
#: Requests from the node served at once by a worker (a blocked request holds one thread).
CALL_THREADS = 256
_PROTOCOL = pickle.HIGHEST_PROTOCOL


class ChannelClosed(ConnectionError):
    """The other side went away."""


class RemoteError(Exception):
    """A call failed on the other side; ``args[0]`` is the error (usually a GearsError)."""


def _frame(message: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(message, protocol=_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ChannelClosed("the node closed the channel")
        data += chunk
    return bytes(data)


def read_message(sock: socket.socket) -> tuple[Any, ...]:
    """Read exactly one frame (blocking) before a :class:`ThreadChannel` takes the socket over:
    the first message a node sends its new worker."""
    (size,) = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    message = pickle.loads(_recv_exactly(sock, size))
    if not isinstance(message, tuple):
        raise TypeError(f"expected a message tuple from the node, got {type(message).__name__}")
    return message


def _outcome(handler: Callable[..., Any], kind: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
    try:
        return True, handler(kind, *args)
    except Exception as exc:  # noqa: BLE001 - shipped back to the caller
        return False, exc


def _pass_on(handle_message: Callable[..., None], kind: str, args: tuple[Any, ...]) -> None:
    """Pass one one-way message to its handler. A handler's failure is logged and the
    channel stays open: one message that cannot be acted on must not cut a node off its
    worker (its executions would then wait for nothing)."""
    try:
        handle_message(kind, *args)
    except Exception:  # noqa: BLE001 - logged with its traceback
        log.exception("no action was taken on a %r message", kind)


class ThreadChannel:
    """Blocking channel end for the worker process."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, list[Any]] = {}
        self._pending_lock = threading.Lock()
        # Requests may block (a script, a model run): each gets a pool thread.
        self._calls = ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="call")
        #: Per pool thread: what to run once the answer to the request it serves is sent.
        self._after_answer = threading.local()

    def send(self, kind: str, *args: Any) -> None:
        """Send a one-way message."""
        data = _frame((kind, *args))
        with self._send_lock:
            self._sock.sendall(data)

    def call(self, kind: str, *args: Any, timeout: float | None = None) -> Any:
        """Send a request and wait for its answer; a remote failure raises it here."""
        call_id = next(self._ids)
        slot: list[Any] = [threading.Event(), None, None]
        with self._pending_lock:
            self._pending[call_id] = slot
        self.send("call", call_id, kind, args)
        if not slot[0].wait(timeout):
            with self._pending_lock:
                self._pending.pop(call_id, None)
            raise TimeoutError(f"no answer from the gears node to {kind!r} within {timeout}s")
        ok, value = slot[1], slot[2]
        if not ok:
            raise value
        return value

    def after_answer(self, action: Callable[[], None]) -> None:
        """Run ``action`` on this thread once the answer to the request it is serving has
        been sent (at once on a thread serving none). For what must not start before the
        node has its answer: an execution whose user code may hold the GIL in C for
        minutes would otherwise keep the answer (its id) from being sent."""
        actions = getattr(self._after_answer, "actions", None)
        if actions is None:
            action()
        else:
            actions.append(action)

    def serve(
        self,
        handle_message: Callable[..., None],
        handle_call: Callable[..., Any],
        start_call: Callable[[str, tuple[Any, ...], Callable[[bool, Any], None]], bool] | None = None,
    ) -> None:
        """Read frames until the socket closes.

        One-way messages go to ``handle_message(kind, *args)``; requests go to
        ``handle_call(kind, *args)`` on a pool thread (they may block) and are answered.
        ``start_call(kind, args, answer)``, when given, sees each request first, on this
        reading thread: it returns True when it has taken the request and will call
        ``answer(ok, value)`` itself, from any thread (it must not block for long).
        """
        buffer = bytearray()
        while True:
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise ChannelClosed("the gears node closed the channel")
            buffer += chunk
            while len(buffer) >= 4:
                (size,) = _HEADER.unpack_from(buffer)
                if len(buffer) < 4 + size:
                    break
                message = pickle.loads(bytes(buffer[4 : 4 + size]))
                del buffer[: 4 + size]
                self._dispatch(message, handle_message, handle_call, start_call)

    def _dispatch(
        self,
        message: tuple[Any, ...],
        handle_message: Callable[..., None],
        handle_call: Callable[..., Any],
        start_call: Callable[[str, tuple[Any, ...], Callable[[bool, Any], None]], bool] | None,
    ) -> None:
        kind = message[0]
        if kind == "reply":
            _, call_id, ok, value = message
            with self._pending_lock:
                slot = self._pending.pop(call_id, None)
            if slot is not None:
                slot[1], slot[2] = ok, value
                slot[0].set()
        elif kind == "call":
            _, call_id, name, args = message
            if start_call is not None and start_call(name, args, functools.partial(self._answer, call_id, name)):
                return
            self._calls.submit(self._serve_call, call_id, name, args, handle_call)
        else:
            _pass_on(handle_message, kind, message[1:])

    def _serve_call(self, call_id: int, name: str, args: tuple[Any, ...], handle_call: Callable[..., Any]) -> None:
        actions: list[Callable[[], None]] = []
        self._after_answer.actions = actions
        try:
            self._answer(call_id, name, *_outcome(handle_call, name, args))
        finally:
            self._after_answer.actions = None
            for action in actions:
                action()

    def _answer(self, call_id: int, name: str, ok: bool, value: Any) -> None:
        try:
            self.send("reply", call_id, ok, value)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            self.send("reply", call_id, False, RemoteError(f"unpicklable reply to {name}: {exc}"))


class AsyncChannel:
    """Asyncio channel end for the gears node."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.closed = False

    def send(self, kind: str, *args: Any) -> None:
        """Queue a one-way message (non-blocking; order is kept)."""
        if self.closed:
            raise ChannelClosed("the worker process is gone")
        self._writer.write(_frame((kind, *args)))

    async def call(self, kind: str, *args: Any, timeout: float | None = None) -> Any:
        """Ask the worker and wait for the answer; a remote failure raises it here."""
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        try:
            self.send("call", call_id, kind, args)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(call_id, None)

    async def serve(self, handle_message: Callable[..., None], handle_call: Callable[..., Any]) -> None:
        """Read frames until the worker goes away; then fail every pending call.

        ``handle_message(kind, *args)`` must not block; ``handle_call`` is a coroutine
        function whose result answers the worker's request.
        """
        try:
            while True:
                header = await self._reader.readexactly(4)
                (size,) = _HEADER.unpack(header)
                message = pickle.loads(await self._reader.readexactly(size))
                kind = message[0]
                if kind == "reply":
                    _, call_id, ok, value = message
                    future = self._pending.get(call_id)
                    if future is not None and not future.done():
                        if ok:
                            future.set_result(value)
                        else:
                            future.set_exception(value if isinstance(value, BaseException) else RemoteError(value))
                elif kind == "call":
                    _, call_id, name, args = message
                    asyncio.ensure_future(self._serve_call(call_id, name, args, handle_call))
                else:
                    _pass_on(handle_message, kind, message[1:])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed = True
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelClosed("the worker process exited"))

    async def _serve_call(self, call_id: int, name: str, args: tuple[Any, ...], handle_call: Callable[..., Any]) -> None:
        try:
            value, ok = await handle_call(name, *args), True
        except Exception as exc:  # noqa: BLE001 - shipped back to the worker
            value, ok = exc, False
        if not self.closed:
            self.send("reply", call_id, ok, value)

    def close(self) -> None:
        """Close the socket."""
        self.closed = True
        self._writer.close()
