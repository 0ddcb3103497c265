"""RESP wire scanning for the front door: request framing, reply boundaries, reply trees.

The front door forwards bytes without decoding them. It needs three things from the
wire format, all here:

* :func:`scan_command` finds where a client's multibulk request ends and where its
  command name is, checking the framing like the server does (so a malformed or
  oversized request is rejected before it is buffered);
* :func:`split_inline` splits an inline request (``PING`` typed in telnet) the way
  the server does (needed only for the commands the front door answers itself);
* :func:`scan_reply` finds where one reply ends (RESP2 and RESP3 types
  ``+ - : $ * _ , # ( ! = % ~ > |``) so replies can be matched to requests and
  passed on as raw bytes;
* :func:`parse_tree` / :func:`dump_tree` turn one reply into a small typed tree and
  back, byte for byte, for the few replies the front door rewrites (``CLUSTER SLOTS``
  and friends).

Incomplete input is not an error: the scanners return ``-need``, the total buffer
length needed before scanning again can make progress.
"""

from __future__ import annotations

import re

__all__ = [
    "INLINE_BLANKS",
    "MAX_INLINE_LEN",
    "PROTO_MAX_BULK_LEN",
    "Node",
    "RespProtocolError",
    "dump_tree",
    "parse_tree",
    "scan_command",
    "scan_reply",
    "split_inline",
]

#: Largest bulk string a client may send (the server's default ``proto-max-bulk-len``).
PROTO_MAX_BULK_LEN = 512 * 1024 * 1024
#: Longest inline request or header line without a newline (the server's ``PROTO_INLINE_MAX_SIZE``).
MAX_INLINE_LEN = 64 * 1024
#: Largest multibulk argument count the server accepts.
_MAX_MULTIBULK = 2**31 - 1

_CRLF = b"\r\n"
_DOLLAR = 36  # ord("$")

# Reply type bytes, as ints (``buf[i]`` of a bytes object is an int).
_LINE_TYPES = frozenset(b"+-:_,#(")
_BULK_TYPES = frozenset(b"$!=")
_PAIR_TYPES = frozenset(b"%|")
_AGGREGATE_TYPES = frozenset(b"*~>%|")


class RespProtocolError(ValueError):
    """Input or a reply outside the framing the scanners accept; ``str()`` says why."""


# --------------------------------------------------------------------------- requests


#: Lengths as every server version reads them (its ``string2ll``): no sign but ``-``,
#: no leading zero, no blanks, at most 19 digits; range-checked after matching.
_LONG_LONG = re.compile(rb"0|-?[1-9][0-9]{0,18}")
_LL_MIN, _LL_MAX = -(2**63), 2**63 - 1


def _server_int(text: bytes) -> int | None:
    """``text`` as a long long the way the server reads lengths, or ``None``."""
    if _LONG_LONG.fullmatch(text) is None:
        return None
    value = int(text)
    return value if _LL_MIN <= value <= _LL_MAX else None


def _header(buf: bytes, p: int, n: int, what: str) -> tuple[int, int]:
    """Read the ``<type><integer>\\r\\n`` header at ``p``: ``(value, next_pos)``, or
    ``(0, -1)`` when it is not complete in ``buf[:n]`` yet."""
    e = buf.find(b"\r", p, n)
    if buf.find(b"\0", p, n if e < 0 else e) >= 0:
        raise RespProtocolError(f"NUL byte in a {what} line")  # the server never finds its end
    if e < 0 or e + 1 >= n:
        if n - p > MAX_INLINE_LEN:
            raise RespProtocolError(f"too big {what} line")
        return 0, -1
    if buf[e + 1] != 10:
        raise RespProtocolError("invalid CRLF in request")
    value = _server_int(buf[p + 1 : e])
    if value is None:
        raise RespProtocolError(f"invalid {what}")
    return value, e + 2


def scan_command(buf: bytes, pos: int, n: int) -> tuple[int, int, int]:
    """Frame one multibulk request starting at ``buf[pos] == ord("*")``.

    Returns ``(end, name_start, name_end)``: the request is ``buf[pos:end]`` and its
    command name ``buf[name_start:name_end]`` (empty for a count ``<= 0``, which the
    server skips without a reply). When the request is not complete in ``buf[:n]`` it
    returns ``(-need, 0, 0)`` where ``need`` is the buffer length required to go on.

    Framing is the strictest any server applies (headers ``*<n>\\r\\n`` and
    ``$<len>\\r\\n`` with strict decimal lengths, every bulk followed by ``\\r\\n``,
    bulks up to the default ``proto-max-bulk-len``). Input outside it raises
    :class:`RespProtocolError` as soon as it is seen: servers disagree about such
    input (Redis skips the two bytes after a bulk unread, Valkey's patch releases
    refuse them; a NUL hides a line's end from the server), so the front door does
    not frame it and lets the server judge it.
    """
    argc, p = _header(buf, pos, n, "multibulk length")
    if p < 0:
        return -(n + 1), 0, 0
    if argc > _MAX_MULTIBULK:
        raise RespProtocolError("invalid multibulk length")
    name_start = name_end = p
    for i in range(argc):
        if p >= n:
            return -(p + 1), 0, 0
        if buf[p] != _DOLLAR:
            raise RespProtocolError(f"expected '$', got '{chr(buf[p])}'")
        size, data = _header(buf, p, n, "bulk length")
        if data < 0:
            return -(n + 1), 0, 0
        if size < 0 or size > PROTO_MAX_BULK_LEN:
            raise RespProtocolError("invalid bulk length")
        if i == 0:
            name_start, name_end = data, data + size
        p = data + size + 2
        if p > n:
            return -p, 0, 0
        if buf[p - 2 : p] != b"\r\n":
            raise RespProtocolError("invalid CRLF in request")
    return p, name_start, name_end


#: What the server skips before an inline request's first argument (C ``isspace``).
INLINE_BLANKS = frozenset(b" \t\n\v\f\r")
#: What ends an unquoted inline argument.
_SEPARATORS = frozenset(b" \t\n\r\0")
_ESCAPES = {ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t", ord("b"): b"\b", ord("a"): b"\a"}
_HEX = frozenset(b"0123456789abcdefABCDEF")


def split_inline(line: bytes) -> list[bytes]:
    r"""Split an inline request line into arguments the way the server does.

    Arguments are separated by blanks; ``"double"`` quotes take ``\n``, ``\xHH`` ...
    escapes and ``'single'`` quotes take ``\'``; quoted and unquoted parts next to each
    other join into one argument (``"a"b`` is ``ab``, as Valkey 8+ reads it). Raises
    :class:`RespProtocolError` for an unterminated quote.

    The front door needs this only for the commands it answers or intercepts itself:
    every other inline request goes to the server as it came, and the server splits it.

    >>> split_inline(b'SET k "a b\x41"x \'it\\\'s\'')
    [b'SET', b'k', b'a bAx', b"it's"]
    """
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in INLINE_BLANKS:
            i += 1
        if i >= n:
            return args
        current = bytearray()
        while i < n and line[i] not in _SEPARATORS:
            c = line[i]
            if c in (34, 39):  # '"' or "'"
                i = _quoted(line, i + 1, current, c)
            else:
                current.append(c)
                i += 1
        args.append(bytes(current))


def _quoted(line: bytes, i: int, out: bytearray, quote: int) -> int:
    """Append the part quoted by ``quote`` (``"`` or ``'``) that starts after the quote at
    ``line[i - 1]``; return the index after its closing quote. Double quotes take
    ``\\xHH`` and backslash escapes, single quotes only ``\\'``."""
    n = len(line)
    while i < n:
        c = line[i]
        if quote == 34 and c == 92 and i + 3 < n and line[i + 1] == 120 and line[i + 2] in _HEX and line[i + 3] in _HEX:
            out.append(int(line[i + 2 : i + 4], 16))
            i += 4
        elif c == 92 and i + 1 < n and (quote == 34 or line[i + 1] == 39):
            out += _ESCAPES.get(line[i + 1], line[i + 1 : i + 2])
            i += 2
        elif c == quote:
            return i + 1
        else:
            out.append(c)
            i += 1
    raise RespProtocolError("unbalanced quotes in request")


# --------------------------------------------------------------------------- replies


def scan_reply(buf: bytes, pos: int) -> int:
    """Return the end offset of the reply starting at ``buf[pos]`` (``pos < len(buf)``).

    When the reply is incomplete, returns ``-need`` (``need > len(buf)``: the buffer
    length required before a new scan can get further). A RESP3 attribute (``|``) is
    scanned together with the value it annotates. Raises :class:`RespProtocolError`
    for an unknown type byte or a bad length.
    """
    t = buf[pos]
    e = buf.find(_CRLF, pos)
    if e < 0:
        return -(len(buf) + 1)
    if t == _DOLLAR:
        try:
            size = int(buf[pos + 1 : e])
        except ValueError:
            raise RespProtocolError("invalid bulk length in reply") from None
        if size < 0:
            return e + 2
        end = e + 4 + size
        return end if end <= len(buf) else -end
    if t in _LINE_TYPES:
        return e + 2
    return _scan_nested(buf, pos)


def _aggregate_length(buf: bytes, pos: int, e: int) -> int:
    """The element count of the aggregate header at ``pos`` (its CRLF at ``e``)."""
    try:
        return int(buf[pos + 1 : e])
    except ValueError:
        raise RespProtocolError("invalid aggregate length in reply") from None


def _scan_nested(buf: bytes, pos: int) -> int:
    n = len(buf)
    stack: list[int] = []
    remaining = 1  # values still to read at the current nesting level
    while True:
        e = buf.find(_CRLF, pos)
        if e < 0:  # (also when pos is at the end)
            return -(n + 1)
        t = buf[pos]
        if t in _LINE_TYPES:
            pos = e + 2
        elif t in _BULK_TYPES:
            try:
                size = int(buf[pos + 1 : e])
            except ValueError:
                raise RespProtocolError("invalid bulk length in reply") from None
            if size < 0:
                pos = e + 2
            else:
                pos = e + 4 + size
                if pos > n:
                    return -pos
        elif t in _AGGREGATE_TYPES:
            count = _aggregate_length(buf, pos, e)
            pos = e + 2
            if t in _PAIR_TYPES:
                count *= 2
            if count > 0:
                # "|": an attribute precedes the value it annotates (which is still to come)
                stack.append(remaining if t == 124 else remaining - 1)
                remaining = count
                continue
            if t == 124:
                continue
        else:
            raise RespProtocolError(f"unknown reply type byte {chr(t)!r}")
        remaining -= 1
        while remaining == 0:
            if not stack:
                return pos
            remaining = stack.pop()


# --------------------------------------------------------------------------- reply trees

#: One reply as a tree: ``(type_byte, payload)``. The payload is the text after the
#: type byte for line types, the data for bulk types (``None`` for a null bulk), a
#: list of child nodes for aggregates (maps and attributes flattened to key, value,
#: ...; ``None`` for a null array), and for an attribute ``(pairs, annotated_node)``.
Node = tuple[int, bytes | list["Node"] | tuple[list["Node"], "Node"] | None]


def parse_tree(buf: bytes) -> Node:
    """Parse one complete reply into a :data:`Node` tree (inverse of :func:`dump_tree`)."""
    node, end = _parse_at(buf, 0)
    if end != len(buf):
        raise RespProtocolError("trailing bytes after reply")
    return node


def _parse_at(buf: bytes, pos: int) -> tuple[Node, int]:
    t = buf[pos]
    e = buf.find(_CRLF, pos)
    if e < 0:
        raise RespProtocolError("incomplete reply")
    head = buf[pos + 1 : e]
    if t in _LINE_TYPES:
        return (t, head), e + 2
    if t in _BULK_TYPES:
        size = int(head)
        if size < 0:
            return (t, None), e + 2
        return (t, buf[e + 2 : e + 2 + size]), e + 4 + size
    if t in _AGGREGATE_TYPES:
        count = int(head)
        pos = e + 2
        if count < 0:
            return (t, None), pos
        if t in _PAIR_TYPES:
            count *= 2
        items: list[Node] = []
        for _ in range(count):
            item, pos = _parse_at(buf, pos)
            items.append(item)
        if t == 124:  # attribute: the annotated value follows
            value, pos = _parse_at(buf, pos)
            return (t, (items, value)), pos
        return (t, items), pos
    raise RespProtocolError(f"unknown reply type byte {chr(t)!r}")


def dump_tree(node: Node) -> bytes:
    """Encode a :data:`Node` tree back to RESP."""
    out: list[bytes] = []
    _dump_into(node, out)
    return b"".join(out)


def _dump_into(node: Node, out: list[bytes]) -> None:
    t, payload = node
    if payload is None:
        out.append(b"%c-1\r\n" % t)
    elif isinstance(payload, bytes):
        if t in _LINE_TYPES:
            out.append(b"%c%b\r\n" % (t, payload))
        else:
            out.append(b"%c%d\r\n%b\r\n" % (t, len(payload), payload))
    elif isinstance(payload, tuple):  # an attribute and the value it annotates
        pairs, value = payload
        out.append(b"|%d\r\n" % (len(pairs) // 2))
        for item in pairs:
            _dump_into(item, out)
        _dump_into(value, out)
    else:
        out.append(b"%c%d\r\n" % (t, len(payload) // 2 if t in _PAIR_TYPES else len(payload)))
        for item in payload:
            _dump_into(item, out)
