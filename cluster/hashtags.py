"""Redis Cluster slot maths: CRC16 key slots and short hashtags per slot.

``key_slot`` follows the Redis Cluster specification (CRC16-CCITT/XMODEM of the
``{hashtag}`` part when there is a non-empty one, modulo 16384).

``hashtag_for_slot(slot)`` returns the first three-character string over
``0-9A-Za-z`` (in that order) whose slot is ``slot``. Every slot has one, and slot 0
gives ``'06S'``, the same hashtag RedisGears 1.2 hands out for slot 0, so scripts that
hard-code ``{06S}`` keep working.
"""

from __future__ import annotations

import binascii
import itertools
import string
from functools import lru_cache

__all__ = ["SLOTS", "crc16", "key_slot", "hashtag_for_slot"]

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
