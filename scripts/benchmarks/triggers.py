"""``bench.py triggers``: a KeysReader registration against a notification-following
redis-py process (latency at a steady rate, burst throughput), and stream entries lost
across a gears node's kill -9."""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import threading
import time
from typing import Any

import redis

from gears_cluster import launcher, servers

from .harness import Case, local_cluster, percentile


TRIGGER_SCRIPT = """
GB().foreach(lambda r: execute('SET', 'evout{%s}' % r['key'], r['value'])).register('ev:*', mode='async_local', eventTypes=['set'])
"""

STREAM_SCRIPT = """
GB('StreamReader').foreach(lambda r: execute('SADD', 'stream-done{%s}' % hashtag(), r['value']['n'])).register('evstream*', mode='async_local', batch=10)
"""


class _Observer:
    """Stamps when each output key (``<prefix>{ev:<n>}``) appears, from every master's notifications."""

    def __init__(self, server_ports: list[int], prefix: str) -> None:
        self.seen: dict[int, float] = {}
        self._prefix = prefix
        self._threads = []
        self._pubsubs = []
        for port in server_ports:
            pubsub = redis.Redis(port=port, decode_responses=True).pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe("__keyevent@*__:set")
            self._pubsubs.append(pubsub)
            thread = threading.Thread(target=self._listen, args=(pubsub,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _listen(self, pubsub: Any) -> None:
        try:
            for message in pubsub.listen():
                key = message["data"]
                if key.startswith(self._prefix):
                    self.seen[int(key[key.index(":") + 1 : -1])] = time.time()
        except Exception:  # noqa: BLE001 - closed at the end of the run
            return

    def wait(self, count: int, timeout: float) -> None:
        deadline = time.time() + timeout
        while len(self.seen) < count and time.time() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        for pubsub in self._pubsubs:
            pubsub.close()


def _write_events(port: int, count: int, rate: float | None, first: int, out: Any) -> None:
    """A separate client: SET ev:<n> at ``rate`` events/s (as fast as possible if None)."""
    from redis.cluster import RedisCluster

    cluster = RedisCluster(host="127.0.0.1", port=port)
    stamps = []
    if rate is None:
        pipe = cluster.pipeline(transaction=False)
        for i in range(first, first + count):
            stamps.append(time.time())
            pipe.set(f"ev:{i}", i)
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()
    else:
        start = time.perf_counter()
        for n, i in enumerate(range(first, first + count)):
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            stamps.append(time.time())
            cluster.set(f"ev:{i}", i)
    out.send(stamps)
    cluster.close()


def _run_writer(port: int, count: int, rate: float | None, first: int) -> list[float]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_write_events, args=(port, count, rate, first, child))
    process.start()
    stamps = parent.recv()
    process.join()
    return stamps


def _baseline_trigger(server_ports: list[int], port: int, stop: Any) -> None:
    """What a user writes instead: one process on every master's notifications, doing the same write."""
    from redis.cluster import RedisCluster

    cluster = RedisCluster(host="127.0.0.1", port=port, decode_responses=True)
    readers = [redis.Redis(port=p, decode_responses=True) for p in server_ports]
    pubsubs = []
    for reader in readers:
        pubsub = reader.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe("__keyevent@*__:set")
        pubsubs.append(pubsub)
    while not stop.is_set():
        idle = True
        for reader, pubsub in zip(readers, pubsubs):
            message = pubsub.get_message(timeout=0)
            while message is not None:
                idle = False
                key = message["data"]
                if key.startswith("ev:"):
                    cluster.set("bout{%s}" % key, reader.get(key) or "")
                message = pubsub.get_message(timeout=0)
        if idle:
            time.sleep(0.0002)


def _latencies(stamps: list[float], seen: dict[int, float], first: int) -> list[float]:
    return sorted((seen[first + i] - t) * 1000 for i, t in enumerate(stamps) if first + i in seen)


def run_suite(args: argparse.Namespace) -> list[Case]:
    """KeysReader registration vs a notification-following redis-py process; stream loss over a kill -9."""
    events = args.events
    with local_cluster(masters=3, base_port=args.base_port, config={"appendonly": "no"}) as state:
        client = state.client(decode_responses=True)
        client.execute_command("RG.PYEXECUTE", TRIGGER_SCRIPT)
        fw = _Observer(state.server_ports, "evout")
        stamps = _run_writer(state.ports[0], events, 2000.0, 0)
        fw.wait(events, 30)
        fw_lat = _latencies(stamps, fw.seen, 0)
        burst = _run_writer(state.ports[0], events, None, events)
        fw.wait(2 * events, 60)
        fw_burst = [fw.seen[events + i] for i in range(events) if events + i in fw.seen]
        fw_rate = len(fw_burst) / (max(fw_burst) - burst[0]) if fw_burst else 0.0
        fw_lost = events - len(fw_burst)
        fw.close()
        for entry in client.execute_command("RG.DUMPREGISTRATIONS"):
            client.execute_command("RG.UNREGISTER", entry[1])

        stop = multiprocessing.Event()
        base = _Observer(state.server_ports, "bout")
        worker = multiprocessing.Process(target=_baseline_trigger, args=(state.server_ports, state.ports[0], stop))
        worker.start()
        time.sleep(1.0)  # let the baseline subscribe before the first event
        stamps_b = _run_writer(state.ports[0], events, 2000.0, 2 * events)
        base.wait(events, 30)
        base_lat = _latencies(stamps_b, base.seen, 2 * events)
        burst_b = _run_writer(state.ports[0], events, None, 3 * events)
        base.wait(2 * events, 60)
        base_burst = [base.seen[3 * events + i] for i in range(events) if 3 * events + i in base.seen]
        base_rate = len(base_burst) / (max(base_burst) - burst_b[0]) if base_burst else 0.0
        stop.set()
        worker.join(10)
        base.close()
        lost = _stream_loss(state, args.stream_entries)
    return [
        Case("latency_p50_ms", "ms at 2000 events/s", percentile(fw_lat, 0.5), percentile(base_lat, 0.5), False, "<= 1 ms"),
        Case("latency_p99_ms", "ms at 2000 events/s", percentile(fw_lat, 0.99), percentile(base_lat, 0.99), False, "<= 10 ms"),
        Case("throughput", f"events/s (burst of {events}, {fw_lost} lost)", fw_rate, base_rate, True, ">= 1.0x the baseline"),
        Case("stream_lost", "entries lost across a gears node kill -9", float(lost), None, False, "0"),
    ]


def _stream_loss(state: launcher.ClusterState, entries: int) -> int:
    """XADD ``entries`` at a steady rate, kill -9 the stream's gears node mid-way, restart it."""
    client = state.client(decode_responses=True)
    client.execute_command("RG.PYEXECUTE", STREAM_SCRIPT)
    cluster = state.cluster_client(decode_responses=True)
    stream = "evstream{06S}"
    owner = next(node for node in state.nodes if node.gears_port == cluster.get_node_from_key(stream).port)
    done_key = "stream-done{06S}"
    for i in range(entries):
        cluster.xadd(stream, {"n": i})
        if i == entries // 2:
            os.kill(owner.gears_pid, signal.SIGKILL)
            while servers.is_running(owner.gears_ref()):
                time.sleep(0.01)
            launcher.up(dir=state.dir)
    deadline = time.time() + 60
    while cluster.scard(done_key) < entries and time.time() < deadline:
        time.sleep(0.05)
    processed = cluster.scard(done_key)
    cluster.close()
    return entries - processed

