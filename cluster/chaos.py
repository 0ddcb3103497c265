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

from gears_cluster import launcher
from gears_cluster.servers import HOST, is_running, wait_for

__all__ = [
    "Tally",
    "Writer",
    "STREAM_SCRIPT",
    "SLOW_STREAM_SCRIPT",
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
    "reload",
    "stream_fault",
    "restart_server",
    "restart_gears_node",
    "AbortRun",
    "abort_c_loop",
    "FailoverRun",
    "failover",
    "poison",
    "POISON_SCRIPT",
    "memory_bomb",
    "stream_name",
]

#: Counts every stream entry it runs in ``done{tag}`` (field: the entry's ``n``); a
#: partial batch runs once its first entry is 100 ms old.
STREAM_SCRIPT = (
    "GB('StreamReader').foreach(lambda r: execute('HINCRBY', 'done{%(tag)s}', r['value']['n'], 1))"
    ".register('cs{%(tag)s}', mode='async_local', batch=%(batch)d, duration=100, onFailedPolicy='%(policy)s')"
)
#: :data:`STREAM_SCRIPT` with a 5 ms step: the consumer is nearly always inside a batch,
#: so a fault almost surely interrupts one.
SLOW_STREAM_SCRIPT = """
import time
def step(r):
    time.sleep(0.005)
    execute('HINCRBY', 'done{%(tag)s}', r['value']['n'], 1)
GB('StreamReader').foreach(step).register('cs{%(tag)s}', mode='async_local', batch=%(batch)d, duration=100,
                                          onFailedPolicy='%(policy)s')
"""
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
        #: ``n -> time.monotonic()`` of its acknowledgement by the server, for every write that counts.
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
                    acknowledged = time.monotonic()  # not after WAIT: that may wait for a replica to come back
                    if self._replicated and client.execute_command("WAIT", 1, 2000) < 1:
                        self.unconfirmed += 1
                    else:
                        self.written[n] = acknowledged
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


def keys_tally(state: launcher.ClusterState, tag: str, writer: Writer, settle: Callable[[], object]) -> Tally:
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
    return _killed(node.server_ref(), lambda: os.kill(node.pid, signal.SIGKILL), "the server node")  # type: ignore[arg-type]


def kill_gears_node(node: launcher.NodeInfo) -> float:
    """``kill -9`` a gears node (its worker, in the same process group, too); the moment."""
    return _killed(node.gears_ref(), lambda: os.killpg(node.gears_pid, signal.SIGKILL), "the gears node")  # type: ignore[arg-type]


def _killed(ref: Any, kill: Callable[[], None], what: str) -> float:
    """Run ``kill``, wait until the process ``ref`` is gone; the moment it was killed."""
    kill()
    killed = time.monotonic()
    wait_for(lambda: not is_running(ref), timeout=10, what=f"{what} to exit")
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


# ------------------------------------------------------------------------ scenarios
def reload(state: launcher.ClusterState) -> launcher.ClusterState:
    """Take the saved pids into ``state`` (they change when processes restart)."""
    saved = launcher.load_state(state.dir)
    if saved is None:
        raise LookupError(f"no cluster in {state.dir}")
    state.nodes = saved.nodes
    return state


def stream_fault(
    state: launcher.ClusterState,
    tag: str,
    count: int,
    fault: Callable[[], float],
    *,
    batch: int = 5,
    at: float = 0.25,
    script: str | None = None,
    skipped: frozenset[int] = frozenset(),
    policy: str = "continue",
) -> Tally:
    """Register ``script`` (default :data:`STREAM_SCRIPT`) for stream ``cs{tag}``, write
    ``count`` entries and call ``fault()`` (which returns the fault's moment, having
    restarted what it killed) once ``at`` of them are written; count what was processed
    (every entry but the ``skipped`` ones awaited); ``policy`` is the default script's
    ``onFailedPolicy``."""
    register(state, script or STREAM_SCRIPT % {"tag": tag, "batch": batch, "policy": policy})
    stream = stream_name(tag)
    writer = Writer(state.ports, lambda n: ["XADD", stream, "*", "n", n], count)
    writer.start()
    wait_for(lambda: len(writer.written) >= count * at or writer.failure, timeout=SETTLE_TIMEOUT, what="writes before the fault")
    return stream_tally(state, tag, writer, fault(), skipped)


def restart_server(state: launcher.ClusterState, node: launcher.NodeInfo, between: Callable[[], None] | None = None) -> float:
    """``kill -9`` a server node, run ``between()``, then ``gears cluster up``; the kill's moment."""
    killed = kill_server(node)
    if between is not None:
        between()
    launcher.up(dir=state.dir)
    reload(state)
    return killed


def restart_gears_node(state: launcher.ClusterState, node: launcher.NodeInfo) -> float:
    """``kill -9`` a gears node (and its worker), then ``gears cluster up``; the kill's moment."""
    killed = kill_gears_node(node)
    launcher.up(dir=state.dir)
    reload(state)
    return killed


#: How long ``RG.DUMPEXECUTIONS`` may take while a worker is held by C code.
LISTING_TIMEOUT = 10.0
#: A step that never gives the interpreter back (one C call holding the GIL).
C_LOOP_SCRIPT = "GB('ShardsIDReader').map(lambda x: sum(range(10**15))).run()"
#: A step that waits, and so shares the worker with the C loop.
BYSTANDER_SCRIPT = "import time\nGB('ShardsIDReader').map(lambda x: time.sleep(120)).run()"


@dataclass
class AbortRun:
    """``RG.ABORTEXECUTION`` of a step stuck in C code."""

    seconds: float = 0.0  # from the abort until the execution ended
    listing_seconds: float = 0.0  # how long RG.DUMPEXECUTIONS took meanwhile
    listed: bool = False  # the stuck execution was in that listing
    reply: list[Any] = field(default_factory=list)  # RG.GETRESULTSBLOCKING of the stuck one
    bystander: list[Any] = field(default_factory=list)  # ... of another execution in the same worker


def abort_c_loop(state: launcher.ClusterState, run: AbortRun) -> float:
    """Start a bystander and a C loop, abort the loop, list executions meanwhile, wait for
    both to end (filling ``run``); the abort's moment."""
    client = state.client()
    bystander = client.execute_command("RG.PYEXECUTE", BYSTANDER_SCRIPT, "UNBLOCKING")
    stuck = client.execute_command("RG.PYEXECUTE", C_LOOP_SCRIPT, "UNBLOCKING")
    wait_for(lambda: client.execute_command("RG.GETEXECUTION", stuck)[0][3][1] == "running", timeout=SETTLE_TIMEOUT,
             what="the C loop running")
    client.execute_command("RG.ABORTEXECUTION", stuck)
    aborted = time.monotonic()
    impatient = state.client(socket_timeout=LISTING_TIMEOUT)  # a listing that hangs fails here
    run.listed = stuck in [entry[1] for entry in impatient.execute_command("RG.DUMPEXECUTIONS")]
    run.listing_seconds = time.monotonic() - aborted
    impatient.close()
    run.reply = client.execute_command("RG.GETRESULTSBLOCKING", stuck)
    run.seconds = time.monotonic() - aborted
    run.bystander = client.execute_command("RG.GETRESULTSBLOCKING", bystander)
    client.close()
    return aborted


@dataclass
class FailoverRun:
    """A master's host lost (server and gears node ``kill -9``) with a stream and keys written."""

    master: launcher.NodeInfo
    replica: launcher.NodeInfo
    stream: Tally
    keys: Tally
    takeover: Takeover
    fault: float
    promoted: float
    key_times: dict[int, float]  # acknowledgement moment of every counted key write


def failover(state: launcher.ClusterState, tag: str, count: int, *, batch: int = 5, host: bool = True) -> FailoverRun:
    """Kill the stream's master server (with ``host``, its gears node too, as when the
    machine dies) once a fifth of ``count`` entries are written, wait for the replica's
    promotion, probe its node's takeover, ``gears cluster up`` (the old master comes back
    as a replica), then count stream entries and key events."""
    register(state, STREAM_SCRIPT % {"tag": tag, "batch": batch, "policy": "abort"})
    register(state, KEYS_SCRIPT % {"tag": tag})
    master = owner_of(state, stream_name(tag))
    replica = next(n for n in state.nodes if n.master_port == master.port)
    stream = stream_name(tag)
    streams = Writer(state.ports, lambda n: ["XADD", stream, "*", "n", n], count, replicated=True)
    keys = Writer(state.ports, lambda n: ["SET", "ck{%s}:%d" % (tag, n), n], count, replicated=True)
    streams.start()
    keys.start()
    wait_for(lambda: len(streams.written) >= count // 5 or streams.failure, timeout=SETTLE_TIMEOUT, what="writes before the fault")
    fault = kill_server(master)
    if host:
        kill_gears_node(master)
    promoted = await_promotion(replica)
    takeover = measure_takeover(state, replica, tag, promoted)
    launcher.up(dir=state.dir)
    reload(state)
    stream_count = stream_tally(state, tag, streams, promoted)
    last = "ck{%s}:%d" % (tag, max(keys.written))
    key_count = keys_tally(state, tag, keys, lambda: await_processed(state, "kdone{%s}" % tag, {last}))
    return FailoverRun(master, replica, stream_count, key_count, takeover, fault, promoted, dict(keys.written))


def poison(state: launcher.ClusterState, tag: str, other: str, count: int, entry: int, *, batch: int = 5) -> tuple[Tally, Tally, Tally]:
    """A stream registration whose step kills the worker on entry ``entry`` (``os._exit``,
    as a segfault would), beside another stream registration and a key registration;
    ``count`` entries written to each stream, then 20 keys. Tallies of the poisoned
    stream (every entry but the poison one awaited), the other stream and the keys."""
    register(state, KEYS_SCRIPT % {"tag": other})
    register(state, STREAM_SCRIPT % {"tag": other, "batch": batch, "policy": "continue"})
    other_writer = Writer(state.ports, lambda n: ["XADD", stream_name(other), "*", "n", n], count, interval=0.02)
    other_writer.start()
    script = POISON_SCRIPT % {"poison": entry, "tag": tag, "batch": batch}
    poisoned = stream_fault(state, tag, count, time.monotonic, batch=batch, at=0, script=script, skipped=frozenset({entry}))
    others = stream_tally(state, other, other_writer, time.monotonic())
    keys = Writer(state.ports, lambda n: ["SET", "ck{%s}:%d" % (other, n), n], 20)
    keys.start()
    last = "ck{%s}:%d" % (other, 19)
    key_count = keys_tally(state, other, keys, lambda: await_processed(state, "kdone{%s}" % other, {last}))
    return poisoned, others, key_count


#: Crashes the worker on entry ``poison``; counts every other entry like :data:`STREAM_SCRIPT`.
POISON_SCRIPT = """
import os
def step(r):
    if r['value']['n'] == '%(poison)d':
        os._exit(7)
    execute('HINCRBY', 'done{%(tag)s}', r['value']['n'], 1)
GB('StreamReader').foreach(step).register('cs{%(tag)s}', mode='async_local', batch=%(batch)d, duration=100)
"""


#: Grows the worker's memory by 4 MB per step until something stops it.
BOMB_SCRIPT = (
    "def bomb(x):\n    hoard = []\n    while True:\n        hoard.append(b'x' * (4 << 20))\n"
    "GB('ShardsIDReader').map(bomb).run()"
)


def memory_bomb(state: launcher.ClusterState, limit_mb: int) -> tuple[list[Any], int]:
    """Run a memory bomb under ``WorkerMaxMemoryMB=limit_mb`` (the previous value is put
    back); the run's errors and the size, in MB, the worker was killed at (``0``: not
    reported)."""
    client = state.client()
    previous = client.execute_command("RG.CONFIGGET", "WorkerMaxMemoryMB")[0]
    client.execute_command("RG.CONFIGSET", "WorkerMaxMemoryMB", limit_mb)
    try:
        results, errors = client.execute_command("RG.PYEXECUTE", BOMB_SCRIPT)
    finally:
        client.execute_command("RG.CONFIGSET", "WorkerMaxMemoryMB", previous)
        client.close()
    killed_at = next((int(e.split("killed at ", 1)[1].split(" MB", 1)[0]) for e in errors if "killed at " in e), 0)
    return errors, killed_at
