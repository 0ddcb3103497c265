"""A small synchronous RESP client for the local server node.

Used by worker processes (readers, ``execute()``). It depends only on ``hiredis`` and
the standard library, never on redis-py, so that user code may import whatever
``redis`` version its requirements pin.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import hiredis

from gears.wire.credentials import Credentials
from gears.errors import GearsError
from gears.wire.resp import encode_command

__all__ = [
    "ServerEndpoint", "ServerConnection", "ServerError", "ServerUnavailable", "ConnectionPerThread", "map_reply",
    "wait_until_reachable",
]


def map_reply(reply: Any) -> Any:
    """A reply as the Gears API returns it: bulk/status → ``str`` (``bytearray`` if not
    UTF-8), array → ``list`` (an error inside it → its text), integer and nil unchanged."""
    if isinstance(reply, bytes):
        try:
            return reply.decode()
        except UnicodeDecodeError:
            return bytearray(reply)
    if isinstance(reply, list):
        return [str(item) if isinstance(item, hiredis.ReplyError) else map_reply(item) for item in reply]
    return reply


class ServerError(GearsError):
    """An error reply from the server; ``str(err)`` is the server's text, which is also
    what a client gets when it ends a command."""


class ServerUnavailable(GearsError, ConnectionError):
    """The local server node cannot be reached (refused, reset, closed): an outage of the
    engine's connection, not a failure of the user's code. It is a ``ConnectionError``,
    so code that catches those keeps working."""


@dataclass(frozen=True)
class ServerEndpoint:
    """Where a server node (or a front door) listens and how to log in to it."""

    host: str
    port: int
    credentials: Credentials | None = None
    #: Speak TLS with this context (``None``: plain TCP).
    tls: ssl.SSLContext | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def connect(self, *, decode: bool = False, timeout: float | None = None) -> "ServerConnection":
        """A new connection, logged in (see :class:`ServerConnection`)."""
        return ServerConnection(
            self.host, self.port, credentials=self.credentials, timeout=timeout, decode=decode, tls=self.tls
        )


def wait_until_reachable(
    endpoint: ServerEndpoint,
    stopped: Callable[[], bool],
    *,
    first_delay: float = 0.05,
    max_delay: float = 1.0,
) -> "ServerConnection | None":
    """Reconnect to ``endpoint`` with exponential backoff (``first_delay`` doubling up to
    ``max_delay``); the open connection, or ``None`` once ``stopped()`` says to give up."""
    delay = first_delay
    while not stopped():
        try:
            conn = endpoint.connect(decode=True)
            conn.call("PING")
            return conn
        except ServerUnavailable:
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
        except ServerError:  # LOADING, or (a restarted server) the login not recreated yet
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
    return None


class ServerConnection:
    """One blocking connection. Not thread-safe: use one per thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        credentials: Credentials | None = None,
        timeout: float | None = None,
        decode: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``decode=True`` makes replies ``str`` (UTF-8, decoded in C; bytes that are not
        UTF-8 become surrogate escapes, which :func:`encode_command` turns back into the
        same bytes). ``tls``: speak TLS with this context (the host name is verified)."""
        #: Where it is connected and how it logged in (:meth:`ServerEndpoint.connect` opens another).
        self.endpoint = ServerEndpoint(host, port, credentials, tls)
        #: Set once an I/O error lost the connection (a :class:`ConnectionPerThread` then reopens it).
        self.broken = False
        try:
            sock = socket.create_connection(self.endpoint.address, timeout=timeout)
        except OSError as exc:
            raise ServerUnavailable(f"server node {host}:{port} unavailable: {exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = tls.wrap_socket(sock, server_hostname=host) if tls is not None else sock
        self._reader = hiredis.Reader(encoding="utf-8", errors="surrogateescape") if decode else hiredis.Reader()
        auth = credentials.auth_args() if credentials is not None else []
        if auth:
            self.call("AUTH", *auth)

    def close(self) -> None:
        """Close the socket."""
        try:
            self._sock.close()
        except OSError:
            pass

    def _read_reply(self) -> Any:
        reader = self._reader
        while True:
            reply = reader.gets()
            if reply is not False:
                return reply
            try:
                data = self._sock.recv(1 << 16)
            except OSError as exc:
                raise self._lost(exc) from None
            if not data:
                self.broken = True
                raise ServerUnavailable(f"server node {self.endpoint.host}:{self.endpoint.port} closed the connection")
            reader.feed(data)

    def _lost(self, exc: OSError) -> ServerUnavailable:
        self.broken = True
        return ServerUnavailable(f"server node {self.endpoint.host}:{self.endpoint.port} unavailable: {exc}")

    def _send(self, payload: bytes) -> None:
        try:
            self._sock.sendall(payload)
        except OSError as exc:
            raise self._lost(exc) from None

    def call_raw(self, *args: Any) -> Any:
        """Run one command; error replies come back as ``hiredis.ReplyError`` values."""
        self._send(encode_command(args))
        return self._read_reply()

    def send_payload(self, payload: bytes) -> None:
        """Send already encoded commands; read their replies with :meth:`read`."""
        self._send(payload)

    def send(self, *args: Any) -> None:
        """Send a command now; read its reply later with :meth:`read` (replies come in order)."""
        self._send(encode_command(args))

    def read(self) -> Any:
        """The reply to the oldest command sent with :meth:`send` (errors as values)."""
        return self._read_reply()

    def call(self, *args: Any) -> Any:
        """Run one command; an error reply raises :class:`ServerError`."""
        reply = self.call_raw(*args)
        if isinstance(reply, hiredis.ReplyError):
            raise ServerError(str(reply))
        return reply

    def pipeline(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send all commands at once, read all replies (errors as ``ReplyError`` values)."""
        if not commands:
            return []
        self._send(b"".join(encode_command(cmd) for cmd in commands))
        return [self._read_reply() for _ in commands]

    def scan(self, pattern: str | bytes, count: int = 1000) -> Iterable[list[Any]]:
        """Yield batches of key names matching ``pattern`` (SCAN on this node only)."""
        cursor = b"0"
        while True:
            cursor, keys = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            if keys:
                yield keys
            if cursor in (b"0", "0"):
                return


class ConnectionPerThread:
    """Lazily opens one :class:`ServerConnection` per thread to the same server."""

    def __init__(self, endpoint: ServerEndpoint, *, decode: bool = False) -> None:
        self.endpoint = endpoint
        self.decode = decode
        self._local = threading.local()

    def get(self) -> ServerConnection:
        """This thread's connection (opened on first use, reopened after a failure)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and conn.broken:
            conn.close()
            conn = None
        if conn is None:
            conn = self.endpoint.connect(decode=self.decode)
            self._local.conn = conn
        return conn

    def wait_reachable(self) -> None:
        """Block until the server node answers (backoff; see :func:`wait_until_reachable`);
        this thread's connection is reopened on its next use."""
        self.discard()
        conn = wait_until_reachable(self.endpoint, lambda: False)
        if conn is not None:
            conn.close()

    def discard(self) -> None:
        """Drop this thread's connection (after an I/O error)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
