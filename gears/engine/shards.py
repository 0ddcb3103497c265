"""Which shard holds what: Redis Cluster slot maths and the shard map.

``key_slot`` follows the Redis Cluster specification (CRC16-CCITT/XMODEM of the
``{hashtag}`` part when there is a non-empty one, modulo 16384).

``hashtag_for_slot(slot)`` returns the first three-character string over
``0-9A-Za-z`` (in that order) whose slot is ``slot``. Every slot has one, and slot 0
gives ``'06S'``, the same hashtag RedisGears 1.2 hands out for slot 0, so scripts that
hard-code ``{06S}`` keep working.

:class:`ShardMap` is a plain snapshot of the topology (shards, slot owners, this node's
place) that a gears node hands to its worker process (``gears.node.topology``
builds it). Following RedisGears, a deployment with a single shard (standalone server,
or a cluster whose slots all sit on one master) is *not* in cluster mode: the shard id
is 40 zeros and ``hashtag()`` is ``'06S'``.
"""

from __future__ import annotations

import binascii
import itertools
import string
from array import array
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = ["NO_CLUSTER_ID", "SLOTS", "ShardInfo", "ShardMap", "crc16", "hashtag_for_slot", "key_slot"]

SLOTS = 16384

_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase


def crc16(data: bytes) -> int:
    """CRC16-CCITT (XMODEM), the checksum Redis Cluster uses for key slots."""
    return binascii.crc_hqx(data, 0)


def key_slot(key: bytes | str) -> int:
    """The hash slot of ``key`` (honours ``{hashtag}`` like Redis)."""
    data = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else bytes(key)
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return crc16(data) % SLOTS


@lru_cache(maxsize=None)
def _hashtags_by_slot() -> dict[int, str]:
    table: dict[int, str] = {}
    for chars in itertools.product(_ALPHABET, repeat=3):
        tag = "".join(chars)
        table.setdefault(crc16(tag.encode()) % SLOTS, tag)
    return table


def hashtag_for_slot(slot: int) -> str:
    """A short string ``h`` such that ``key_slot('{h}') == slot``.

    The whole table is computed once per process (about a quarter of a second).
    """
    if not 0 <= slot < SLOTS:
        raise ValueError(f"slot must be in 0..{SLOTS - 1}, got {slot}")
    return _hashtags_by_slot()[slot]

#: The shard id outside cluster mode.
NO_CLUSTER_ID = "0" * 40


@dataclass(frozen=True)
class ShardInfo:
    """One shard: its id (the master's node id), slot ranges and server addresses."""

    id: str
    ranges: tuple[tuple[int, int], ...]
    master: tuple[str, int]
    replicas: tuple[tuple[str, int], ...] = ()

    @property
    def min_slot(self) -> int:
        """The lowest slot the shard owns (``-1`` for none)."""
        return min((lo for lo, _ in self.ranges), default=-1)

    @property
    def hashtag(self) -> str:
        """The hashtag of the shard's lowest slot."""
        return hashtag_for_slot(max(self.min_slot, 0))


@dataclass
class ShardMap:
    """A snapshot of the topology, as the worker needs it for repartitioning."""

    my_id: str
    my_index: int
    shards: list[ShardInfo]
    slot_owner: "array[int]" = field(default_factory=lambda: array("H", bytes(2 * SLOTS)))
    my_role: str = "master"

    @property
    def cluster_mode(self) -> bool:
        """More than one shard."""
        return len(self.shards) > 1

    @property
    def shard_count(self) -> int:
        return len(self.shards)

    @property
    def hashtag(self) -> str:
        """``hashtag()`` of this shard (``'06S'`` outside cluster mode)."""
        return self.shards[self.my_index].hashtag if self.cluster_mode else hashtag_for_slot(0)

    def shard_of_key(self, key: str | bytes) -> int:
        """Index of the shard that owns ``key``'s slot."""
        return self.slot_owner[key_slot(key)]

    def shard_id_for_reader(self) -> str:
        """What ShardsIDReader yields: the shard id, or ``'1'`` outside cluster mode."""
        return self.my_id if self.cluster_mode else "1"

    @classmethod
    def standalone(cls) -> "ShardMap":
        """A single shard owning every slot."""
        return cls(NO_CLUSTER_ID, 0, [ShardInfo(NO_CLUSTER_ID, ((0, SLOTS - 1),), ("", 0))])
