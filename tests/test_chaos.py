"""Chaos: one fault at a time with a writer running, exact counts afterwards.

Each test injects one fault (``kill -9`` of a server node, of a gears node, of a worker,
a poison entry, code that ignores an abort, a master failover) while
:class:`cluster.chaos.Writer` writes, then asserts: every written stream entry processed
(``lost == 0``), duplicates bounded by what was in flight, no entry left pending, the
stream trimmed, the registrations running again. "Resumed within N s" is the timeout of
the wait for the first entry written after the fault (``RESUME_BOUND``), not a timing
assertion on a measured figure.
"""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from cluster import chaos, launcher
from conftest import free_base_port, launched_cluster, shifted_port, wait_for

#: A registration must be running again within this many seconds of a fault.
RESUME_BOUND = 30.0
BATCH = 5


def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def chaos1(tmp_path_factory):
    """One master with its gears node, for faults that restart processes."""
    with launched_cluster(
        tmp_path_factory.mktemp("chaos1"), masters=1, base_port=shifted_port(13101), what="chaos1"
    ) as state:
        yield state


def fresh(state: launcher.ClusterState) -> launcher.ClusterState:
    """The state as saved now (pids change when processes restart)."""
    saved = launcher.load_state(state.dir)
    assert saved is not None
    state.nodes = saved.nodes
    return state


def stream_writer(state: launcher.ClusterState, tag: str, count: int, **options) -> chaos.Writer:
    stream = chaos.stream_name(tag)
    return chaos.Writer(state.ports, lambda n: ["XADD", stream, "*", "n", n], count, **options)


def registration(client: redis.Redis, prefix: str) -> list:
    """The ``RG.DUMPREGISTRATIONS`` entry whose args name ``prefix``."""
    return next(e for e in client.execute_command("RG.DUMPREGISTRATIONS") if prefix in str(e[7]))


def stat(entry: list, name: str):
    data = entry[7]
    return data[data.index(name) + 1]


def health(client: redis.Redis) -> dict:
    reply = client.execute_command("RG.HEALTH")
    return dict(zip(reply[::2], reply[1::2]))


def test_server_node_restart_loses_no_stream_entry_and_key_events_resume(chaos1):
    tag = unique()
    chaos.register(chaos1, chaos.STREAM_SCRIPT % {"tag": tag, "batch": BATCH})
    chaos.register(chaos1, chaos.KEYS_SCRIPT % {"tag": tag})
    writer = stream_writer(chaos1, tag, 600)
    writer.start()
    wait_for(lambda: len(writer.written) >= 150, timeout=30)
    node = chaos1.nodes[0]
    fault = chaos.kill_server(node)
    health = launcher.status(chaos1.dir)["nodes"][0]["health"]
    assert health["server"] == "unreachable" and health["worker"] == "alive"  # the outage shows
    launcher.up(dir=chaos1.dir)
    fresh(chaos1)
    tally = chaos.stream_tally(chaos1, tag, writer, fault)
    assert tally.written == 600 and tally.lost == 0 and tally.processed == 600
    assert tally.duplicates <= BATCH  # at most the batch that was running when the server died
    assert tally.pending == 0 and tally.length == 0  # acknowledged and trimmed
    client = chaos1.client()
    entry = registration(client, f"cs{{{tag}}}")
    assert stat(entry, "status") == "OK" and stat(entry, "numFailures") == 0
    assert stat(entry, "numServerOutages") >= 1 and "server node" in stat(entry, "lastServerOutage")
    for n in range(20):  # key events fire again after the restart
        client.set("ck{%s}:%d" % (tag, n), n)
    chaos.await_processed(chaos1, "kdone{%s}" % tag, {"ck{%s}:%d" % (tag, n) for n in range(20)}, timeout=RESUME_BOUND)


@pytest.mark.parametrize("victim", ["worker", "gears node"])
def test_a_killed_worker_or_gears_node_loses_no_stream_entry(chaos1, victim):
    tag = unique()
    chaos.register(chaos1, chaos.STREAM_SCRIPT % {"tag": tag, "batch": BATCH})
    writer = stream_writer(chaos1, tag, 400)
    writer.start()
    wait_for(lambda: len(writer.written) >= 100, timeout=30)
    node = chaos1.nodes[0]
    if victim == "worker":
        fault = chaos.kill_worker(node)
    else:
        fault = chaos.kill_gears_node(node)
        launcher.up(dir=chaos1.dir)
        fresh(chaos1)
    tally = chaos.stream_tally(chaos1, tag, writer, fault)
    assert tally.written == 400 and tally.lost == 0 and tally.processed == 400
    assert tally.duplicates <= BATCH
    assert tally.pending == 0 and tally.length == 0


POISON_SCRIPT = """
import os
def step(r):
    if r['value']['n'] == '%(poison)d':
        os._exit(7)  # as a segfault in a C extension would
    execute('HINCRBY', 'done{%(tag)s}', r['value']['n'], 1)
GB('StreamReader').foreach(step).register('cs{%(tag)s}', mode='async_local', batch=%(batch)d)
"""


def test_a_poison_entry_is_isolated_and_the_other_registrations_keep_running(chaos1):
    from gears.worker.streams import MAX_WORKER_CRASHES

    tag, other = unique(), unique()
    poison = 50
    chaos.register(chaos1, POISON_SCRIPT % {"tag": tag, "batch": BATCH, "poison": poison})
    chaos.register(chaos1, chaos.STREAM_SCRIPT % {"tag": other, "batch": BATCH})
    chaos.register(chaos1, chaos.KEYS_SCRIPT % {"tag": other})
    client = chaos1.client()
    restarts = health(client)["workerRestarts"]
    writer = stream_writer(chaos1, tag, 200)
    other_writer = stream_writer(chaos1, other, 200, interval=0.02)
    other_writer.start()
    writer.start()
    wait_for(lambda: stat(registration(client, f"cs{{{tag}}}"), "numFailures") == 1, timeout=60,
             what="the poison entry handled by its failure policy")
    entry = registration(client, f"cs{{{tag}}}")
    assert stat(entry, "status") == "OK"  # onFailedPolicy 'continue': acknowledged, the stream goes on
    assert f"crashed {MAX_WORKER_CRASHES} times" in stat(entry, "lastError")
    node_health = launcher.status(chaos1.dir)["nodes"][0]["health"]
    assert [entry[1], 1, stat(entry, "lastError")] in node_health["with_errors"]
    tally = chaos.stream_tally(chaos1, tag, writer, time.monotonic(), frozenset({poison}))
    assert tally.written == 200 and tally.processed == 199 and tally.lost == 1  # only the poison entry
    assert tally.pending == 0 and tally.length == 0
    other_tally = chaos.stream_tally(chaos1, other, other_writer, time.monotonic())
    assert other_tally.lost == 0 and other_tally.pending == 0 and other_tally.length == 0
    assert health(client)["workerRestarts"] - restarts == MAX_WORKER_CRASHES  # one crash per try, then no more
    for n in range(5):  # the shard's key-event registration runs too
        client.set("ck{%s}:%d" % (other, n), n)
    chaos.await_processed(chaos1, "kdone{%s}" % other, {"ck{%s}:%d" % (other, n) for n in range(5)}, timeout=RESUME_BOUND)


def pyexecute(client: redis.Redis, script: str, *options):
    return client.execute_command("RG.PYEXECUTE", script, *options)


def test_abort_replaces_a_worker_held_by_c_code_and_the_node_stays_responsive(chaos1):
    from gears.workers import QUERY_SECONDS

    tag = unique()
    chaos.register(chaos1, chaos.STREAM_SCRIPT % {"tag": tag, "batch": BATCH})
    writer = stream_writer(chaos1, tag, 300)
    writer.start()
    client = chaos1.client()
    bystander = pyexecute(client, "import time\nGB('ShardsIDReader').map(lambda x: time.sleep(60)).run()", "UNBLOCKING")
    stuck = pyexecute(client, "GB('ShardsIDReader').map(lambda x: sum(range(10**14))).run()", "UNBLOCKING")
    wait_for(lambda: client.execute_command("RG.GETEXECUTION", stuck)[0][3][1] == "running")
    assert client.execute_command("RG.ABORTEXECUTION", stuck) == "OK"
    fault = time.monotonic()
    # answered while the worker's GIL is held (at most QUERY_SECONDS waiting for it), not hung
    impatient = redis.Redis(port=chaos1.ports[0], socket_timeout=QUERY_SECONDS + 5, decode_responses=True)
    assert stuck in [entry[1] for entry in impatient.execute_command("RG.DUMPEXECUTIONS")]
    assert client.execute_command("RG.GETRESULTSBLOCKING", stuck) == [[], ["Execution was aborted"]]
    results, errors = client.execute_command("RG.GETRESULTSBLOCKING", bystander)
    assert results == [] and f"execution {stuck} did not stop within AbortGracePeriodMS" in errors[0]
    tally = chaos.stream_tally(chaos1, tag, writer, fault)  # the registration came back in the new worker
    assert tally.written == 300 and tally.lost == 0 and tally.pending == 0 and tally.length == 0
    assert tally.duplicates <= BATCH


def test_memory_limit_is_on_by_default_and_stops_a_bomb_near_it(chaos1):
    from gears.config import default_worker_memory_mb

    client = chaos1.client()
    assert client.execute_command("RG.CONFIGGET", "WorkerMaxMemoryMB") == [default_worker_memory_mb()]
    assert default_worker_memory_mb() > 0
    limit = 300
    client.execute_command("RG.CONFIGSET", "WorkerMaxMemoryMB", limit)
    try:
        bomb = "def bomb(x):\n    hoard = []\n    while True:\n        hoard.append(b'x' * (4 << 20))\nGB('ShardsIDReader').map(bomb).run()"
        results, errors = pyexecute(client, bomb)
    finally:
        client.execute_command("RG.CONFIGSET", "WorkerMaxMemoryMB", default_worker_memory_mb())
    assert results == [] and "WorkerMaxMemoryMB=300" in errors[0]
    killed_at = int(errors[0].split("killed at ", 1)[1].split(" MB", 1)[0])
    assert limit < killed_at < 2 * limit, errors[0]  # stopped near the limit


#: Server directives of the failover cluster: a dead master is noticed after 1 s.
FAILOVER_CONFIG = {"cluster-node-timeout": "1000"}


def test_failover_loses_no_stream_entry_and_cluster_up_brings_the_old_master_back(tmp_path):
    """kill -9 of a master's host (server and gears node) with a stream and keys written;
    the replica is promoted, its node takes over; ``gears cluster up`` brings the old
    master back as a replica with a working gears node."""
    base = free_base_port(13201, 3, 1)
    with launched_cluster(tmp_path, masters=3, replicas=1, base_port=base, what="failover", config=FAILOVER_CONFIG) as state:
        tag = unique()
        chaos.register(state, chaos.STREAM_SCRIPT % {"tag": tag, "batch": BATCH})
        chaos.register(state, chaos.KEYS_SCRIPT % {"tag": tag})
        master = chaos.owner_of(state, chaos.stream_name(tag))
        replica = next(n for n in state.nodes if n.master_port == master.port)
        streams = stream_writer(state, tag, 1500, replicated=True)
        keys = chaos.Writer(state.ports, lambda n: ["SET", "ck{%s}:%d" % (tag, n), n], 1500, replicated=True)
        streams.start()
        keys.start()
        wait_for(lambda: len(streams.written) >= 300, timeout=60)
        fault = chaos.kill_server(master)
        chaos.kill_gears_node(master)
        promoted = chaos.await_promotion(replica)
        takeover = chaos.measure_takeover(state, replica, tag, promoted)
        launcher.up(dir=state.dir)
        fresh(state)
        roles = {n["redis"]: n["role"] for n in launcher.status(state.dir)["nodes"]}
        assert roles[master.address] == "replica" and roles[replica.address] == "master"
        tally = chaos.stream_tally(state, tag, streams, promoted)
        assert tally.written >= 1000 and tally.lost == 0 and tally.processed >= tally.written + 1  # + the probe
        assert tally.pending == 0 and tally.length == 0  # nothing stuck with the dead consumer; trimmed
        assert tally.duplicates <= 10 * BATCH, tally  # batches run but not acknowledged on the replica yet
        last = "ck{%s}:%d" % (tag, max(keys.written))
        keys_tally = chaos.keys_tally(
            state, tag, keys, lambda: chaos.await_processed(state, "kdone{%s}" % tag, {last}, timeout=RESUME_BOUND)
        )
        resumed = promoted + takeover.keys_s  # key events are lost only between the kill and this moment
        lost = {int(k.rsplit(":", 1)[1]) for k in keys_tally.extra["lost_keys"]}
        assert all(fault - 1 <= keys.written[n] <= resumed for n in lost), (keys_tally, takeover)
        old = redis.Redis(port=master.gears_port, decode_responses=True)  # the old master's new gears node
        assert len(old.execute_command("RG.DUMPREGISTRATIONS")) == 2
