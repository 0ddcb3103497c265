"""Fault scenarios on a live local cluster, each with a writer running.

Used by ``tests/test_chaos.py`` (which asserts exact counts) and by
``scripts/bench.py chaos`` (which prints the figures). Every scenario registers a flow
that counts what it processes in a hash beside its input (same hashtag, so on the same
shard), starts a :class:`Writer`, injects one fault, waits for the writer to finish and
for processing to settle, and returns a :class:`Tally`:

* stream scenarios: ``written`` entries acknowledged to the writer (with a replica:
  also confirmed by ``WAIT 1``, so a write the server itself lost in a failover is not
  counted against the framework), ``processed`` distinct entries, ``duplicates`` (runs
  beyond the first), ``lost`` (written, never processed), ``pending`` (entries left in
  the consumer groups), ``length`` (``XLEN`` at the end: trimming went on);
* ``recovery_s``: from the fault to the first processed entry written after it.

Waits poll real state with a timeout; none is a fixed sleep, except the writer's pace.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import redis

from . import launcher
from .servers import HOST, is_running, wait_for

__all__ = [
    "Tally",
    "Writer",
    "STREAM_SCRIPT",
    "KEYS_SCRIPT",
    "register",
    "stream_tally",
    "keys_tally",
    "owner_of",
    "kill_server",
    "kill_gears_node",
    "kill_worker",
    "worker_pid",
    "await_processed",
    "await_promotion",
    "Takeover",
    "measure_takeover",
]

#: Counts every stream entry it runs in ``done{tag}`` (field: the entry's ``n``); a
#: partial batch runs once its first entry is 100 ms old.
STREAM_SCRIPT = (
    "GB('StreamReader').foreach(lambda r: execute('HINCRBY', 'done{%(tag)s}', r['value']['n'], 1))"
    ".register('cs{%(tag)s}', mode='async_local', batch=%(batch)d, duration=100)"
)
#: Counts every key event in ``kdone{tag}`` (field: the key).
KEYS_SCRIPT = (
    "GB().foreach(lambda r: execute('HINCRBY', 'kdone{%(tag)s}', r['key'], 1))"
    ".register('ck{%(tag)s}:*', mode='async_local', readValue=False)"
)
SETTLE_TIMEOUT = 60.0
#: How long the writer retries one write before it gives up (the cluster did not recover).
WRITE_TIMEOUT = 60.0


def stream_name(tag: str) -> str:
    return "cs{%s}" % tag


@dataclass
class Tally:
    """What a scenario wrote and what the framework made of it."""

    written: int
    processed: int
    duplicates: int
    lost: int
    pending: int = 0
    length: int = 0
    recovery_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class Writer(threading.Thread):
    """Writes ``count`` numbered commands at a steady pace through the front doors,
    retrying a number until a front door acknowledges it (moving to the next door on a
    connection error or ``MOVED``). With ``replicated`` a write counts as written only
    once ``WAIT 1`` confirms a replica has it."""

    def __init__(
        self,
        ports: list[int],
        command: Callable[[int], list[Any]],
        count: int,
        *,
        interval: float = 0.002,
        replicated: bool = False,
    ) -> None:
        super().__init__(daemon=True)
        self._ports = ports
        self._command = command
        self._count = count
        self._interval = interval
        self._replicated = replicated
        self._door = 0
        #: Set when a write could not be made within :data:`WRITE_TIMEOUT` (the run stops).
        self.failure: str | None = None
        #: ``n -> time.monotonic()`` of its acknowledgement, for every write that counts.
        self.written: dict[int, float] = {}
        #: Writes a server acknowledged but no replica confirmed (failover scenarios).
        self.unconfirmed = 0
        self.errors = 0

    def _client(self) -> redis.Redis:
        return redis.Redis(host=HOST, port=self._ports[self._door], socket_timeout=5, decode_responses=True)

    def run(self) -> None:
        client = self._client()
        for n in range(self._count):
            deadline = time.monotonic() + WRITE_TIMEOUT
            while True:
                try:
                    client.execute_command(*self._command(n))
                    if self._replicated and client.execute_command("WAIT", 1, 2000) < 1:
                        self.unconfirmed += 1
                    else:
                        self.written[n] = time.monotonic()
                    break
                except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
                    self.errors += 1
                    if time.monotonic() > deadline:
                        self.failure = f"write {n} failed for {WRITE_TIMEOUT:g} s: {exc}"
                        client.close()
                        return
                    client.close()
                    self._door = (self._door + 1) % len(self._ports)
                    client = self._client()
                    time.sleep(0.01)
            time.sleep(self._interval)
        client.close()

    def first_after(self, moment: float) -> int | None:
        """The first write acknowledged after ``moment`` (``None``: none was)."""
        return next((n for n, at in sorted(self.written.items()) if at > moment), None)


def register(state: launcher.ClusterState, script: str) -> None:
    """Run a registering script through the first front door."""
    state.client().execute_command("RG.PYEXECUTE", script)


def owner_of(state: launcher.ClusterState, key: str) -> launcher.NodeInfo:
    """The node whose server is the master of ``key``'s slot now."""
    cluster = state.cluster_client()
    try:
        door = cluster.get_node_from_key(key).port
    finally:
        cluster.close()
    return next(node for node in state.nodes if node.gears_port == door)


def _done_counts(state: launcher.ClusterState, key: str) -> dict[str, int]:
    cluster = state.cluster_client()
    try:
        return {field: int(value) for field, value in cluster.hgetall(key).items()}
    finally:
        cluster.close()


def await_processed(state: launcher.ClusterState, key: str, fields: set[str], timeout: float = SETTLE_TIMEOUT) -> float:
    """Wait until every field in ``fields`` is in the hash ``key``; the moment it was."""
    wait_for(lambda: fields <= set(_done_counts(state, key)), timeout=timeout, what=f"{len(fields)} entries processed")
    return time.monotonic()


def _recovery(state: launcher.ClusterState, writer: Writer, key: str, fault_at: float, field_of: Callable[[int], str]) -> float:
    first = writer.first_after(fault_at)
    if first is None:
        return 0.0
    return await_processed(state, key, {field_of(first)}) - fault_at


def _finish(writer: Writer) -> None:
    writer.join()
    if writer.failure is not None:
        raise RuntimeError(writer.failure)


def stream_tally(
    state: launcher.ClusterState, tag: str, writer: Writer, fault_at: float, skipped: frozenset[int] = frozenset()
) -> Tally:
    """Wait for the stream's processing to settle after ``writer`` ended (every written
    entry but the ``skipped`` ones processed); count."""
    _finish(writer)
    key = "done{%s}" % tag
    recovery = _recovery(state, writer, key, fault_at, str)
    written = {str(n) for n in writer.written}
    await_processed(state, key, written - {str(n) for n in skipped})
    cluster = state.cluster_client()
    try:
        stream = stream_name(tag)

        def pending() -> int:
            return sum(int(g["pending"]) for g in cluster.xinfo_groups(stream))

        wait_for(lambda: pending() == 0, timeout=SETTLE_TIMEOUT, what="no entry pending")
        length = cluster.xlen(stream)
        left = pending()
    finally:
        cluster.close()
    counts = _done_counts(state, key)
    return Tally(
        written=len(written),
        processed=len(counts),
        duplicates=sum(counts.values()) - len(counts),
        lost=len(written - set(counts)),
        pending=left,
        length=length,
        recovery_s=recovery,
        extra={"writer_errors": writer.errors, "unconfirmed": writer.unconfirmed},
    )


def keys_tally(state: launcher.ClusterState, tag: str, writer: Writer, settle: Callable[[], None]) -> Tally:
    """KeysReader events: after ``writer`` ended and ``settle()`` (the last write's event
    processed), how many written keys never got their event."""
    _finish(writer)
    settle()
    counts = _done_counts(state, "kdone{%s}" % tag)
    written = {"ck{%s}:%d" % (tag, n) for n in writer.written}
    return Tally(
        written=len(written),
        processed=len(written & set(counts)),
        duplicates=sum(counts.values()) - len(counts),
        lost=len(written - set(counts)),
        extra={"writer_errors": writer.errors, "unconfirmed": writer.unconfirmed, "lost_keys": sorted(written - set(counts))},
    )


def kill_server(node: launcher.NodeInfo) -> float:
    """``kill -9`` a server node and wait until it is gone; the moment it was killed."""
    ref = node.server_ref()
    os.kill(node.pid, signal.SIGKILL)  # type: ignore[arg-type]
    killed = time.monotonic()
    wait_for(lambda: not is_running(ref), timeout=10, what="the server node to exit")
    return killed


def kill_gears_node(node: launcher.NodeInfo) -> float:
    """``kill -9`` a gears node (its worker, in the same process group, too); the moment."""
    ref = node.gears_ref()
    os.killpg(node.gears_pid, signal.SIGKILL)  # type: ignore[arg-type]
    killed = time.monotonic()
    wait_for(lambda: not is_running(ref), timeout=10, what="the gears node to exit")
    return killed


def worker_pid(node: launcher.NodeInfo) -> int:
    """The pid of the gears node's worker process (its child running ``gears.worker``)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                command = cmdline.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == node.gears_pid and b"gears.worker" in command:
            return int(pid)
    raise LookupError(f"no worker process under gears node {node.gears_pid}")


def kill_worker(node: launcher.NodeInfo) -> float:
    """``kill -9`` the gears node's worker process; the moment it was killed."""
    pid = worker_pid(node)
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


@dataclass
class Takeover:
    """How a promoted replica's node took over a shard's registrations."""

    stream_s: float  # from the promotion until an entry added then was processed
    keys_s: float  # from the promotion until a key event was processed again
    keys_lost: int  # probe keys written to the new master in between whose event was lost


def measure_takeover(state: launcher.ClusterState, node: launcher.NodeInfo, tag: str, promoted: float) -> Takeover:
    """Probe the promoted server directly (no front door, no writer retries): one stream
    entry (``n = -1``), and a key every 10 ms until one's event is processed."""
    server = redis.Redis(host=HOST, port=node.port, socket_timeout=5, decode_responses=True)
    done, keys_done = "done{%s}" % tag, "kdone{%s}" % tag
    prefix = "ck{%s}:probe" % tag
    probe = prefix + "%d"
    seen: dict[str, float] = {}
    sent = 0
    try:
        server.xadd(stream_name(tag), {"n": -1})

        def both_seen() -> bool:
            nonlocal sent
            if "keys" not in seen:
                server.set(probe % sent, sent)
                sent += 1
                if any(field.startswith(prefix) for field in server.hkeys(keys_done)):
                    seen["keys"] = time.monotonic()
            if "stream" not in seen and server.hexists(done, "-1"):
                seen["stream"] = time.monotonic()
            return len(seen) == 2

        wait_for(both_seen, timeout=SETTLE_TIMEOUT, what="the promoted node's registrations", interval=0.01, max_interval=0.01)
        wait_for(lambda: server.hexists(keys_done, probe % (sent - 1)), timeout=SETTLE_TIMEOUT, what="the last probe key's event")
        processed = sum(1 for field in server.hkeys(keys_done) if field.startswith(prefix))
    finally:
        server.close()
    return Takeover(stream_s=seen["stream"] - promoted, keys_s=seen["keys"] - promoted, keys_lost=sent - processed)


def await_promotion(node: launcher.NodeInfo, timeout: float = 60.0) -> float:
    """Wait until ``node``'s server reports itself a master; the moment it did."""
    client = redis.Redis(host=HOST, port=node.port, socket_timeout=2, decode_responses=True)
    try:
        wait_for(lambda: client.execute_command("ROLE")[0] == "master", timeout=timeout, what="the replica's promotion",
                 interval=0.01, max_interval=0.01)
    finally:
        client.close()
    return time.monotonic()
