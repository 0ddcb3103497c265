"""The front door: one RESP endpoint per gears node, in front of its server node.

Clients talk to the front door as if it were the server node. Commands named in
``handlers`` (``RG.*``, ``AI.*``) are answered by the gears node itself; every other
command is forwarded, as raw bytes, on a per-client connection to the server node,
and its reply comes back as raw bytes (a status stays a status, RESP3 types pass
through). Cluster topology in replies (``MOVED``/``ASK`` redirections, ``CLUSTER
SLOTS/SHARDS/NODES/REPLICAS/SLAVES``) is rewritten from server addresses to front
door addresses, so cluster clients only ever see front doors.

Per client connection
---------------------
* **Upstream connection.** Created on the first forwarded command (or
  :meth:`ClientContext.call_server`) and closed with the client, so ``AUTH``,
  ``SELECT``, ``MULTI``/``EXEC``, ``WATCH``, ``CLIENT TRACKING`` and blocking
  commands behave exactly as on the server node. If the server node cannot be
  reached the waiting commands get ``-ERR server node <host:port> unavailable (...)``
  and the next forwarded command tries again; if an established upstream
  connection is lost (the server closed it, or died) the client connection is
  closed too, with no reply for the requests still waiting, as the server would
  have done.
* **Forwarding.** Requests are framed (not re-encoded) as they arrive, and a run
  of forwarded requests is written upstream in one piece as soon as it is parsed.
  Replies are matched FIFO to the requests that produced them and a run of replies
  that need no rewriting is written to the client in one piece. Each chunk read is
  first tried on a fast path: hiredis counts the messages in C, a sentinel fed
  after the chunk tells whether the chunk ended on a message boundary, and a chunk
  of whole, plainly forwarded requests (or of whole replies to such requests, with
  no redirection in it) is passed on untouched. Anything else takes the exact path,
  which frames message by message (:mod:`gears.wire.respparse`). RESP3 push frames
  (``>``, e.g. client tracking invalidations) pass through without taking a
  request's place.
* **Order.** Replies reach the client in the order of its requests. A command the
  front door answers itself (a handler, an interceptor hook, ``QUIT``) is a
  *barrier*: it starts once every earlier reply of the connection has been sent
  (so it sees their effects), and the connection's later requests wait, unread,
  until it has answered (like a blocked client on the server). Other connections
  never wait for it. The exception: a trusted client's command that has a server form
  with the same effect and reply (``AI.TENSORSET``), or whose reply the front door
  makes from the form's marked reply (``AI.TENSORGET``), is forwarded in that form, as
  a plain request (``trusts`` in :class:`FrontDoor`).
* **Pub/sub and MONITOR.** After ``SUBSCRIBE``, ``PSUBSCRIBE``, ``SSUBSCRIBE`` or
  ``MONITOR`` the connection becomes a transparent pipe in both directions for the
  rest of its life (also after ``UNSUBSCRIBE``); only ``MOVED``/``ASK`` errors are
  still rewritten. Handler commands are not available on such a connection.
* **Transactions.** A handler command inside ``MULTI`` is, by the handler's
  attributes: queued in a server form (``transaction_form``, its reply rewritten in
  the ``EXEC`` array); *run at ``EXEC``* (``at_exec``): the client gets ``+QUEUED``,
  a placeholder (``ECHO`` of a token) holds its place in the server's queue, and
  once the server's ``EXEC`` reply is in, the queued handler commands run in order
  and their replies take their placeholders' places (they run after the
  transaction's server commands, all of them, not between them; nothing runs after
  ``DISCARD``, an ``EXECABORT`` or a ``WATCH`` abort); or refused with
  ``-ERR Command not allowed inside a transaction`` (or the handler's
  ``transaction_error``), which makes the ``EXEC`` fail, as the server does for
  such commands.
* **Not supported.** ``CLIENT REPLY`` (replies could no longer be matched) is
  refused with an error. ``CLUSTER ...`` replies inside a transaction (in the
  ``EXEC`` array) are not rewritten.
* **Framing.** Requests are framed by the server's own rules (see
  :func:`gears.wire.respparse.scan_command`), however the input is cut into reads, so the
  front door and the server always agree on where each request ends and how many
  replies will come. Inline requests that are forwarded go to the server as they
  came (the server splits their arguments itself); a blank inline line gets no
  reply, as on the server.
* **Bad input.** Input outside standard RESP framing (a bad length or CRLF, a NUL
  in a request line, an inline request over 64 KB, unbalanced quotes, a bulk over
  512 MB, judged from its header before its bytes are buffered) is not framed by
  the front door: from there on the connection is a pipe and the server answers
  as it does (``-ERR Protocol error: ...`` and a close, in its own words and by
  its own version's rules).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from itertools import count as _counter, repeat
from operator import itemgetter
from time import perf_counter
from typing import Any, Protocol, cast

import hiredis

from gears.node.dispatch import MARKED_REPLIES, MARKED_REPLY
from gears.errors import GearsError, NodeUnavailable
from gears.wire.resp import RawReply, encode, encode_command, encode_error
from gears.wire.respparse import (
    INLINE_BLANKS,
    MAX_INLINE_LEN,
    Node,
    RespProtocolError,
    dump_tree,
    parse_tree,
    scan_command,
    scan_reply,
    split_inline,
)

__all__ = ["AddressMap", "ClientContext", "CommandObserver", "FrontDoor", "Handler", "Interceptor", "InfoSection"]

log = logging.getLogger(__name__)

#: Maps a server node address to the front door address clients should use instead
#: (``None``: leave the address as it is).
AddressMap = Callable[[str, int], tuple[str, int] | None]


class ClientContext:
    """The client connection a handler or interceptor hook is serving.

    ``id`` is unique within the front door (counting from 1); ``peer`` is the
    client's ``host:port``. ``gears_peer`` is True once the connection proved it is
    another gears node of the deployment (see :mod:`gears.wire.peerauth`);
    ``handshake`` holds the nonces of a handshake in progress. ``user`` is the ACL
    user the client last authenticated as with ``AUTH``/``HELLO ... AUTH`` (taken from
    the command once the server accepted it; ``None`` before any, and after ``RESET``:
    the connection is then ``default``'s, if it is authenticated at all).
    """

    __slots__ = ("_conn", "gears_peer", "handshake", "id", "peer", "user")

    def __init__(self, conn_id: int, peer: str, conn: _Connection) -> None:
        self.id = conn_id
        self.peer = peer
        self._conn = conn
        self.gears_peer = False
        self.handshake: tuple[bytes, bytes] | None = None
        self.user: str | None = None

    async def call_server(self, *args: Any) -> Any:
        """Run one command on the server node on this client's upstream connection.

        The command sees the client's session (its ``AUTH``, ``SELECT``, ``MULTI``
        ...) and runs after every command the client sent earlier. Arguments are
        encoded like :func:`gears.wire.resp.encode_command`. Returns the reply as
        ``hiredis`` parses it (bulk and status strings as ``bytes``, integers,
        lists, ``None``; RESP3 maps as ``dict``); an error nested in an array is
        returned as a :class:`hiredis.ReplyError` value. A top-level error reply is
        **raised** as :class:`hiredis.ReplyError` (its ``str`` is the error line,
        e.g. ``"WRONGTYPE Operation against ..."``; a handler that lets it
        propagate answers the client with that same error). Redirections are not
        rewritten here. Raises :class:`gears.errors.NodeUnavailable` when the server
        node cannot be reached or the connection is gone. Meant for use while the
        handler or hook serving this client runs (the client's later commands wait
        for it then, so nothing else is in flight on the connection).
        """
        raw = await self.call_server_raw(*args)
        reader = hiredis.Reader()
        reader.feed(raw)
        value = reader.gets()
        if isinstance(value, hiredis.ReplyError):
            raise value
        return value

    async def call_server_raw(self, *args: Any) -> bytes:
        """:meth:`call_server`, answering the server's reply as raw RESP (an error reply
        too, not raised)."""
        return await self._conn.roundtrip(encode_command(args))

    @property
    def in_transaction(self) -> bool:
        """True between a successful ``MULTI`` and the ``EXEC``/``DISCARD`` that ends it."""
        return self._conn.in_multi

    @property
    def authenticated(self) -> bool:
        """True when the client is known to have authenticated with the server node."""
        return self._conn.authed


#: An ``RG.*``/``AI.*`` command handler: ``args[0]`` is the command name as sent.
#: It returns a reply value (see :mod:`gears.wire.resp`) or raises; a
#: :class:`gears.errors.GearsError` becomes its error reply, a
#: :class:`hiredis.ReplyError` (from :meth:`ClientContext.call_server`) is relayed
#: as is, anything else becomes ``-ERR <type>: <message>`` (and is logged). A
#: handler with a true ``before_auth`` attribute runs without the authentication
#: and authorization checks (it does its own: the peer handshake).
Handler = Callable[[ClientContext, list[bytes]], Awaitable[Any]]

#: Decides whether the client may run a handler command: raises (a
#: :class:`gears.errors.GearsError`, answered as the handler's error) to refuse.
Authorizer = Callable[[ClientContext, list[bytes]], Awaitable[None]]
#: Whether the :data:`Authorizer` would let every command of the client through without
#: asking the server (a synchronous answer, from what the front door knows of the client).
Trust = Callable[[ClientContext], bool]


class CommandObserver(Protocol):
    """Told what the front door did, for the node's metrics (see :mod:`gears.node.metrics`).

    Forwarded commands are counted by the front door itself
    (:attr:`FrontDoor.passthrough_commands`); their latency is sampled: the batch during
    which that count passes a multiple of :data:`PASSTHROUGH_SAMPLE_EVERY`, when it was
    written on an idle connection, is timed from its write to the server until its last
    reply (for a client that does not pipeline: one command in 64).
    """

    def handled(self, name: str, seconds: float) -> None:
        """A handler command (``name`` in upper case) was answered in ``seconds``."""

    def passthrough_sampled(self, seconds: float) -> None:
        """A sampled batch of forwarded commands took ``seconds``."""


#: The node's ``# Gears`` section of ``INFO`` (its text, lines ending in CRLF).
InfoSection = Callable[[], Awaitable[str]]


class Interceptor(Protocol):
    """Hooks around forwarded commands (command hooks, keymiss read-through ...).

    Only the names in :attr:`commands` are intercepted; every other command takes
    the forwarding fast path at no extra cost. An intercepted command is a barrier
    on its connection (see the module docstring): ``before`` runs after every
    earlier reply was sent, and the connection's next command runs after the
    intercepted one has answered. Handler names win over interceptor names;
    ``SUBSCRIBE``/``PSUBSCRIBE``/``SSUBSCRIBE``/``MONITOR``/``QUIT``/``HELLO`` cannot
    be intercepted. Exceptions are answered like a handler's.
    """

    #: Upper-case command names the interceptor cares about.
    commands: frozenset[str]

    async def before(self, ctx: ClientContext, args: list[bytes]) -> Any | None:
        """A reply value to answer instead of forwarding, or ``None`` to forward."""

    async def after(self, ctx: ClientContext, args: list[bytes], raw_reply: bytes) -> Any | None:
        """A replacement reply value, or ``None`` to send ``raw_reply`` (the server's
        reply as raw RESP, ``MOVED``/``ASK``/``CLUSTER`` addresses already rewritten)."""


# Routing kinds of a command name (``0``: plain forwarding, the fast path; ``-1``: a
# request the server skips without a reply, forwarded along with plain ones).
_SKIPPED = -1
_PLAIN = 0
_HANDLER = 1
_INTERCEPT = 2
_CLUSTER = 3
_PIPE = 4
_QUIT = 5
_WATCH = 6
_CLIENT = 7
_HELLO = 8
_CONFIG = 9
_INFO = 10

# Kinds of a special reply slot (a plain forwarded reply's slot is ``None``).
_S_SLOTS = 1
_S_SHARDS = 2
_S_NODES = 3
_S_REPLICAS = 4
_S_PIPE = 5
_S_MULTI = 6
_S_ENDTX = 7
_S_RESET = 8
_S_AUTH = 9
_S_CONFIG_SET = 10
_S_MARKED = 11

_CLUSTER_SLOTS_KINDS = {
    b"SLOTS": _S_SLOTS,
    b"SHARDS": _S_SHARDS,
    b"NODES": _S_NODES,
    b"REPLICAS": _S_REPLICAS,
    b"SLAVES": _S_REPLICAS,
}
_WATCH_KINDS = {
    b"MULTI": _S_MULTI,
    b"EXEC": _S_ENDTX,
    b"DISCARD": _S_ENDTX,
    b"RESET": _S_RESET,
    b"AUTH": _S_AUTH,
}
_BUILTIN_ROUTES = {
    b"CLUSTER": _CLUSTER,
    b"SUBSCRIBE": _PIPE,
    b"PSUBSCRIBE": _PIPE,
    b"SSUBSCRIBE": _PIPE,
    b"MONITOR": _PIPE,
    b"QUIT": _QUIT,
    b"CLIENT": _CLIENT,
    **{name: _WATCH for name in _WATCH_KINDS},
    b"HELLO": _HELLO,
    b"CONFIG": _CONFIG,
}

#: A reply slot whose reply is dropped (a command sent only for its side effect).
_DROP = object()
#: What the fast paths' readers return when no whole message is left (``False``, the
#: default, would equal a ``:0`` reply and end ``iter(reader.gets, ...)`` early).
_INCOMPLETE = object()
#: Fed to a hiredis reader after a chunk: it parses as ``[]`` only if the chunk ended
#: on a message boundary (else it lands inside the unfinished message).
_SENTINEL = b"*0\r\n"
#: Chunks up to this size are tried on the C fast path (hiredis framing); larger ones
#: (big values) are framed by the scanners, which do not copy them.
_FAST_MAX = 256 * 1024
_first = itemgetter(0)
_PING = b"*1\r\n$4\r\nPING\r\n"

_OK = b"+OK\r\n"
_NOAUTH = b"-NOAUTH Authentication required.\r\n"
_NOT_IN_MULTI = b"-ERR Command not allowed inside a transaction\r\n"
_NO_CLIENT_REPLY = b"-ERR CLIENT REPLY is not supported through the gears front door\r\n"

#: Route cache bounds: command names seen as sent (any case) → routing kind.
_ROUTE_CACHE_MAX = 4096
_ROUTE_CACHE_NAME_MAX = 64
#: Input buffered while a barrier runs before the client's socket stops being read.
_BLOCKED_INPUT_MAX = 1024 * 1024
#: Seconds to wait for the server node to accept a connection.
CONNECT_TIMEOUT = 5.0
#: Forwarded-latency sampling: a plainly forwarded batch during which the forwarded count
#: passes a multiple of this (a power of two) is timed if it was written on an idle connection.
PASSTHROUGH_SAMPLE_EVERY = 64
_SAMPLE_MASK = PASSTHROUGH_SAMPLE_EVERY - 1
#: ``INFO`` arguments after which the ``# Gears`` section is added (none at all counts too).
_INFO_WITH_GEARS = frozenset((b"gears", b"all", b"everything", b"default"))


def _set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _reader() -> hiredis.Reader:
    """A hiredis reader for the fast paths (see :data:`_INCOMPLETE`)."""
    return hiredis.Reader(notEnoughData=_INCOMPLETE)


def _ends_on_boundary(reader: hiredis.Reader) -> bool:
    """Whether ``reader`` (every whole message taken out) stopped on a message boundary.

    It is fed :data:`_SENTINEL`: that parses as ``[]`` only from a boundary. Inside an
    unfinished message it either completes something else, leaves the message
    unfinished, or is malformed there (a chunk that ended on a type byte or inside a
    length: hiredis raises), so the reader must be replaced after a ``False``.
    """
    reader.feed(_SENTINEL)
    try:
        return reader.gets() == []  # type: ignore[no-any-return]
    except hiredis.ProtocolError:
        return False


def _args_of(raw: bytes) -> list[bytes]:
    """The arguments of one complete, already framed multibulk request."""
    reader = hiredis.Reader()
    reader.feed(raw)
    return reader.gets()  # type: ignore[no-any-return]


def _inline_args(line: bytes) -> list[bytes] | None:
    """The arguments of an inline request line (without its ``\\n``), or ``None`` for a
    blank line (the server skips it without a reply).

    Raises :class:`RespProtocolError` for a line the front door does not frame: one
    over the inline size limit, one with a NUL (the server never sees its end) or one
    :func:`split_inline` refuses.
    """
    if len(line) > MAX_INLINE_LEN:
        raise RespProtocolError("too big inline request")
    if b"\0" in line:
        raise RespProtocolError("NUL byte in an inline request")
    if all(map(INLINE_BLANKS.__contains__, line)):
        return None
    return split_inline(line[:-1] if line.endswith(b"\r") else line)


def _auth_user(args: list[bytes]) -> str | None:
    """The ACL user ``AUTH``/``HELLO`` would authenticate as (``None``: a ``HELLO`` without ``AUTH``)."""
    name = args[0].upper()
    if name == b"AUTH":
        return args[1].decode("utf-8", "surrogateescape") if len(args) > 2 else "default"
    for i in range(2, len(args) - 2):
        if args[i].upper() == b"AUTH":
            return args[i + 1].decode("utf-8", "surrogateescape")
    return None


def _info_with(reply: bytes, section: bytes, only: bool) -> bytes:
    """An ``INFO`` bulk (RESP2 ``$``) or verbatim (RESP3 ``=``) reply with ``section``
    appended after a blank line, or (``only``) in place of what the server sent."""
    start = reply.index(b"\r\n") + 2
    body = reply[start:-2]
    prefix = b""
    if reply[:1] == b"=":  # "txt:" precedes a verbatim string's text
        prefix, body = body[:4], body[4:]
    body = section if only or not body else body + b"\r\n" + section
    payload = prefix + body
    return b"%b%d\r\n%b\r\n" % (reply[:1], len(payload), payload)


def _error_line(text: str) -> bytes:
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") + b"\r\n"


_MARK = b"$%d\r\n%s\r\n" % (len(MARKED_REPLY), MARKED_REPLY)
#: Prefix of the token a placeholder ``ECHO`` queues for a handler command run at ``EXEC``.
_AT_EXEC_TOKEN = b"__gears_at_exec__:"


def _exec_elements(raw: bytes) -> list[bytes] | None:
    """An ``EXEC`` reply split into its header and its elements, each as raw RESP
    (``None`` for an ``EXECABORT`` or a transaction a ``WATCH`` aborted)."""
    if not raw.startswith(b"*") or raw.startswith(b"*-1"):
        return None
    pos = raw.index(b"\r\n") + 2
    parts = [raw[:pos]]
    for _ in range(int(raw[1 : pos - 2])):
        end = scan_reply(raw, pos)
        parts.append(raw[pos:end])
        pos = end
    return parts


def _unmark_reply(raw: bytes) -> bytes:
    """The client's reply that a marked reply (see :data:`gears.node.dispatch.MARKED_REPLY`)
    stands for; any other reply (an error, ``+QUEUED``) as it is."""
    header = raw.find(b"\r\n") + 2
    if not (raw.startswith(b"*") and raw.startswith(_MARK, header)):
        return raw
    reader = hiredis.Reader()
    reader.feed(raw)
    value = reader.gets()
    return MARKED_REPLIES[value[1]](value[2:])


def _unmark_replies(raw: bytes) -> bytes:
    """An ``EXEC`` reply with every marked element replaced by the client's reply it
    stands for; other elements are kept byte for byte."""
    parts = _exec_elements(raw)
    if parts is None:
        return raw
    return b"".join([parts[0], *map(_unmark_reply, parts[1:])])


class FrontDoor:
    """The RESP server of one gears node (see the module docstring).

    * ``listen``: address to bind.
    * ``server``: the server node commands are forwarded to.
    * ``server_socket``: the server node's Unix socket, when it runs on this host: each
      client's upstream connection uses it (a local hop without TCP is cheaper, see
      docs/architecture.md); ``server`` when it cannot be reached.
    * ``handlers``: upper-case command name → :data:`Handler`.
    * ``address_map``: server node address → front door address, used to rewrite
      topology replies (``None``: keep the address).
    * Authentication: a client must have authenticated with the server node
      (``AUTH``/``HELLO ... AUTH``, forwarded) before a handler or interceptor hook
      serves it: the front door checks with a ``PING`` on the client's own upstream
      connection before the first one (and again after ``RESET``), unless a successful
      ``AUTH``, ``HELLO`` or ``MULTI`` proved it, and answers
      ``-NOAUTH Authentication required.`` (hooks: the command
      is forwarded and the server refuses it). The front door never authenticates on
      a client's behalf.
    * ``authorize``: optional :data:`Authorizer`, run after that check before every
      handler (the server's ACL for ``RG.*``/``AI.*``).
    * ``trusts``: optional :data:`Trust`. For a client it trusts, known to have
      authenticated, with no ``AUTH``/``HELLO`` in flight, a handler carrying a
      ``forwarded_form`` (``AI.TENSORSET``: one server script with the same effect and
      reply; ``AI.TENSORGET``: one whose marked reply becomes the tensor reply as it
      passes) is forwarded in that form as a plain request: no barrier, so a pipeline
      of them costs one round trip to the server node. A request the form refuses
      (a syntax error, another shard's key) takes the handler's path, which answers it.
    * ``interceptor``: optional :class:`Interceptor`.
    * ``tls``: serve TLS with this context (``None``: plain TCP).
    * ``server_tls``: dial ``server`` over TLS with this context (``None``: plain TCP;
      the Unix socket is always plain).
    * ``on_config_set``: called after a ``CONFIG SET`` forwarded through this front door
      succeeded (a ``+QUEUED`` inside ``MULTI`` counts too).
    * ``observer``: optional :class:`CommandObserver` (metrics).
    * ``info_section``: optional :data:`InfoSection`: ``INFO`` (no section, ``all``,
      ``everything``, ``default`` or ``gears`` among its arguments) gets it appended to the
      server's reply, ``INFO gears`` gets only it. The server answers first (so its
      authentication and ACL rules apply); inside ``MULTI`` ``INFO`` is forwarded as is.
    """

    def __init__(
        self,
        *,
        listen: tuple[str, int],
        server: tuple[str, int],
        handlers: Mapping[str, Handler],
        address_map: AddressMap,
        authorize: Authorizer | None = None,
        trusts: Trust | None = None,
        interceptor: Interceptor | None = None,
        server_socket: str | None = None,
        tls: ssl.SSLContext | None = None,
        server_tls: ssl.SSLContext | None = None,
        on_config_set: Callable[[], None] | None = None,
        observer: CommandObserver | None = None,
        info_section: InfoSection | None = None,
    ) -> None:
        self.listen = listen
        self.server = server
        self.server_socket = server_socket
        self.server_tls = server_tls
        self.address_map = address_map
        self.authorize = authorize
        self.trusts = trusts
        self.interceptor = interceptor
        self.tls = tls
        self.observer = observer
        self.info_section = info_section
        #: Commands forwarded to the server node so far (counted per forwarded batch).
        self.passthrough_commands = 0
        self.on_config_set = on_config_set
        self._handlers = {name.upper().encode(): handler for name, handler in handlers.items()}
        self._route_cache: dict[bytes, int] = {}
        #: Names (as sent) known to be forwarded plainly: the request fast path's check.
        self.plain_names: set[bytes] = set()
        self.refresh_routes()
        self._ids = _counter(1)
        self._conns: set[_Connection] = set()
        self._server: asyncio.Server | None = None
        self._server_label = f"{server[0]}:{server[1]}"

    def refresh_routes(self) -> None:
        """Re-read ``interceptor.commands`` (call it whenever that set changes)."""
        routes = dict(_BUILTIN_ROUTES)
        if self.info_section is not None:
            routes[b"INFO"] = _INFO
        if self.interceptor is not None:
            for name in self.interceptor.commands:
                key = name.upper().encode()
                if routes.get(key) not in (_PIPE, _QUIT, _HELLO):
                    routes[key] = _INTERCEPT
        routes.update(dict.fromkeys(self._handlers, _HANDLER))
        self._routes = routes
        self._route_cache.clear()
        self.plain_names.clear()

    async def start(self) -> None:
        """Bind ``listen`` and start serving; raises :class:`OSError` if the port is taken."""
        loop = asyncio.get_running_loop()
        host, port = self.listen
        self._server = await loop.create_server(lambda: _Connection(self), host, port, ssl=self.tls)
        log.info(
            "front door listening on %s:%d%s (server node %s)", *self.address, " (TLS)" if self.tls else "", self._server_label
        )

    @property
    def address(self) -> tuple[str, int]:
        """The address actually bound (``listen`` with a port ``0`` resolved); after :meth:`start`."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the front door is not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    async def close(self) -> None:
        """Stop accepting; close every client connection and its upstream connection.

        Running handlers are cancelled.
        """
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self._conns):
            conn.abort()
        if server is not None:
            await server.wait_closed()
        log.info("front door on %s:%d closed", *self.listen)

    # ------------------------------------------------------------ internals used by connections

    def route(self, name: bytes) -> int:
        """Routing kind of a command name as sent (slow path of the route cache)."""
        kind = self._routes.get(name.upper(), _PLAIN)
        if len(name) <= _ROUTE_CACHE_NAME_MAX and len(self._route_cache) < _ROUTE_CACHE_MAX:
            self._route_cache[name] = kind
            if kind == _PLAIN:
                self.plain_names.add(name)
        return kind

    def next_id(self) -> int:
        """A new client connection id."""
        return next(self._ids)

    def map_address(self, host: str, port: int) -> tuple[str, int] | None:
        """``address_map`` guarded: a failing map leaves the address unchanged."""
        try:
            return self.address_map(host, port)
        except Exception:
            log.exception("address_map(%r, %r) failed", host, port)
            return None

    def map_host_port(self, addr: bytes) -> bytes | None:
        """Rewrite ``b"host:port"``; ``None`` when it is not mapped."""
        host, sep, port = addr.rpartition(b":")
        if not sep or not port.isdigit():
            return None
        mapped = self.map_address(host.decode("utf-8", "replace"), int(port))
        if mapped is None:
            return None
        return f"{mapped[0]}:{mapped[1]}".encode()

    def rewrite_redirect(self, raw: bytes) -> bytes:
        """Rewrite the address of a ``-MOVED``/``-ASK`` error reply."""
        parts = raw[1:-2].split(b" ")
        if len(parts) == 3:
            addr = self.map_host_port(parts[2])
            if addr is not None:
                return b"-%b %b %b\r\n" % (parts[0], parts[1], addr)
        return raw

    def rewrite_cluster(self, kind: int, raw: bytes) -> bytes:
        """Rewrite the addresses in a ``CLUSTER SLOTS/SHARDS/NODES/REPLICAS`` reply."""
        if raw[:1] in (b"-", b"!"):
            return raw
        try:
            tree = parse_tree(raw)
            if kind == _S_SLOTS:
                self._rewrite_slots(tree)
            elif kind == _S_SHARDS:
                self._rewrite_shards(tree)
            elif kind == _S_NODES:
                tree = self._rewrite_node_text(tree)
            else:
                _, items = _unwrap(tree)
                if isinstance(items, list):
                    items[:] = [self._rewrite_node_text(item) for item in items]
            return dump_tree(tree)
        except (RespProtocolError, ValueError, TypeError, IndexError):
            log.warning("could not rewrite a CLUSTER reply; passed on as is", exc_info=True)
            return raw

    def _rewrite_slots(self, tree: Node) -> None:
        # [[start, end, [ip, port, id, metadata?], ...], ...]
        for entry in _items(tree):
            for node in _items(entry)[2:]:
                fields = _items(node)
                if len(fields) < 2:
                    continue
                mapped = self.map_address(_text(fields[0]), int(_payload(fields[1])))
                if mapped is None:
                    continue
                host = mapped[0].encode()
                fields[0] = (fields[0][0], host)
                fields[1] = (58, b"%d" % mapped[1])
                if len(fields) > 3:
                    meta = _items(fields[3])
                    for i in range(0, len(meta) - 1, 2):
                        if _text(meta[i]) == "ip":
                            meta[i + 1] = (meta[i + 1][0], host)

    def _rewrite_shards(self, tree: Node) -> None:
        # [{slots: [...], nodes: [{id, port, tls-port?, ip, endpoint, hostname?, ...}, ...]}, ...]
        for shard in _items(tree):
            fields = _items(shard)
            for i in range(0, len(fields) - 1, 2):
                if _text(fields[i]) != "nodes":
                    continue
                for node in _items(fields[i + 1]):
                    self._rewrite_shard_node(_items(node))

    def _rewrite_shard_node(self, pairs: list[Node]) -> None:
        at = {_text(pairs[i]): i + 1 for i in range(0, len(pairs) - 1, 2)}
        port_at = at.get("port", at.get("tls-port"))
        if port_at is None:
            return
        port = int(_payload(pairs[port_at]))
        mapped = None
        for key in ("ip", "endpoint"):
            if key in at:
                mapped = self.map_address(_text(pairs[at[key]]), port)
                if mapped is not None:
                    break
        if mapped is None:
            return
        host = mapped[0].encode()
        for key in ("ip", "endpoint"):
            if key in at:
                pairs[at[key]] = (pairs[at[key]][0], host)
        for key in ("port", "tls-port"):
            if key in at:
                pairs[at[key]] = (58, b"%d" % mapped[1])

    def _rewrite_node_text(self, node: Node) -> Node:
        # "<id> <ip:port@cport[,hostname]> <flags> ..." per line; RESP3 sends it verbatim ("txt:").
        t, text = _unwrap(node)
        if not isinstance(text, bytes):
            return node
        prefix = b""
        if t == 61:  # "=" verbatim string
            prefix, text = text[:4], text[4:]
        lines = text.split(b"\n")
        for i, line in enumerate(lines):
            fields = line.split(b" ", 2)
            if len(fields) < 2:
                continue
            addr, at, rest = fields[1].partition(b"@")
            mapped = self.map_host_port(addr)
            if mapped is not None:
                fields[1] = mapped + at + rest
                lines[i] = b" ".join(fields)
        return (t, prefix + b"\n".join(lines))


def _unwrap(node: Node) -> Node:
    """The value of a node, without a RESP3 attribute around it."""
    while isinstance(node[1], tuple):
        node = node[1][1]
    return node


def _items(node: Node) -> list[Node]:
    payload = _unwrap(node)[1]
    return payload if isinstance(payload, list) else []


def _payload(node: Node) -> bytes:
    payload = _unwrap(node)[1]
    if not isinstance(payload, bytes):
        raise TypeError("expected a string or number node")
    return payload


def _text(node: Node) -> str:
    payload = _unwrap(node)[1]
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


class _Upstream(asyncio.Protocol):
    """The connection of one client to the server node."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []  # written before the connection is made
        self.connect_task: asyncio.Task[None] | None = None
        self.established = False

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        else:
            self.early.append(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        elif self.connect_task is not None:
            self.connect_task.cancel()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        if self.conn._up is not self:  # the client went away while connecting
            transport.close()
            return
        _set_nodelay(transport)
        self.transport = transport
        self.established = True
        if self.early:
            transport.write(b"".join(self.early))
            self.early.clear()
        if self.conn.out_paused:
            transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        self.conn.upstream_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        self.conn.pause_reading("upstream")

    def resume_writing(self) -> None:
        self.conn.resume_reading("upstream")


class _Connection(asyncio.Protocol):
    """One client connection (see the module docstring for its behaviour)."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.transport: asyncio.Transport | None = None
        self.ctx: ClientContext | None = None
        self.closed = False
        self.authed = False
        self.in_multi = False
        self._auth_users: deque[str | None] = deque()  # per AUTH/HELLO in flight: the user it names
        self._tx_marked = False  # a queued form in this transaction may return marked replies
        self._tx_at_exec: dict[bytes, Callable[[], Awaitable[bytes]]] = {}  # placeholder → handler run at EXEC
        self._tx_tokens = _counter(1)
        self.out_paused = False
        # client input
        self._inbuf = bytearray()  # unparsed input (an incomplete request, or input held by a barrier)
        self._need = 0  # length _inbuf must reach before parsing can go on
        self._reqreader = _reader()  # request fast path
        self._blocked = False  # a barrier is waiting or running: input is held
        self._barrier_job: Callable[[], Awaitable[bytes]] | None = None  # waiting for earlier replies
        self._barrier_task: asyncio.Task[None] | None = None
        self._close_after = False  # close once the barrier's reply is written
        self._pipe = False  # client → server is a transparent pipe
        self._read_paused: set[str] = set()
        # upstream
        self._up: _Upstream | None = None
        self._pending: deque[Any] = deque()  # reply slots, FIFO: None | int kind | Future | _DROP
        self._inflight = 0  # slots whose reply goes to the client (None and int kinds)
        self._special = 0  # slots that are not None
        self._upbuf = bytearray()
        self._upneed = 0
        self._repreader = _reader()  # reply fast path
        self._resp3 = False  # HELLO 3 was sent: push frames may come, replies take the exact path
        self._up_pipe = False  # server → client is a pipe (only redirections rewritten)
        self._sampled_at = 0.0  # perf_counter() when a timed forwarded batch was written (0: none)

    # ------------------------------------------------------------------ client side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        _set_nodelay(transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        label = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.ctx = ClientContext(self.door.next_id(), label, self)
        self.door._conns.add(self)
        log.debug("client %d connected from %s", self.ctx.id, label)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.door._conns.discard(self)
        self._inbuf = bytearray()
        self._barrier_job = None
        if self._barrier_task is None:
            self._close_upstream()
        # else: the running barrier may still use the upstream; it closes it when done
        log.debug("client %d disconnected (%s)", self._cid, exc or "closed")

    def pause_writing(self) -> None:
        self.out_paused = True
        up = self._up
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.out_paused = False
        up = self._up
        if up is not None and up.transport is not None:
            up.transport.resume_reading()

    def pause_reading(self, why: str) -> None:
        if not self._read_paused and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._read_paused.add(why)

    def resume_reading(self, why: str) -> None:
        if why in self._read_paused:
            self._read_paused.discard(why)
            if not self._read_paused and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._pipe:
            up = self._up
            if up is not None:
                up.write(data)
            return
        if self._inbuf or self._blocked:
            self._inbuf += data
            if self._blocked:
                if len(self._inbuf) > _BLOCKED_INPUT_MAX:
                    self.pause_reading("blocked")
                return
            if len(self._inbuf) < self._need:
                return
            data = bytes(self._inbuf)
            self._inbuf = bytearray()
        if len(data) > _FAST_MAX or not self._forward_fast(data):
            self._process(data)

    def _forward_fast(self, data: bytes) -> bool:
        """Forward ``data`` as is if it is whole requests, all plainly forwarded.

        hiredis frames the chunk (in C); the chunk qualifies when every request is
        an array whose name is a known plain name and the chunk ends on a request
        boundary. Anything else (an inline or partial request, a name seen for the
        first time, a special command) returns False and takes the exact path. The
        RESP3 types ``~ > |`` parse like an array but the server reads them as inline
        commands, so a chunk where one may start a message takes the exact path too.
        """
        reader = self._reqreader
        reader.feed(data)
        try:
            cmds = list(iter(reader.gets, _INCOMPLETE))
        except hiredis.ProtocolError:
            cmds = None
        if cmds and data[0] == 42 and not reader.has_data():
            try:
                plain = all(map(self.door.plain_names.__contains__, map(_first, cmds)))
            except (TypeError, LookupError):  # not a list of bulk strings
                plain = False
            if plain and b"\r\n~" not in data and b"\r\n>" not in data and b"\r\n|" not in data:
                if _ends_on_boundary(reader):
                    self._forward_run(data, len(cmds))
                    return True
        self._reqreader = _reader()
        return False

    def _process(self, buf: bytes) -> None:
        """Frame and dispatch the requests in ``buf`` (input not yet parsed), exactly.

        Framing follows the server's rules (:func:`scan_command`; inline requests end
        at ``\\n``), so the front door counts the same requests, and so the same
        replies, as the server will. Plain requests, inline ones too, are forwarded as
        they came: the server parses them itself.
        """
        n = len(buf)
        pos = 0
        span = -1  # start of a run of plain requests not yet written upstream
        count = 0  # requests in that run
        need = 0
        try:
            while pos < n:
                end, kind, args = self._frame(buf, pos, n)
                if end < 0:
                    need = -end
                    break
                if kind in (_PLAIN, _SKIPPED):  # (one the server skips goes along: no reply comes)
                    if span < 0:
                        span = pos
                    if kind == _PLAIN:
                        count += 1
                    pos = end
                    continue
                if span >= 0:
                    self._forward_run(buf[span:pos], count)
                    span, count = -1, 0
                raw = buf[pos:end]
                pos = end
                self._dispatch(kind, args, raw)  # type: ignore[arg-type]
                if self._blocked or self._pipe:
                    break
        except RespProtocolError as exc:
            # Not framed here: the rest goes to the server as it is, and so does
            # everything the client sends later; the server answers what it will.
            log.debug("client %d: %s; the connection becomes a pipe", self._cid, exc)
            self._pipe = True
        if span >= 0:
            self._forward_run(buf[span:pos], count)
        if pos < n:
            rest = buf[pos:]
            if self._pipe:
                self._upstream().write(rest)
            else:
                self._inbuf += rest
                self._need = need - pos
                if self._blocked and len(self._inbuf) > _BLOCKED_INPUT_MAX:
                    self.pause_reading("blocked")
        else:
            self._need = 0

    def _frame(self, buf: bytes, pos: int, n: int) -> tuple[int, int, list[bytes] | None]:
        """Frame the request at ``buf[pos]``: ``(end, kind, args)``, where ``kind`` is its
        routing kind or ``_SKIPPED`` (the server skips it without a reply) and ``args`` is
        set for the requests the front door handles itself; ``end`` is ``-need`` while the
        request is incomplete. Raises :class:`RespProtocolError` for input it does not frame.
        """
        if buf[pos] == 42:  # "*": multibulk
            end, name_start, name_end = scan_command(buf, pos, n)
            if end < 0:
                return end, _PLAIN, None
            if name_start == name_end:  # a count <= 0
                return end, _SKIPPED, None
            name = buf[name_start:name_end]
            kind = self.door._route_cache.get(name)
            if kind is None:
                kind = self.door.route(name)
            return end, kind, None if kind == _PLAIN else _args_of(buf[pos:end])
        e = buf.find(b"\n", pos, n)  # inline: up to the newline
        if e < 0:
            if n - pos > MAX_INLINE_LEN:
                raise RespProtocolError("too big inline request")
            return -(n + 1), _PLAIN, None
        args = _inline_args(buf[pos:e])
        if args is None:  # a blank line
            return e + 1, _SKIPPED, None
        return e + 1, self.door._routes.get(args[0].upper(), _PLAIN), args

    def _dispatch(self, kind: int, args: list[bytes], raw: bytes) -> None:
        """Handle one request that is not plain forwarding (``raw``: as it came)."""
        if kind == _HANDLER:
            handler = self.door._handlers[args[0].upper()]
            if not self._forward_form(handler, args):
                self._barrier(partial(self._run_handler, handler, args))
        elif kind == _INTERCEPT:
            self.door.passthrough_commands += 1
            self._barrier(partial(self._run_intercept, args, raw, self._slot_kind(args)))
        elif kind == _INFO:
            self.door.passthrough_commands += 1
            self._barrier(partial(self._run_info, args, raw))
        elif kind == _PIPE:
            self.door.passthrough_commands += 1
            self._forward(raw, _S_PIPE)
            self._pipe = True
        elif kind == _QUIT:
            self._close_after = True
            self._barrier(partial(_constant, _OK))
        elif kind == _CLIENT and len(args) > 1 and args[1].upper() == b"REPLY":
            self._barrier(partial(_constant, _NO_CLIENT_REPLY))
        else:
            if kind == _HELLO and len(args) > 1 and args[1] != b"2":
                self._resp3 = True
            slot = self._slot_kind(args)
            if slot == _S_AUTH:
                self._auth_users.append(_auth_user(args))
            self.door.passthrough_commands += 1
            if slot == _S_ENDTX and self._tx_at_exec and args[0].upper() == b"EXEC":
                self._barrier(partial(self._run_exec, raw))
                return
            self._forward(raw, slot)

    def _forward_form(self, handler: Handler, args: list[bytes]) -> bool:
        """Forward a handler command in its ``forwarded_form`` where the front door may
        (see ``trusts`` in :class:`FrontDoor`); whether it did. Inside a transaction the
        form is what the handler would queue, so a ``MULTI`` whose reply is not in yet
        changes nothing."""
        form = getattr(handler, "forwarded_form", None)
        trusts = self.door.trusts
        if form is None or trusts is None or not self.authed or self._auth_users:
            return False
        ctx = self.ctx
        assert ctx is not None
        if not trusts(ctx):
            return False
        started = perf_counter()
        try:
            command = form(args)
        except GearsError:
            return False  # the handler answers the error, in a transaction too
        if command is None:
            return False
        if MARKED_REPLY in command:
            # (A MULTI whose reply is not in yet queues it: the EXEC result is unmarked too.)
            self._tx_marked = True
            self._forward(encode_command(command), _S_MARKED)
        else:
            self._forward(encode_command(command), None)
        observer = self.door.observer
        if observer is not None:
            observer.handled(args[0].upper().decode("utf-8", "replace"), perf_counter() - started)
        return True

    @staticmethod
    def _slot_kind(args: list[bytes]) -> int | None:
        """Reply slot kind of a forwarded command (``None``: plain)."""
        name = args[0].upper()
        if name == b"CLUSTER":
            return _CLUSTER_SLOTS_KINDS.get(args[1].upper()) if len(args) > 1 else None
        if name == b"HELLO":
            return _S_AUTH
        if name == b"CONFIG":
            return _S_CONFIG_SET if len(args) > 1 and args[1].upper() == b"SET" else None
        return _WATCH_KINDS.get(name)

    # ------------------------------------------------------------------ forwarding

    def _upstream(self) -> _Upstream:
        up = self._up
        if up is None:
            up = self._up = _Upstream(self)
            up.connect_task = asyncio.get_running_loop().create_task(self._connect(up))
        return up

    async def _connect(self, up: _Upstream) -> None:
        try:
            await asyncio.wait_for(self._open_upstream(up), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError) as exc:
            up.connect_task = None
            self._upstream_failed(up, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        else:
            up.connect_task = None

    async def _open_upstream(self, up: _Upstream) -> None:
        """Connect ``up`` over the server's Unix socket if it has one, else over TCP."""
        loop = asyncio.get_running_loop()
        path = self.door.server_socket
        if path is not None:
            try:
                await loop.create_unix_connection(lambda: up, path)
                return
            except OSError as exc:
                log.debug("client %d: server socket %s: %s; using TCP", self._cid, path, exc)
        host, port = self.door.server
        tls = self.door.server_tls
        await loop.create_connection(lambda: up, host, port, ssl=tls, server_hostname=host if tls is not None else None)

    def _forward_run(self, data: bytes, count: int) -> None:
        """Write ``count`` plain requests upstream."""
        (self._up or self._upstream()).write(data)
        door = self.door
        total = door.passthrough_commands + count
        door.passthrough_commands = total
        if total & _SAMPLE_MASK < count and self._inflight == 0 and door.observer is not None:
            self._sampled_at = perf_counter()  # the count passed a multiple of PASSTHROUGH_SAMPLE_EVERY
        if count == 1:
            self._pending.append(None)
        else:
            self._pending.extend(repeat(None, count))
        self._inflight += count

    def _forward(self, raw: bytes, slot: int | None) -> None:
        self._upstream().write(raw)
        self._pending.append(slot)
        self._inflight += 1
        if slot is not None:
            self._special += 1

    def _send(self, raw: bytes, slot: Any) -> None:
        """Write a request whose reply is not the client's (``slot``: a future or ``_DROP``)."""
        self._upstream().write(raw)
        self._pending.append(slot)
        self._special += 1

    def roundtrip(self, raw: bytes) -> asyncio.Future[bytes]:
        """Send one request upstream; the future gets its raw reply (not sent to the client)."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.closed and self._barrier_task is None:
            fut.set_exception(self._unavailable("client connection closed"))
        else:
            self._send(raw, fut)
        return fut

    def upstream_data(self, data: bytes) -> None:
        """Match replies from the server node to their slots and pass them on."""
        if self._upbuf:
            self._upbuf += data
            if len(self._upbuf) < self._upneed:
                return
            data = bytes(self._upbuf)
            self._upbuf = bytearray()
        fast = not self._special and not self._resp3 and not self._up_pipe and len(data) <= _FAST_MAX
        if not (fast and self._replies_fast(data)):
            self._replies_exact(data)

    def _replies_fast(self, data: bytes) -> bool:
        """Pass ``data`` on as is if it is whole replies, all to plain forwarded requests.

        Used only while every waiting slot is plain and no push frame can come.
        hiredis frames the chunk (in C); a chunk holding a redirection, more replies
        than are waited for, or ending inside a reply takes the exact path.
        """
        reader = self._repreader
        reader.feed(data)
        try:
            k = len(list(iter(reader.gets, _INCOMPLETE)))
        except hiredis.ProtocolError:
            k = 0
        ok = 0 < k <= len(self._pending) and not reader.has_data() and b"-MOVED " not in data and b"-ASK " not in data
        if ok and k < len(self._pending):  # (all awaited replies in: nothing can be left over)
            ok = _ends_on_boundary(reader)
        if not ok:
            self._repreader = _reader()
            return False
        if k == len(self._pending):
            self._pending.clear()
        else:
            popleft = self._pending.popleft
            for _ in repeat(None, k):
                popleft()
        self._inflight -= k
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]
        if self._inflight == 0:
            if self._sampled_at:
                self._end_sample()
            if self._barrier_job is not None:
                self._start_barrier()
        return True

    def _end_sample(self) -> None:
        """The timed forwarded batch got its last reply."""
        observer = self.door.observer
        if observer is not None:
            observer.passthrough_sampled(perf_counter() - self._sampled_at)
        self._sampled_at = 0.0

    def _replies_exact(self, buf: bytes) -> None:
        """Frame replies one by one, rewrite where needed, and pass them on."""
        n = len(buf)
        pos = start = 0  # buf[start:pos] is passed on unchanged
        out: list[bytes] | None = None
        pending = self._pending
        end = 0
        try:
            while pos < n:
                end = scan_reply(buf, pos)
                if end < 0:
                    break
                t = buf[pos]
                if t != 62 and pending and not self._up_pipe:
                    slot = pending.popleft()
                    if slot is None:
                        self._inflight -= 1
                    else:
                        self._special -= 1
                        if out is None:
                            out = []
                        out.append(buf[start:pos])
                        start = end
                        if slot.__class__ is int:
                            self._inflight -= 1
                            out.append(self._special_reply(slot, buf[pos:end]))
                        elif slot is not _DROP and not slot.done():
                            slot.set_result(buf[pos:end])
                        pos = end
                        continue
                # a plain reply, push frame, pipe-mode frame or unsolicited reply: passed on
                if t == 45 and (buf.startswith(b"-MOVED ", pos) or buf.startswith(b"-ASK ", pos)):
                    if out is None:
                        out = []
                    out.append(buf[start:pos])
                    out.append(self.door.rewrite_redirect(buf[pos:end]))
                    start = end
                pos = end
        except RespProtocolError as exc:
            log.error("client %d: bad reply from server node %s: %s", self._cid, self.door._server_label, exc)
            self._upstream_failed(self._up, f"protocol error: {exc}")  # type: ignore[arg-type]
            return
        self._pass_on(buf, out, start, pos, end)

    def _pass_on(self, buf: bytes, out: list[bytes] | None, start: int, pos: int, end: int) -> None:
        """After :meth:`_replies_exact` framed ``buf`` up to ``pos``: keep an incomplete reply
        (``end < 0``) for the next read, write what was framed (``out``: the pieces so far, when
        some replies were rewritten; ``buf[start:pos]`` is still to go), and end the timed sample
        or start a waiting barrier once nothing is in flight."""
        if end < 0:
            self._upbuf += buf[pos:]
            self._upneed = -end - pos
        if out is None:
            chunk = buf if start == 0 and pos == len(buf) else buf[start:pos]
        else:
            out.append(buf[start:pos])
            chunk = b"".join(out)
        if chunk and not self.closed:
            self.transport.write(chunk)  # type: ignore[union-attr]
        if self._inflight == 0:
            if self._sampled_at:
                self._end_sample()
            if self._barrier_job is not None:
                self._start_barrier()

    def _client_reply(self, slot: int | None, raw: bytes) -> bytes:
        """A forwarded reply as the client should see it."""
        if slot is None:
            if raw.startswith(b"-MOVED ") or raw.startswith(b"-ASK "):
                return self.door.rewrite_redirect(raw)
            return raw
        return self._special_reply(slot, raw)

    def _special_reply(self, slot: int, raw: bytes) -> bytes:
        if slot <= _S_REPLICAS:
            return self.door.rewrite_cluster(slot, raw)
        ok = not raw.startswith(b"-")
        if slot == _S_PIPE:
            self._up_pipe = True
        elif slot == _S_MULTI:  # (a successful MULTI also proves the client authenticated)
            self.in_multi = self.in_multi or ok
            self.authed = self.authed or ok
        elif slot == _S_ENDTX:
            self.in_multi = False
            self._tx_at_exec = {}
            if self._tx_marked:
                self._tx_marked = False
                return _unmark_replies(raw)
        elif slot == _S_RESET:
            self.in_multi = self._tx_marked = False
            self._tx_at_exec = {}
            self.authed = False
            self._forget_identity()
        elif slot == _S_CONFIG_SET:
            if ok and self.door.on_config_set is not None:
                self.door.on_config_set()
        elif slot == _S_MARKED:
            return _unmark_reply(raw)
        elif slot == _S_AUTH:
            user = self._auth_users.popleft() if self._auth_users else None
            # +OK (AUTH) or the HELLO map: authenticated (a +QUEUED inside MULTI is not)
            if raw.startswith(b"+OK") or raw[:1] in (b"*", b"%"):
                self.authed = True
                if user is not None:
                    self._forget_identity()
                    if self.ctx is not None:
                        self.ctx.user = user
        return raw

    def _forget_identity(self) -> None:
        if self.ctx is not None:
            self.ctx.user = None
            self.ctx.gears_peer = False

    @property
    def _cid(self) -> int:
        return self.ctx.id if self.ctx is not None else 0

    def _unavailable(self, reason: str) -> NodeUnavailable:
        return NodeUnavailable(f"ERR server node {self.door._server_label} unavailable ({reason})")

    def upstream_lost(self, up: _Upstream, exc: Exception | None) -> None:
        if up is self._up:
            self._upstream_failed(up, str(exc) if exc else "connection closed by the server node")

    def _upstream_failed(self, up: _Upstream, reason: str) -> None:
        """Answer every waiting reply slot with an error; close the client if its session is gone."""
        if up is not self._up:
            return
        self._up = None
        error = self._unavailable(reason)
        if up.established:
            log.warning("client %d: upstream connection to %s lost: %s", self._cid, self.door._server_label, reason)
        else:
            log.warning("client %d: cannot connect to server node %s: %s", self._cid, self.door._server_label, reason)
        up.close()
        replies = self._fail_slots(error)
        self._upbuf = bytearray()
        self._upneed = 0
        if self.closed:
            return
        if up.established or self._pipe:
            # The server ended the session (a protocol error it answered, CLIENT KILL, a
            # crash): a client of the server would see the connection close and nothing
            # more, so the requests still waiting get no made-up reply.
            self.transport.close()  # type: ignore[union-attr]
            return
        if replies:
            self.transport.write(replies)  # type: ignore[union-attr]
        if self._barrier_job is not None:
            self._start_barrier()

    def _fail_slots(self, error: NodeUnavailable) -> bytes:
        """Empty the slot queue: futures fail, client-facing slots get an error reply each."""
        line = encode_error(error)
        replies = []
        for slot in self._pending:
            if slot is None or slot.__class__ is int:
                replies.append(line)
            elif slot is not _DROP and not slot.done():
                slot.set_exception(error)
        self._pending.clear()
        self._auth_users.clear()
        self._inflight = 0
        self._special = 0
        self._sampled_at = 0.0
        return b"".join(replies)

    def _close_upstream(self) -> None:
        up, self._up = self._up, None
        if up is not None:
            self._fail_slots(self._unavailable("client connection closed"))
            up.close()

    def abort(self) -> None:
        """Close now (front door shutdown): cancel a running barrier, drop both connections."""
        task = self._barrier_task
        if task is not None:
            task.cancel()
        self._barrier_task = None
        self._close_upstream()
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ barriers

    def _barrier(self, job: Callable[[], Awaitable[bytes]]) -> None:
        """Hold the connection's input and run ``job`` once earlier replies are sent."""
        self._blocked = True
        self._barrier_job = job
        if self._inflight == 0:
            self._start_barrier()

    def _start_barrier(self) -> None:
        job, self._barrier_job = self._barrier_job, None
        assert job is not None
        self._barrier_task = asyncio.get_running_loop().create_task(self._run_barrier(job))

    async def _run_barrier(self, job: Callable[[], Awaitable[bytes]]) -> None:
        try:
            reply = await job()
        except asyncio.CancelledError:
            return
        finally:
            self._barrier_task = None
        if self.closed:
            self._close_upstream()
            return
        self.transport.write(reply)  # type: ignore[union-attr]
        if self._close_after:
            self.transport.close()  # type: ignore[union-attr]
            return
        self._blocked = False
        self.resume_reading("blocked")
        if self._inbuf and len(self._inbuf) >= self._need:
            data = bytes(self._inbuf)
            self._inbuf = bytearray()
            self._process(data)

    async def _check_auth(self) -> bool:
        """Ask the server node, on this client's connection, whether the client authenticated."""
        if not self.authed:
            self.authed = not (await self.roundtrip(_PING)).startswith(b"-NOAUTH")
        return self.authed

    async def _run_handler(self, handler: Handler, args: list[bytes]) -> bytes:
        observer = self.door.observer
        if observer is None:
            return await self._handle(handler, args)
        started = perf_counter()
        try:
            return await self._handle(handler, args)
        finally:
            observer.handled(args[0].upper().decode("utf-8", "replace"), perf_counter() - started)

    async def _run_info(self, args: list[bytes], raw: bytes) -> bytes:
        """``INFO``: the server's reply, with the node's ``# Gears`` section where asked for."""
        try:
            reply = await self.roundtrip(raw)
        except NodeUnavailable as exc:
            return encode_error(exc)
        sections = {arg.lower() for arg in args[1:]}
        if self.in_multi or reply[:1] not in (b"$", b"=") or (sections and not sections & _INFO_WITH_GEARS):
            return reply
        info_section = self.door.info_section
        assert info_section is not None
        try:
            section = (await info_section()).encode()
        except Exception:
            log.exception("client %d: the gears INFO section failed", self._cid)
            return reply
        return _info_with(reply, section, only=sections == {b"gears"})

    async def _handle(self, handler: Handler, args: list[bytes]) -> bytes:
        if self.in_multi:
            if getattr(handler, "at_exec", False):
                return await self._queue_at_exec(handler, args)
            form = getattr(handler, "transaction_form", None)
            if form is not None:
                try:
                    command = form(args)
                except GearsError as exc:
                    self._send(encode_command(args), _DROP)  # the EXEC fails, as after any queue-time error
                    return encode_error(exc)
                self._tx_marked = True
                self._forward(encode_command(command), None)  # the server's QUEUED is the reply
                return b""
            # Sent for its effect only: the server rejects the unknown command, so EXEC fails.
            self._send(encode_command(args), _DROP)
            own = getattr(handler, "transaction_error", None)
            return _error_line(own) if own else _NOT_IN_MULTI
        return await self._call_handler(handler, args)

    async def _call_handler(self, handler: Handler, args: list[bytes]) -> bytes:
        """Run ``handler`` after the authentication and authorization checks; its reply."""

        async def checked(ctx: ClientContext, args: list[bytes]) -> Any:
            if not getattr(handler, "before_auth", False):
                if not await self._check_auth():
                    return RawReply(_NOAUTH)
                if self.door.authorize is not None:
                    await self.door.authorize(ctx, args)
            return await handler(ctx, args)

        return await self._answer(args, checked, self.ctx, args)

    async def _queue_at_exec(self, handler: Handler, args: list[bytes]) -> bytes:
        """Queue a handler command to run at ``EXEC`` (see the module docstring). It is
        checked now, as the server checks a command's rights when it queues it: a
        refusal answers the error and makes the ``EXEC`` fail."""
        if self.door.authorize is not None:
            try:
                await self.door.authorize(self.ctx, args)  # type: ignore[arg-type]
            except Exception as exc:
                if not isinstance(exc, GearsError):
                    log.exception("client %d: checking %s failed", self._cid, args[0].decode("utf-8", "replace"))
                self._send(encode_command(args), _DROP)  # the EXEC fails, as after any queue-time error
                return encode_error(exc)
        token = _AT_EXEC_TOKEN + b"%d" % next(self._tx_tokens)
        self._tx_at_exec[b"$%d\r\n%s\r\n" % (len(token), token)] = partial(self._call_handler, handler, args)
        self._forward(encode_command([b"ECHO", token]), None)  # the server's QUEUED is the reply
        return b""

    async def _run_exec(self, raw: bytes) -> bytes:
        """``EXEC`` of a transaction with handler commands queued to run at ``EXEC``."""
        queued = self._tx_at_exec
        try:
            reply = self._special_reply(_S_ENDTX, await self.roundtrip(raw))
        except NodeUnavailable as exc:
            self.in_multi = False
            self._tx_at_exec = {}
            return encode_error(exc)
        parts = _exec_elements(reply)
        if parts is None:
            return reply
        for i, element in enumerate(parts[1:], 1):
            run = queued.pop(element, None)
            if run is not None:
                parts[i] = await run()
        return b"".join(parts)

    async def _run_intercept(self, args: list[bytes], raw: bytes, slot: int | None) -> bytes:
        interceptor = self.door.interceptor
        assert interceptor is not None

        async def intercepted(ctx: ClientContext, args: list[bytes]) -> Any:
            if not await self._check_auth():  # the server answers NOAUTH itself
                return RawReply(self._client_reply(slot, await self.roundtrip(raw)))
            value = await interceptor.before(ctx, args)
            if value is not None:
                return value
            try:
                reply = self._client_reply(slot, await self.roundtrip(raw))
            except NodeUnavailable as exc:
                reply = encode_error(exc)
            value = await interceptor.after(ctx, args, reply)
            return RawReply(reply) if value is None else value

        return await self._answer(args, intercepted, self.ctx, args)

    async def _answer(self, args: list[bytes], fn: Callable[..., Awaitable[Any]], *call_args: Any) -> bytes:
        """Await ``fn`` and encode its reply value or its exception."""
        try:
            value = await fn(*call_args)
            return encode(value)
        except GearsError as exc:
            return encode_error(exc)
        except hiredis.ReplyError as exc:
            return _error_line(str(exc))
        except Exception as exc:
            log.exception("client %d: %s failed", self._cid, args[0].decode("utf-8", "replace"))
            return encode_error(exc)


async def _constant(reply: bytes) -> bytes:
    return reply
