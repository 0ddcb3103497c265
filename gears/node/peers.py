"""Node-to-node messages: where a record crosses shards.

Every gears node keeps one connection to each peer's front door and sends
``RG.INNERMSG <kind> <pickled header> [<blob>]`` commands on it. Messages to one peer
go out in the order they were sent, and the peer handles them in that order, so a
batch of records always arrives before the ``done`` marker that follows it.

A message is answered by the command's reply: ``+OK`` for one-way messages, a value
for calls. Payload blobs (pickled records, plans) are forwarded untouched; the nodes
never unpickle records.

Trust: headers are pickles, so a link first proves, in both directions, that both
nodes hold the deployment's peer secret (:mod:`gears.wire.peerauth`); a front door
accepts ``RG.INNERMSG`` only on a connection that passed that handshake. The link
never authenticates with the server, so the server's password is not needed (nor
sent) to talk to peers.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import ssl
from collections import deque
from typing import Any

import hiredis

from gears.wire.peerauth import PeerAuthError, PeerSecret
from gears.errors import GearsError, NodeUnavailable
from gears.wire.resp import encode_command

__all__ = ["PeerLink", "INNER_COMMAND", "HELLO_COMMAND", "AUTH_COMMAND", "encode_message"]

log = logging.getLogger(__name__)

INNER_COMMAND = "RG.INNERMSG"
#: The handshake commands (see :mod:`gears.wire.peerauth`).
HELLO_COMMAND = "RG.PEERHELLO"
AUTH_COMMAND = "RG.PEERAUTH"
CONNECT_TIMEOUT = 5.0


def encode_message(kind: str, header: Any, blob: bytes | None) -> bytes:
    """The RESP command carrying one message."""
    parts: list[Any] = [INNER_COMMAND, kind, pickle.dumps(header, protocol=pickle.HIGHEST_PROTOCOL)]
    if blob is not None:
        parts.append(blob)
    return encode_command(parts)


class PeerLink:
    """An ordered message connection to one peer gears node."""

    def __init__(self, address: tuple[str, int], secret: PeerSecret, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: dial the peer's front door over TLS with this context."""
        self.address = address
        self._secret = secret
        self._tls = tls
        self._writer: asyncio.StreamWriter | None = None
        self._replies: deque[asyncio.Future[Any] | None] = deque()
        self._backlog: list[tuple[bytes, asyncio.Future[Any] | None]] = []
        self._connecting: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self.peer_run_id: str | None = None

    def send(self, kind: str, header: Any, blob: bytes | None = None) -> None:
        """Send a one-way message (in order; failures are logged)."""
        self._submit(encode_message(kind, header, blob), None)

    async def call(self, kind: str, header: Any, blob: bytes | None = None, timeout: float = 30.0) -> Any:
        """Send a message and wait for the peer's answer (an error reply raises)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(encode_message(kind, header, blob), future)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise NodeUnavailable(f"gears node {self.address[0]}:{self.address[1]} did not answer {kind} in {timeout:.0f}s") from None

    def _submit(self, frame: bytes, future: asyncio.Future[Any] | None) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._replies.append(future)
            self._writer.write(frame)
            return
        self._backlog.append((frame, future))
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*self.address, ssl=self._tls), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            self._fail_backlog(NodeUnavailable(f"gears node {self.address[0]}:{self.address[1]} unreachable: {exc}"))
            return
        parser = hiredis.Reader()
        try:
            await asyncio.wait_for(self._handshake(reader, writer, parser), CONNECT_TIMEOUT)
        except (OSError, EOFError, asyncio.TimeoutError, PeerAuthError, hiredis.ProtocolError) as exc:
            writer.close()
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.error("gears node %s:%d failed the peer handshake: %s", *self.address, reason)
            self._fail_backlog(NodeUnavailable(f"gears node {self.address[0]}:{self.address[1]} failed the peer handshake ({reason})"))
            return
        self._writer = writer
        self._reader_task = asyncio.ensure_future(self._read(reader, parser))
        backlog, self._backlog = self._backlog, []
        for frame, future in backlog:
            self._replies.append(future)
            writer.write(frame)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, parser: hiredis.Reader) -> None:
        """Prove to the peer, and have it prove to us, that both hold the peer secret."""
        address = "%s:%d" % self.address
        caller_nonce = PeerSecret.nonce()
        writer.write(encode_command([HELLO_COMMAND, caller_nonce]))
        reply = await _read_reply(reader, parser)
        if not (isinstance(reply, list) and len(reply) == 2 and all(isinstance(x, bytes) for x in reply)):
            raise PeerAuthError(f"unexpected answer to {HELLO_COMMAND}: {reply!r:.200}")
        peer_nonce, proof = reply
        self._secret.check(b"peer", caller_nonce, peer_nonce, address, proof)
        writer.write(encode_command([AUTH_COMMAND, self._secret.proof(b"caller", caller_nonce, peer_nonce, address)]))
        reply = await _read_reply(reader, parser)
        if isinstance(reply, hiredis.ReplyError):
            raise PeerAuthError(str(reply))

    def _fail_backlog(self, error: Exception) -> None:
        backlog, self._backlog = self._backlog, []
        for _, future in backlog:
            if future is not None and not future.done():
                future.set_exception(error)
        if backlog:
            log.warning("%s (%d messages dropped)", error, len(backlog))

    async def _read(self, reader: asyncio.StreamReader, parser: hiredis.Reader) -> None:
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                parser.feed(data)
                while True:
                    reply = parser.gets()
                    if reply is False:
                        break
                    future = self._replies.popleft() if self._replies else None
                    if future is None:
                        if isinstance(reply, hiredis.ReplyError):
                            log.warning("peer %s:%d rejected a message: %s", *self.address, reply)
                    elif not future.done():
                        if isinstance(reply, hiredis.ReplyError):
                            future.set_exception(GearsError(str(reply)))
                        else:
                            future.set_result(reply)
        except (ConnectionError, OSError):
            pass
        finally:
            self._writer = None
            error = NodeUnavailable(f"connection to gears node {self.address[0]}:{self.address[1]} lost")
            while self._replies:
                future = self._replies.popleft()
                if future is not None and not future.done():
                    future.set_exception(error)

    async def close(self) -> None:
        """Close the connection."""
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()


async def _read_reply(reader: asyncio.StreamReader, parser: hiredis.Reader) -> Any:
    """The next complete reply on ``reader`` (an error reply as a ``hiredis.ReplyError`` value)."""
    while True:
        reply = parser.gets()
        if reply is not False:
            return reply
        data = await reader.read(1 << 16)
        if not data:
            raise EOFError("connection closed")
        parser.feed(data)
