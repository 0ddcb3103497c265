"""Chaos: one fault at a time with a writer running, exact counts afterwards.

Each test injects one fault (``kill -9`` of a server node, of a gears node, of a worker,
a poison entry, code that ignores an abort, a master failover) while
:class:`gears_cluster.chaos.Writer` writes, then asserts: every written stream entry processed
(``lost == 0``), duplicates bounded by what was in flight, no entry left pending, the
stream trimmed, the registrations running again. Registrations must resume within
``RESUME_BOUND`` seconds: that is the timeout of each wait for processing, not a timing
assertion on a measured figure. Stream registrations use ``onFailedPolicy='abort'``
where a fault must not count as the user's failure (an outage that did would stop them).
"""

from __future__ import annotations

import uuid

import pytest
import redis

from gears_cluster import chaos, launcher
from conftest import free_base_port, launched_cluster, shifted_port, wait_for

#: One of the cluster lane's longest files (``-m 'not slow'`` leaves it out).
pytestmark = pytest.mark.slow

#: A registration must be running again within this many seconds of a fault.
RESUME_BOUND = chaos.SETTLE_TIMEOUT
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
    chaos.register(chaos1, chaos.KEYS_SCRIPT % {"tag": tag})

    def outage_shows() -> None:  # the gears node runs on, but answers nothing without its server
        node = launcher.status(chaos1.dir)["nodes"][0]
        assert node["health"]["server"] == "unreachable" and node["gears_pid"] is not None

    script = chaos.SLOW_STREAM_SCRIPT % {"tag": tag, "batch": BATCH, "policy": "abort"}  # the kill lands inside a batch
    tally = chaos.stream_fault(chaos1, tag, 600, lambda: chaos.restart_server(chaos1, chaos1.nodes[0], outage_shows),
                               batch=BATCH, script=script)
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
    node = chaos1.nodes[0]
    if victim == "worker":
        fault = lambda: chaos.kill_worker(node)  # noqa: E731 - the node restarts its worker itself
    else:
        fault = lambda: chaos.restart_gears_node(chaos1, node)  # noqa: E731
    tally = chaos.stream_fault(chaos1, unique(), 400, fault, batch=BATCH, policy="abort")
    assert tally.written == 400 and tally.lost == 0 and tally.processed == 400
    assert tally.duplicates <= BATCH
    assert tally.pending == 0 and tally.length == 0


def test_a_poison_entry_is_isolated_and_the_other_registrations_keep_running(chaos1):
    from gears.worker.registrations.stream_consumers import MAX_WORKER_CRASHES

    tag, other = unique(), unique()
    entry_n = 50
    client = chaos1.client()
    restarts = health(client)["workerRestarts"]
    poisoned, others, keys = chaos.poison(chaos1, tag, other, 200, entry_n, batch=BATCH)
    assert poisoned.written == 200 and poisoned.processed == 199 and poisoned.lost == 1  # only the poison entry
    assert poisoned.pending == 0 and poisoned.length == 0  # onFailedPolicy 'continue': acknowledged, trimmed
    assert others.lost == 0 and others.pending == 0 and others.length == 0  # the other registrations ran
    assert keys.written == 20 and keys.lost == 0
    entry = registration(client, f"cs{{{tag}}}")
    assert stat(entry, "status") == "OK" and stat(entry, "numFailures") == 1
    assert f"crashed {MAX_WORKER_CRASHES} times" in stat(entry, "lastError")
    assert health(client)["workerRestarts"] - restarts == MAX_WORKER_CRASHES  # one crash per try, then no more
    node_health = launcher.status(chaos1.dir)["nodes"][0]["health"]
    assert [entry[1], 1, stat(entry, "lastError")] in node_health["with_errors"]


@pytest.mark.parametrize("policy, status", [("abort", "ABORTED"), ("retry", "WAITING_FOR_RETRY_ON_FAILURE")])
def test_a_poison_entry_under_abort_or_retry_policy(chaos1, policy, status):
    """``abort`` stops the registration at the poison entry (it stays pending); ``retry``
    keeps it and tries again after a growing back-off."""
    from gears.worker.registrations.stream_consumers import MAX_WORKER_CRASHES

    tag = unique()
    script = chaos.POISON_SCRIPT % {"tag": tag, "batch": 1, "poison": 3}
    script = script.replace("duration=100", f"duration=100, onFailedPolicy='{policy}', onFailedRetryInterval=1")
    client = chaos1.client()
    client.execute_command("RG.PYEXECUTE", script)
    reg_id = registration(client, f"cs{{{tag}}}")[1]
    try:
        for n in range(6):
            client.xadd(chaos.stream_name(tag), {"n": n})
        wait_for(lambda: stat(registration(client, f"cs{{{tag}}}"), "status") == status, timeout=RESUME_BOUND,
                 what=f"the registration {status}")
        entry = registration(client, f"cs{{{tag}}}")
        assert f"crashed {MAX_WORKER_CRASHES} times" in stat(entry, "lastError")
        assert set(client.hkeys("done{%s}" % tag)) == {"0", "1", "2"}  # nothing past the poison entry
        assert client.xlen(chaos.stream_name(tag)) == 3  # the poison entry and those after it are kept
    finally:
        client.execute_command("RG.UNREGISTER", reg_id)


def test_abort_replaces_a_worker_held_by_c_code_and_the_node_stays_responsive(chaos1):
    run = chaos.AbortRun()
    tally = chaos.stream_fault(chaos1, unique(), 300, lambda: chaos.abort_c_loop(chaos1, run), batch=BATCH, policy="abort")
    assert run.listed  # answered (within chaos.LISTING_TIMEOUT) while the worker's GIL was held
    assert run.reply == [[], ["Execution was aborted"]]
    assert run.bystander[0] == [] and "did not stop within AbortGracePeriodMS" in run.bystander[1][0]
    # the stream registration came back in the new worker
    assert tally.written == 300 and tally.lost == 0 and tally.pending == 0 and tally.length == 0
    assert tally.duplicates <= BATCH


def test_memory_limit_is_on_by_default_and_stops_a_bomb_near_it(chaos1):
    from gears.node.config import default_worker_memory_mb

    client = chaos1.client()
    assert client.execute_command("RG.CONFIGGET", "WorkerMaxMemoryMB") == [default_worker_memory_mb()]
    assert default_worker_memory_mb() > 0
    limit = 300
    errors, killed_at = chaos.memory_bomb(chaos1, limit)
    assert len(errors) == 1 and "WorkerMaxMemoryMB=300" in errors[0]
    assert client.execute_command("RG.CONFIGGET", "WorkerMaxMemoryMB") == [default_worker_memory_mb()]
    assert limit < killed_at < 2 * limit, errors[0]  # stopped near the limit


#: Server directives of the failover cluster: a dead master is noticed after 1 s.
FAILOVER_CONFIG = {"cluster-node-timeout": "1000"}


@pytest.mark.parametrize("host", [True, False], ids=["host lost", "server only"])
def test_failover_loses_no_stream_entry_and_cluster_up_brings_the_old_master_back(tmp_path, host):
    """kill -9 of a master's server (with ``host``: and its gears node) with a stream and
    keys written; the replica is promoted, its node takes over; ``gears cluster up``
    brings the old master back as a replica, with a new gears node or beside the one that
    kept running."""
    base = free_base_port(13201, 3, 1)
    with launched_cluster(tmp_path, masters=3, replicas=1, base_port=base, what="failover", config=FAILOVER_CONFIG) as state:
        run = chaos.failover(state, unique(), 1500, batch=BATCH, host=host)
        roles = {n["redis"]: n["role"] for n in launcher.status(state.dir)["nodes"]}
        assert roles[run.master.address] == "replica" and roles[run.replica.address] == "master"
        tally = run.stream
        assert tally.written >= 1000 and tally.lost == 0 and tally.processed >= tally.written + 1  # + the probe
        assert tally.pending == 0 and tally.length == 0  # nothing stuck with the dead consumer; trimmed
        assert tally.duplicates <= 10 * BATCH, tally  # batches run but not yet acknowledged on the replica
        # key events are lost only for writes acknowledged from a second before the kill
        # (events queued in the dead worker) until the promoted node handled one again
        resumed = run.promoted + run.takeover.keys_s
        lost = [int(key.rsplit(":", 1)[1]) for key in run.keys.extra["lost_keys"]]
        assert all(run.fault - 1 <= run.key_times[n] <= resumed for n in lost), (run.keys, run.takeover)
        old = redis.Redis(port=run.master.gears_port, decode_responses=True)  # the old master's gears node
        assert len(old.execute_command("RG.DUMPREGISTRATIONS")) == 2
        old_health = next(n for n in launcher.status(state.dir)["nodes"] if n["redis"] == run.master.address)["health"]
        assert old_health["server"] == "ok" and old_health["worker"] == "alive" and old_health["not_running"] == []
