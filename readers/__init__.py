"""Readers: where records come from (keys, streams, Python generators, shard ids)."""

from .base import BATCH_READERS, Reader, ReaderContext, make_reader

__all__ = ["BATCH_READERS", "Reader", "ReaderContext", "make_reader"]
