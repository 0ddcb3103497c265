"""Readers: where records come from (keys, streams, Python generators, shard ids);
:mod:`gears_readers.catalog` builds one by name."""
