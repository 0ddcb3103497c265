"""``bench.py batch``: batch reads and writes over N hashes on 3 shards, RG.PYEXECUTE
against the redis-py script a user would write (SCAN every master, pipelined HGETALL)."""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from typing import Any

import redis

from gears_cluster import launcher

from .harness import Case, local_cluster, masters, sentence, timed


def _load_paragraphs(state: launcher.ClusterState, count: int) -> None:
    """``paragraphs:{i}`` hashes with two ~100-byte fields, written straight to their shards."""
    rng = random.Random(7)
    cluster = state.cluster_client(decode_responses=False)
    pipe = cluster.pipeline(transaction=False)
    for i in range(count):
        pipe.hset(f"paragraphs:{{{i}}}", mapping={"title": sentence(rng, 100), "body": sentence(rng, 100)})
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    cluster.close()


READ_SCRIPT = """
GB('KeysReader').filter(lambda r: r['type'] == 'hash').map(lambda r: r['value']['title'].split(' ', 1)[0]).countby().run('paragraphs:*')
"""

WRITE_SCRIPT = """
def write(r):
    execute_deferred('SET', 'out:' + r['key'], r['value']['title'][:20])
GB('KeysReader').filter(lambda r: r['type'] == 'hash').foreach(write).count().run('paragraphs:*')
"""


def _masters(state: launcher.ClusterState) -> list[redis.Redis]:
    return [redis.Redis(port=port, decode_responses=True) for port in state.server_ports]


def _scan_hashes(state: launcher.ClusterState) -> Iterator[tuple[redis.Redis, list[str], list[dict[str, str]]]]:
    """What a competent user writes: SCAN every master, pipeline HGETALL in batches of 1000."""
    for server in masters(state):
        cursor = 0
        while True:
            cursor, keys = server.scan(cursor, match="paragraphs:*", count=1000)
            pipe = server.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            yield server, keys, pipe.execute()
            if cursor == 0:
                break
        server.close()


def _baseline_read(state: launcher.ClusterState) -> dict[str, int]:
    """The read baseline: count the first word of every title."""
    counts: dict[str, int] = {}
    for _server, _keys, values in _scan_hashes(state):
        for value in values:
            word = value["title"].split(" ", 1)[0]
            counts[word] = counts.get(word, 0) + 1
    return counts


def _baseline_write(state: launcher.ClusterState) -> int:
    """The write baseline: a pipelined SET of one output key per record read."""
    written = 0
    for server, keys, values in _scan_hashes(state):
        pipe = server.pipeline(transaction=False)
        for key, value in zip(keys, values):
            pipe.set("out:" + key, value["title"][:20])
        written += len(pipe.execute())
    return written


def _framework(state: launcher.ClusterState, script: str) -> list[Any]:
    client = state.client(decode_responses=True)
    reply = client.execute_command("RG.PYEXECUTE", script)
    client.close()
    if reply[1]:
        raise RuntimeError(f"framework run had errors: {reply[1][:3]}")
    return reply[0]


def _delete_outputs(state: launcher.ClusterState) -> None:
    for server in masters(state):
        pipe = server.pipeline(transaction=False)
        for key in server.scan_iter(match="out:*", count=5000):
            pipe.unlink(key)
        pipe.execute()
        server.close()


def run_suite(args: argparse.Namespace) -> list[Case]:
    """Batch reads and writes over N hashes on 3 shards: RG.PYEXECUTE vs a redis-py script."""
    with local_cluster(masters=3, base_port=args.base_port, config={"appendonly": "no"}) as state:
        _load_paragraphs(state, args.keys)
        _framework(state, READ_SCRIPT)  # warm-up: worker imports, Lua script cache
        fw_s, fw_result = timed(lambda: _framework(state, READ_SCRIPT))
        base_s, base_result = timed(lambda: _baseline_read(state))
        fw_counts = {eval(item)["key"]: eval(item)["value"] for item in fw_result}  # noqa: S307 - our own reply
        if fw_counts != base_result:
            raise RuntimeError("framework and baseline read results differ")
        fw_w_s, fw_written = timed(lambda: _framework(state, WRITE_SCRIPT))
        _delete_outputs(state)
        base_w_s, base_written = timed(lambda: _baseline_write(state))
        if int(fw_written[0]) != base_written:
            raise RuntimeError(f"framework wrote {fw_written} records, baseline {base_written}")
    n = args.keys
    return [
        Case("read", "records/s", n / fw_s, n / base_s, True, ">= 1.5x the single-process redis-py script"),
        Case("write", "records/s", n / fw_w_s, n / base_w_s, True, ">= 1.0x the pipelined writer script"),
    ]

