"""The gears node's slow log: its own slow ``RG.*``/``AI.*`` commands, merged into ``SLOWLOG``.

The server node cannot see the commands the front door answers itself, so the node
keeps its own entries, by the server's rules, and ``SLOWLOG`` through the front door
shows both logs as one (as RedisGears, a module, had its commands in the server's log):

* a command is logged when it took at least ``slowlog-log-slower-than`` microseconds
  (a negative value logs nothing), both read from the server node with ``CONFIG GET``;
  at most ``slowlog-max-len`` entries are kept;
* an entry has the server's shape: ``[id, unix time, duration in µs, arguments,
  client address, client name]``, its arguments cut like the server cuts them (at most
  32, each at most 128 bytes);
* node entries' ids count from :data:`NODE_ID_BASE`, so they never equal a server
  entry's id;
* ``SLOWLOG GET [count]`` answers the newest ``count`` entries (default 10, ``-1``:
  all) of the two logs together, newest first; ``SLOWLOG LEN`` counts the merged log
  (at most ``slowlog-max-len``); ``SLOWLOG RESET`` empties both.

The configuration is read again when it is a second old, and at once after a
``CONFIG SET`` went through this front door (:meth:`SlowLog.config_changed`).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["NODE_ID_BASE", "SlowEntry", "SlowLog", "merge_entries", "trim_arguments"]

#: The first id of a node entry (server ids count from 0 and never get near it).
NODE_ID_BASE = 1 << 48
#: How long a read of the server's slow log configuration is used (seconds).
CONFIG_MAX_AGE = 1.0
#: The server's limits on a logged command's arguments.
MAX_ARGS = 32
MAX_ARG_BYTES = 128

#: Reads ``CONFIG GET slowlog-*`` from the server node: its reply as a name → value mapping.
ConfigReader = Callable[[], Awaitable[dict[Any, Any]]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class SlowEntry:
    """One logged command, in the server's entry shape (see :meth:`reply`)."""

    id: int
    timestamp: int
    duration_us: int
    arguments: tuple[bytes, ...]
    client_address: str
    client_name: str

    def reply(self) -> list[Any]:
        """The entry as ``SLOWLOG GET`` answers it."""
        return [self.id, self.timestamp, self.duration_us, list(self.arguments), self.client_address, self.client_name]


def _cut(arg: bytes) -> bytes:
    if len(arg) <= MAX_ARG_BYTES:
        return arg
    return arg[:MAX_ARG_BYTES] + b"... (%d more bytes)" % (len(arg) - MAX_ARG_BYTES)


def trim_arguments(args: list[bytes]) -> tuple[bytes, ...]:
    """``args`` cut as the server cuts a logged command's arguments.

    >>> trim_arguments([b"GET", b"k"])
    (b'GET', b'k')
    >>> trimmed = trim_arguments([b"x"] * 40)
    >>> len(trimmed), trimmed[-1]
    (32, b'... (9 more arguments)')
    """
    if len(args) > MAX_ARGS:
        return (*map(_cut, args[: MAX_ARGS - 1]), b"... (%d more arguments)" % (len(args) - MAX_ARGS + 1))
    return tuple(map(_cut, args))


def merge_entries(server: list[list[Any]], node: list[SlowEntry], count: int) -> list[list[Any]]:
    """The newest ``count`` (``-1``: all) of the server's entries (newest first, as
    ``SLOWLOG GET`` answers them) and the node's (oldest first), newest first: by time,
    and within a second node entries after server ones, each log in its own order."""
    tagged = [(entry[1], 0, i, entry) for i, entry in enumerate(reversed(server))]
    tagged += [(entry.timestamp, 1, i, entry.reply()) for i, entry in enumerate(node)]
    tagged.sort(key=lambda t: t[:3], reverse=True)
    merged = [t[3] for t in tagged]
    return merged if count < 0 else merged[:count]


class SlowLog:
    """A node's own slow log (see the module docstring)."""

    def __init__(self, read_config: ConfigReader) -> None:
        self._read_config = read_config
        self._entries: deque[SlowEntry] = deque(maxlen=128)
        self._ids = itertools.count(NODE_ID_BASE)
        self._slower_than_us = 10_000
        self._read_at = float("-inf")

    @property
    def max_len(self) -> int:
        """``slowlog-max-len`` as last read."""
        return self._entries.maxlen or 0

    def config_changed(self) -> None:
        """Read the configuration again before the next decision."""
        self._read_at = float("-inf")

    async def _config(self) -> int:
        """``slowlog-log-slower-than`` (µs), read again once :data:`CONFIG_MAX_AGE` old."""
        now = time.monotonic()
        if now - self._read_at >= CONFIG_MAX_AGE:
            config = {_text(name): value for name, value in (await self._read_config()).items()}
            self._slower_than_us = int(config["slowlog-log-slower-than"])
            max_len = max(int(config["slowlog-max-len"]), 0)
            if max_len != self._entries.maxlen:
                self._entries = deque(self._entries, maxlen=max_len)
            self._read_at = now
        return self._slower_than_us

    async def record(
        self, args: list[bytes], duration_us: int, client_address: str, client_name: Callable[[], Awaitable[str]]
    ) -> bool:
        """Log a command that took ``duration_us`` if it was slow by the server's rule;
        whether it was logged. ``client_name`` is asked only then."""
        slower_than = await self._config()
        if slower_than < 0 or duration_us < slower_than or not self._entries.maxlen:
            return False
        entry = SlowEntry(
            next(self._ids), int(time.time()), duration_us, trim_arguments(args), client_address, await client_name()
        )
        self._entries.append(entry)
        return True

    async def entries(self) -> list[SlowEntry]:
        """The node's entries, oldest first (configuration read again if it is old)."""
        await self._config()
        return list(self._entries)

    def reset(self) -> None:
        """Drop every node entry."""
        self._entries.clear()
