"""The front door's RESP scanners (gears/wire/respparse.py): request framing, reply
boundaries at every split point (RESP2 and RESP3), reply trees, inline splitting."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gears.wire.respparse import (
    MAX_INLINE_LEN,
    RespProtocolError,
    dump_tree,
    parse_tree,
    scan_command,
    scan_reply,
    split_inline,
)


def request(*args: bytes) -> bytes:
    """A multibulk request, framed by hand (independent of any client library)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


# --------------------------------------------------------------------- replies
@pytest.mark.parametrize(
    "reply",
    [
        b"+OK\r\n",
        b"-ERR x\r\n",
        b":12\r\n",
        b"$-1\r\n",
        b"$0\r\n\r\n",
        b"$6\r\na\r\nb\r\n\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
        b"_\r\n",
        b",1.5\r\n",
        b"#t\r\n",
        b"(123\r\n",
        b"!3\r\nerr\r\n",
        b"=7\r\ntxt:abc\r\n",
        b"%1\r\n+k\r\n*2\r\n:1\r\n:2\r\n",
        b"~2\r\n+a\r\n+b\r\n",
        b">3\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n_\r\n",
        b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n",
    ],
)
def test_scan_reply_frames_every_type(reply: bytes) -> None:
    assert scan_reply(reply + b"+NEXT\r\n", 0) == len(reply)
    for cut in range(1, len(reply)):
        need = scan_reply(reply[:cut], 0)
        assert need < 0 and -need > cut, (reply, cut)
    assert dump_tree(parse_tree(reply)) == reply


_line = st.binary(max_size=12).filter(lambda b: b"\r" not in b and b"\n" not in b)
_scalars = st.one_of(
    st.tuples(st.sampled_from(b"+-:_,#("), _line).map(lambda t: b"%c%b\r\n" % t),
    st.tuples(st.sampled_from(b"$!="), st.binary(max_size=20)).map(lambda t: b"%c%d\r\n%b\r\n" % (t[0], len(t[1]), t[1])),
    st.just(b"$-1\r\n"),
    st.just(b"*-1\r\n"),
)


def _aggregates(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    items = st.lists(children, max_size=4)
    pairs = st.lists(st.tuples(children, children), max_size=3)
    return st.one_of(
        st.tuples(st.sampled_from(b"*~>"), items).map(lambda t: b"%c%d\r\n" % (t[0], len(t[1])) + b"".join(t[1])),
        pairs.map(lambda ps: b"%%%d\r\n" % len(ps) + b"".join(k + v for k, v in ps)),
        # an attribute, scanned together with the value it annotates
        st.tuples(pairs.filter(bool), children).map(
            lambda t: b"|%d\r\n" % len(t[0]) + b"".join(k + v for k, v in t[0]) + t[1]
        ),
    )


replies = st.recursive(_scalars, _aggregates, max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(reply=replies)
def test_every_split_point_of_a_reply_asks_for_more_and_the_whole_is_one_reply(reply: bytes) -> None:
    assert scan_reply(reply, 0) == len(reply)
    for cut in range(1, len(reply)):
        need = scan_reply(reply[:cut], 0)
        # incomplete: a negative need, beyond what is there and never beyond the reply
        assert need < 0 and cut < -need <= len(reply), (reply, cut, need)
    assert dump_tree(parse_tree(reply)) == reply


@settings(max_examples=60, deadline=None)
@given(stream=st.lists(replies, min_size=1, max_size=4), chunk=st.integers(min_value=1, max_value=7))
def test_a_reader_fed_in_chunks_frames_each_reply(stream: list[bytes], chunk: int) -> None:
    """As the front door reads upstream: scan only once the buffer reached the length
    the last scan asked for; every reply comes out whole and in order."""
    data = b"".join(stream)
    buf, framed, wanted = b"", [], 0
    for start in range(0, len(data), chunk):
        buf += data[start : start + chunk]
        while buf and len(buf) >= wanted:
            end = scan_reply(buf, 0)
            if end < 0:
                wanted = -end
                break
            framed.append(buf[:end])
            buf, wanted = buf[end:], 0
    assert framed == stream and buf == b""


@pytest.mark.parametrize(
    "reply, message",
    [
        (b"$x\r\nab\r\n", "invalid bulk length in reply"),
        (b"*1\r\n$y\r\n", "invalid bulk length in reply"),
        (b"*z\r\n", "invalid aggregate length in reply"),
        (b"?1\r\n", "unknown reply type byte '?'"),
        (b"*1\r\n?1\r\n", "unknown reply type byte '?'"),
    ],
)
def test_bad_replies_name_what_is_wrong(reply: bytes, message: str) -> None:
    with pytest.raises(RespProtocolError, match=message):
        scan_reply(reply, 0)


def test_parse_tree_shapes_and_errors() -> None:
    assert parse_tree(b"*2\r\n+a\r\n$-1\r\n") == (ord("*"), [(ord("+"), b"a"), (ord("$"), None)])
    assert parse_tree(b"|1\r\n+k\r\n:1\r\n+v\r\n") == (ord("|"), ([(ord("+"), b"k"), (ord(":"), b"1")], (ord("+"), b"v")))
    assert parse_tree(b"%1\r\n+k\r\n+v\r\n") == (ord("%"), [(ord("+"), b"k"), (ord("+"), b"v")])
    with pytest.raises(RespProtocolError, match="trailing bytes after reply"):
        parse_tree(b"+a\r\n+b\r\n")
    with pytest.raises(RespProtocolError, match="incomplete reply"):
        parse_tree(b"+a")


# -------------------------------------------------------------------- requests
def test_scan_command_framing_and_limits() -> None:
    data = request(b"SET", b"key", b"value") + b"*1\r\n$4\r\nPING\r\n"
    end, ns, ne = scan_command(data, 0, len(data))
    assert data[ns:ne] == b"SET" and data[end:].startswith(b"*1\r\n")
    assert scan_command(data[:10], 0, 10)[0] < 0
    header = b"*2\r\n$3\r\nSET\r\n$100\r\n"
    assert scan_command(header, 0, len(header))[0] == -(len(header) + 102)
    with pytest.raises(RespProtocolError, match="invalid bulk length"):
        scan_command(b"*1\r\n$999999999999\r\n", 0, 19)
    with pytest.raises(RespProtocolError, match="invalid multibulk length"):
        scan_command(b"*x\r\n", 0, 4)
    with pytest.raises(RespProtocolError, match="expected '\\$', got ':'"):
        scan_command(b"*1\r\n:1\r\n", 0, 8)


@settings(max_examples=150, deadline=None)
@given(args=st.lists(st.binary(max_size=30), min_size=1, max_size=5), offset=st.binary(max_size=5))
def test_every_split_point_of_a_request_asks_for_more(args: list[bytes], offset: bytes) -> None:
    """A request after ``offset`` bytes of earlier input, scanned from its own start."""
    data = offset + request(*args)
    pos = len(offset)
    end, name_start, name_end = scan_command(data, pos, len(data))
    assert end == len(data) and data[name_start:name_end] == args[0]
    for cut in range(pos + 1, len(data)):
        need = scan_command(data, pos, cut)[0]
        assert need < 0 and cut < -need <= len(data), (args, cut, need)


def test_a_zero_count_request_has_no_name() -> None:
    assert scan_command(b"*0\r\n", 0, 4) == (4, 4, 4)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"*1\r\n$3\r\nGETxx", "invalid CRLF in request"),
        (b"*1\rx", "invalid CRLF in request"),
        (b"*1\r\n$01\r\na\r\n", "invalid bulk length"),
        (b"*+1\r\n", "invalid multibulk length"),
        (b"*1\0\r\n", "NUL byte in a multibulk length line"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
    ],
)
def test_bad_requests_name_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(RespProtocolError, match=message):
        scan_command(data, 0, len(data))


def test_an_endless_header_line_is_refused() -> None:
    data = b"*" + b"1" * (MAX_INLINE_LEN + 1)
    with pytest.raises(RespProtocolError, match="too big multibulk length line"):
        scan_command(data, 0, len(data))


# ---------------------------------------------------------------------- inline
def test_split_inline_quotes() -> None:
    assert split_inline(b'SET  a "x y\\n\\x41" \'it\\\'s\'') == [b"SET", b"a", b"x y\nA", b"it's"]
    assert split_inline(b"   ") == []
    with pytest.raises(RespProtocolError, match="unbalanced quotes"):
        split_inline(b'SET a "x')


@pytest.mark.parametrize(
    "line, words",
    [
        (b"PING", [b"PING"]),
        (b"\tGET   k \r", [b"GET", b"k"]),
        (b'ECHO ""', [b"ECHO", b""]),
        (b"ECHO '\\n'", [b"ECHO", b"\\n"]),  # single quotes keep a backslash-n as it is
        (b'ECHO "\\xzz"', [b"ECHO", b"xzz"]),  # not a hex escape: the backslash goes
    ],
)
def test_split_inline_like_the_server(line: bytes, words: list[bytes]) -> None:
    assert split_inline(line) == words


def test_quoted_and_unquoted_parts_join_into_one_argument() -> None:
    assert split_inline(b'SET "a"b c\'d\'') == [b"SET", b"ab", b"cd"]
