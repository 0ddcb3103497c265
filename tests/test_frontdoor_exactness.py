"""The front door is invisible on the wire: byte-identical replies, however input is cut.

Two kinds of checks:

* **Differential, against the real server** (a 1-shard cluster of this module's own).
  Hypothesis makes streams of pipelined requests (strings, lists, hashes, binary and
  large values, ``ECHO`` with CRLF inside, ``PING``, transactions, inline requests with
  every quoting style, blank lines, empty multibulks, RESP3 after ``HELLO 3``, and a
  malformed tail), cuts each into reads at random points with short pauses between
  writes, and sends it once to the server node and once to its front door, with the
  same keys reset before each. The bytes that come back must be equal (the ``HELLO``
  reply aside: it names the connection's id).
* **The scanners against hiredis** (no server): :func:`gears.wire.respparse.scan_command`
  and :func:`gears.wire.respparse.scan_reply` find the same message boundaries as hiredis's
  reader on generated streams, incomplete prefixes are never taken for whole
  messages, and the fast path's boundary probe is right at every cut.

``GEARS_FUZZ_EXAMPLES`` raises the example counts (the test command uses small ones).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gears_cluster import launcher
from conftest import free_base_port, launched_cluster
from gears.node.frontdoor import _INCOMPLETE, _ends_on_boundary, _reader
from gears.wire.respparse import Node, dump_tree, scan_command, scan_reply

HOST = "127.0.0.1"
EXAMPLES = int(os.environ.get("GEARS_FUZZ_EXAMPLES", "0"))


def examples(default: int) -> int:
    """The example count of a property: ``default``, or ``GEARS_FUZZ_EXAMPLES`` when set."""
    return EXAMPLES or default


# --------------------------------------------------------------------------- the wire


def pack(*args: bytes | str | int) -> bytes:
    """One multibulk request."""
    return hiredis.pack_command(args)


def replies_until_close_or(sock: socket.socket, marker: bytes, timeout: float = 20.0) -> bytes:
    """Everything the peer sends until its last reply is ``marker`` or it closes."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(marker) or not _frames_end_at(data, len(data)):
        assert time.monotonic() < deadline, f"no end marker within {timeout} s; got {data[-200:]!r}"
        try:
            chunk = sock.recv(1 << 16)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return data + b"<closed>"
        data += chunk
    return data


def _frames_end_at(data: bytes, end: int) -> bool:
    pos = 0
    while 0 <= pos < end:
        pos = scan_reply(data, pos)
    return pos == end


def send_in_pieces(port: int, stream: bytes, cuts: list[int], pauses: list[float], marker_request: bytes,
                   marker_reply: bytes) -> bytes:
    """Send ``stream`` cut at ``cuts`` (pausing between writes), then the marker request
    (if any); return every byte that came back (until the marker's reply, or the close)."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(stream))), len(stream)]
        try:
            for i, (start, end) in enumerate(zip(bounds, bounds[1:])):
                sock.sendall(stream[start:end])
                if pauses:
                    time.sleep(pauses[i % len(pauses)])
            if marker_request:
                sock.sendall(marker_request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed after a protocol error: what came back before is compared
        return replies_until_close_or(sock, marker_reply)


def split_replies(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        end = scan_reply(data, pos)
        if end < 0:
            out.append(data[pos:])
            break
        out.append(data[pos:end])
        pos = end
    return out


# --------------------------------------------------------------------------- requests

KEY_NAMES = ("s1", "s2", "n", "l", "h")
#: Keys are written with this tag; each run replaces it with one of the same length
#: (so request headers stay right).
TAG = b"@@@@@@@@"


def key(name: str) -> bytes:
    return b"{fz}" + TAG + b":" + name.encode()

SAFE = st.binary(min_size=0, max_size=40)
TEXTY = st.text(alphabet=st.sampled_from(list("abc xyz\"'\\\t\r\n=:_-{}\x01é")), max_size=20).map(str.encode)
BIG = st.integers(min_value=20_000, max_value=300_000).map(lambda n: (b"0123456789abcdef" * (n // 16 + 1))[:n])
VALUES = st.one_of(SAFE, SAFE, TEXTY, st.just(b"a\r\nb\r\n"), st.just(b"*1\r\n$4\r\nPING\r\n"), BIG)


@st.composite
def commands(draw: st.DrawFn) -> list[bytes]:
    """One request's arguments (names like ``@l`` are key placeholders)."""
    value = draw(VALUES)
    field = draw(st.sampled_from([b"f1", b"f2", b"f3"]))
    string_key = draw(st.sampled_from([key("s1"), key("s2")]))
    choice = draw(st.integers(0, 22))
    table: list[list[bytes]] = [
        [b"SET", string_key, value],
        [b"GET", string_key],
        [b"APPEND", string_key, value],
        [b"STRLEN", string_key],
        [b"DEL", string_key],
        [b"EXISTS", string_key, key("l")],
        [b"INCR", key("n")],
        [b"INCRBY", key("n"), draw(st.sampled_from([b"5", b"-3", b"x", b"99999999999999999999"]))],
        [b"RPUSH", key("l"), value, *draw(st.lists(SAFE, max_size=4))],
        [b"LRANGE", key("l"), b"0", b"-1"],
        [b"LLEN", key("l")],
        [b"LPOP", key("l")],
        [b"HSET", key("h"), field, value],
        [b"HGETALL", key("h")],
        [b"HGET", key("h"), field],
        [b"HLEN", key("h")],
        [b"ECHO", value],
        [b"PING"],
        [b"PING", value],
        [b"GET", key("l")],  # WRONGTYPE once the list exists
        [b"NOSUCHCOMMAND", value[:10]],
        [b"TYPE", draw(st.sampled_from([key("s1"), key("l"), key("h"), key("n")]))],
        [b"GETRANGE", string_key, b"0", draw(st.sampled_from([b"3", b"-1", b"100000"]))],
    ]
    return table[choice]


def quote_inline(arg: bytes, style: int) -> bytes:
    """``arg`` written for an inline request line in one of the server's quoting styles."""
    if style == 0 and arg and not any(c in b" \t\r\n\"'\\\x00\x0b\x0c" for c in arg):
        return arg
    if style == 1 and b"'" not in arg and b"\\" not in arg and not any(c in b"\r\n\x00" for c in arg):
        return b"'" + arg + b"'"
    out = bytearray(b'"')
    for c in arg:
        if c in b'"\\':
            out += b"\\" + bytes([c])
        elif 32 <= c < 127:
            out.append(c)
        else:
            out += b"\\x%02x" % c
    return bytes(out + b'"')


@st.composite
def request_bytes(draw: st.DrawFn, args: list[bytes]) -> bytes:
    """``args`` as a multibulk request or, for short arguments, an inline line."""
    inline_ok = sum(len(a) for a in args) < 2000
    if not inline_ok or draw(st.integers(0, 3)) > 0:
        return pack(*args)
    styles = draw(st.lists(st.integers(0, 2), min_size=len(args), max_size=len(args)))
    sep = draw(st.sampled_from([b" ", b"  ", b"\t", b" \t "]))
    lead = draw(st.sampled_from([b"", b" ", b"\t"]))
    end = draw(st.sampled_from([b"\r\n", b"\n", b" \r\n"]))
    return lead + sep.join(quote_inline(a, s) for a, s in zip(args, styles)) + end


#: Inputs the server refuses, or one server version reads and another refuses (Valkey's
#: patch releases check the CRLF after a bulk, Redis skips it); each ends a stream, is
#: sent in one write, and nothing is sent after it (a close with unread input resets the
#: connection, and a reset may drop replies not yet read, on either path).
MALFORMED_TAILS = [
    b"*abc\r\n",
    b"*1\r\n:1\r\n",
    b"*2\r\n$3\r\nGET\r\n+a\r\n",
    b"*1\r\n$-1\r\n",
    b"*1\r\n$x\r\n",
    b"*+1\r\n$4\r\nPING\r\n",
    b"*01\r\n$4\r\nPING\r\n",
    b"*1\r\n$04\r\nPING\r\n",
    b'ECHO "abc\r\n',
    b"ECHO 'abc\r\n",
    b"*1\r\n$999999999999\r\n",
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$600000000\r\n",
    b"*1\r\n\r\n",
    b"*1\r\n*1\r\n$4\r\nPING\r\n",
    b"*1\rX$4\rXPING\r\n",  # Redis reads these two, Valkey's patch releases refuse them
    b"*1\r\n$4\r\nPINGxx",
    # The server refuses an unended line once more than 64 KB of it are buffered: sent
    # whole, the refusal comes as the last byte is read (earlier, it would close with
    # input unread, and the reset that sends may drop replies on either path).
    b"ECHO a\x00b\r\n".ljust(65_537, b"x"),
    b"ECHO ".ljust(65_537, b"a"),
]
#: Odd inputs every server accepts (without closing): the front door must count them the same.
ODD_BUT_ACCEPTED = [
    b"*0\r\n",
    b"*-1\r\n",
    b"*-7\r\n",
    b"\r\n",
    b"   \r\n",
    b"\x0b\x0c\r\n",
    b"\n",
    b'ECHO "a"b\r\n',
    b"ECHO 'it''s'\r\n",
    b'ECHO a"b c"d\r\n',
    b"ECHO a\rb\r\n",
    b'ECHO "a\\"\r\n',
    b'ECHO "\\xff"\r\n',
    b"$4\r\nPING\r\n",
    b"+PING\r\n",
    b":1\r\n",
    b"*2\r\n$4\r\nECHO\r\n$3\r\n\r\n*\r\n",
]


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, bool, int]:
    """A pipelined client stream: ``(stream, starts_with_hello3, length of its malformed
    tail)`` (``0``: none)."""
    parts: list[bytes] = []
    hello = draw(st.booleans())
    if hello:
        parts.append(pack("HELLO", "3"))
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            parts.append(draw(st.sampled_from(ODD_BUT_ACCEPTED)))
        elif kind == 1:
            inner = [draw(request_bytes(draw(commands()))) for _ in range(draw(st.integers(0, 3)))]
            parts.append(b"".join([pack("MULTI"), *inner, pack(draw(st.sampled_from(["EXEC", "DISCARD"])))]))
        else:
            parts.append(draw(request_bytes(draw(commands()))))
    tail = draw(st.sampled_from(MALFORMED_TAILS)) if draw(st.integers(0, 4)) == 0 else b""
    return b"".join(parts) + tail, hello, len(tail)


@st.composite
def cut_plans(draw: st.DrawFn, length: int) -> tuple[list[int], list[float]]:
    """Where a stream of ``length`` bytes is cut into writes, and the pauses between them."""
    style = draw(st.integers(0, 4))
    if style == 0:
        step = draw(st.sampled_from([1, 2, 3, 7, 1448]))
        cuts = list(range(step, length, step))[:400]
    else:
        cuts = draw(st.lists(st.integers(1, max(1, length - 1)), max_size=12))
    pauses = draw(st.lists(st.sampled_from([0.0, 0.0005, 0.002]), min_size=1, max_size=4))
    return cuts, pauses


# --------------------------------------------------------------------------- differential


class Pair:
    """A server node and its front door, with the keys of one example reset between runs."""

    def __init__(self, state: launcher.ClusterState) -> None:
        self.door = state.ports[0]
        self.server = state.server_ports[0]
        self.control = state.server_client(0)
        self.counter = 0

    def both(self, stream: bytes, cuts: list[int], pauses: list[float], closes: bool = False) -> tuple[bytes, bytes]:
        """The bytes the server node and the front door answer to ``stream`` (``closes``:
        the stream makes the server close the connection, read until then)."""
        self.counter += 1
        tag = b"%08x" % self.counter
        stream = stream.replace(TAG, tag)
        keys = {name: key(name).replace(TAG, tag) for name in KEY_NAMES}
        marker = b"end-of-" + tag
        marker_request, marker_reply = pack("ECHO", marker), b"$%d\r\n%b\r\n" % (len(marker), marker)
        if closes:
            marker_request, marker_reply = b"", b"(no such reply)"
        out = []
        for port in (self.server, self.door):
            self.control.delete(*keys.values())
            out.append(send_in_pieces(port, stream, cuts, pauses, marker_request, marker_reply))
        self.control.delete(*keys.values())
        return out[0], out[1]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = free_base_port(12801, 1)
    with launched_cluster(tmp_path_factory.mktemp("exactness"), masters=1, base_port=base, what="exactness") as state:
        pair = Pair(state)
        yield pair
        pair.control.close()


def assert_same_bytes(direct: bytes, via_door: bytes, hello: bool, stream: bytes) -> None:
    """Equal replies; the first one (``HELLO``'s, naming the connection id) only in shape."""
    if hello:
        first_direct, first_door = split_replies(direct)[:1], split_replies(via_door)[:1]
        assert [r[:1] for r in first_direct] == [r[:1] for r in first_door]
        direct, via_door = direct[len(b"".join(first_direct)):], via_door[len(b"".join(first_door)):]
    assert via_door == direct, f"stream {stream[:300]!r}"


@settings(max_examples=examples(80), deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(data=st.data())
def test_any_stream_cut_anywhere_gets_the_servers_bytes(pair: Pair, data: st.DataObject) -> None:
    stream, hello, tail = data.draw(streams())
    cuts, pauses = data.draw(cut_plans(len(stream)))
    if tail:  # a malformed tail goes in one write: cut inside it, the server would refuse
        # it and close while its rest is still coming, and the reset that sends may drop
        # replies not yet read, on either path
        cuts = [c for c in cuts if c <= len(stream) - tail] + [len(stream) - tail]
    direct, via_door = pair.both(stream, cuts, pauses, closes=bool(tail))
    assert_same_bytes(direct, via_door, hello, stream)


MIXED = (
    pack("SET", key("s1"), "v" * 300) + b"PING\r\n" + pack("RPUSH", key("l"), *[f"i{i}" for i in range(50)])
    + b'ECHO "a b"c\r\n' + b"*0\r\n" + pack("HSET", key("h"), "f1", "x\r\ny") + b"\r\n" + pack("HGETALL", key("h"))
    + pack("MULTI") + pack("INCR", key("n")) + pack("GET", key("l")) + pack("EXEC") + pack("LRANGE", key("l"), 0, -1)
)


@pytest.mark.parametrize("resp3", [False, True])
def test_every_two_piece_cut_of_a_mixed_stream(pair: Pair, resp3: bool) -> None:
    """Cut after every byte (the first piece alone in one read): the same replies each time."""
    stream = (pack("HELLO", "3") if resp3 else b"") + MIXED
    for cut in range(1, len(stream)):
        direct, via_door = pair.both(stream, [cut], [0.002])
        assert_same_bytes(direct, via_door, resp3, stream)
        assert not via_door.endswith(b"<closed>"), cut


def test_the_issue_reproduction_answers_both_sets(pair: Pair) -> None:
    """A read that ends right after a ``*`` (or a ``$``) used to drop the connection."""
    for first, second in [
        (b"*3\r\n$3\r\nSET\r\n$6\r\nj{06S}\r\n$1\r\nv\r\n*", b"3\r\n$3\r\nSET\r\n$6\r\nk{06S}\r\n$5\r\nhello\r\n"),
        (b"*3\r\n$3\r\nSET\r\n$6\r\nj{06S}\r\n$1\r\nv\r\n*3\r\n$", b"3\r\nSET\r\n$6\r\nk{06S}\r\n$5\r\nhello\r\n"),
        (b"*3\r\n$3\r\nSET\r\n$6\r\nj{06S}\r\n$1\r\nv\r\n*3\r\n$3\r\nSET\r\n$", b"6\r\nk{06S}\r\n$5\r\nhello\r\n"),
    ]:
        for _ in range(2):  # the second time, SET is a known plain name: the fast path
            with socket.create_connection((HOST, pair.door), timeout=5) as sock:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.sendall(first)
                time.sleep(0.05)
                sock.sendall(second)
                assert replies_until_close_or(sock, b"+OK\r\n+OK\r\n") == b"+OK\r\n+OK\r\n"
    pair.control.delete("j{06S}", "k{06S}")


def test_pipelined_writes_in_mss_segments_lose_nothing(pair: Pair) -> None:
    """1,000 pipelined HSETs and an RPUSH of 1,000 items, sent in 1,448-byte segments."""
    stream = pack("RPUSH", key("l"), *[f"item-{i}" for i in range(1000)])
    stream += b"".join(pack("HSET", key("h"), f"field-{i}", f"value-{i}") for i in range(1000))
    stream += pack("LLEN", key("l")) + pack("HLEN", key("h"))
    cuts = list(range(1448, len(stream), 1448))
    direct, via_door = pair.both(stream, cuts, [0.0005])
    assert via_door == direct
    replies = split_replies(via_door)
    assert replies[0] == b":1000\r\n" and replies[-3:-1] == [b":1000\r\n", b":1000\r\n"]


def test_too_big_inline_request_is_refused_like_the_server(pair: Pair) -> None:
    """Over 64 KB of an inline request without its end: the server's error and close."""
    for stream in (b"ECHO ".ljust(65_537, b"a"), pack("PING") + b"ECHO ".ljust(65_537, b"a")):
        direct, via_door = pair.both(stream, [], [], closes=True)
        assert direct.endswith(b"-ERR Protocol error: too big inline request\r\n<closed>"), direct[:80]
        assert via_door == direct
    ok_line = b"ECHO " + b"a" * 60_000 + b"\r\n"
    direct, via_door = pair.both(ok_line, [], [])
    assert via_door == direct and direct.startswith(b"$60000\r\n")


def test_a_nul_in_a_request_line_stalls_like_the_server(pair: Pair) -> None:
    """The server never finds the end of such a line: no reply, until over 64 KB of it
    are buffered (then its error and a close)."""
    line = b"ECHO a\x00b\r\n"
    for port in (pair.server, pair.door):
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.sendall(pack("PING") + line + pack("PING"))
            assert replies_until_close_or(sock, b"+PONG\r\n") == b"+PONG\r\n"
            sock.sendall(b"x" * (65_537 - len(line) - len(pack("PING"))))
            until_closed = replies_until_close_or(sock, b"(no such reply)")
            assert until_closed == b"-ERR Protocol error: too big inline request\r\n<closed>"


# --------------------------------------------------------------------------- scanners vs hiredis

ARGS = st.lists(st.binary(max_size=30), min_size=1, max_size=6)


@settings(max_examples=examples(300), deadline=None)
@given(requests=st.lists(ARGS, min_size=1, max_size=8), data=st.data())
def test_scan_command_frames_like_hiredis(requests: list[list[bytes]], data: st.DataObject) -> None:
    stream = b"".join(pack(*args) for args in requests)
    reader = _reader()
    reader.feed(stream)
    parsed = list(iter(reader.gets, _INCOMPLETE))
    assert parsed == requests
    ends, pos = [], 0
    while pos < len(stream):
        end, name_start, name_end = scan_command(stream, pos, len(stream))
        assert stream[name_start:name_end] == requests[len(ends)][0]
        ends.append(end)
        pos = end
    assert len(ends) == len(requests)
    cut = data.draw(st.integers(0, len(stream) - 1))
    start = max([0, *[e for e in ends if e <= cut]])
    if start < cut:
        need = scan_command(stream[:cut], start, cut)[0]
        assert need < 0 and -need > cut


LEAVES = st.one_of(
    st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b).map(lambda b: (ord("+"), b)),
    st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b).map(lambda b: (ord("-"), b"ERR " + b)),
    st.integers(-(2**63), 2**63 - 1).map(lambda i: (ord(":"), b"%d" % i)),
    st.binary(max_size=40).map(lambda b: (ord("$"), b)),
    st.just((ord("$"), None)),
    st.just((ord("_"), b"")),
    st.sampled_from([b"t", b"f"]).map(lambda b: (ord("#"), b)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: (ord(","), repr(f).encode())),
    st.integers(-(10**30), 10**30).map(lambda i: (ord("("), b"%d" % i)),
    st.binary(max_size=20).map(lambda b: (ord("="), b"txt:" + b)),
)


def _aggregates(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.lists(children, max_size=4).map(lambda items: (ord("*"), items)),
        st.lists(children, max_size=4).map(lambda items: (ord("~"), items)),
        st.lists(st.tuples(LEAVES, children), max_size=3).map(
            lambda pairs: (ord("%"), [x for pair in pairs for x in pair])),
        st.just((ord("*"), None)),
    )


REPLIES = st.recursive(LEAVES, _aggregates, max_leaves=12)


@settings(max_examples=examples(300), deadline=None)
@given(replies=st.lists(REPLIES, min_size=1, max_size=6), data=st.data())
def test_scan_reply_frames_like_hiredis(replies: list[Node], data: st.DataObject) -> None:
    encoded = [dump_tree(r) for r in replies]
    stream = b"".join(encoded)
    reader = _reader()
    reader.feed(stream)
    assert len(list(iter(reader.gets, _INCOMPLETE))) == len(replies)
    assert not reader.has_data()
    pos = 0
    for one in encoded:
        end = scan_reply(stream, pos)
        assert stream[pos:end] == one
        pos = end
    cut = data.draw(st.integers(1, len(stream)))
    start = 0
    for one in encoded:
        if start + len(one) > cut > start:
            need = scan_reply(stream[:cut], start)
            assert need < 0 and -need > cut
            break
        start += len(one)


@settings(max_examples=examples(200), deadline=None)
@given(requests=st.lists(ARGS, min_size=1, max_size=5))
def test_the_fast_path_boundary_probe_is_right_at_every_cut(requests: list[list[bytes]]) -> None:
    """hiredis and the sentinel say "ended on a boundary" exactly at request ends."""
    encoded = [pack(*args) for args in requests]
    stream = b"".join(encoded)
    boundaries = {sum(len(e) for e in encoded[:i]) for i in range(1, len(encoded) + 1)}
    for cut in range(1, len(stream) + 1):
        reader = _reader()
        try:
            reader.feed(stream[:cut])
            whole = list(iter(reader.gets, _INCOMPLETE))
        except hiredis.ProtocolError:  # pragma: no cover - hiredis frames valid input
            raise
        probe = bool(whole) and not reader.has_data() and _ends_on_boundary(reader)
        assert probe == (cut in boundaries), cut
