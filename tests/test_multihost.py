"""Beyond one machine: three hosts and a client host, as network namespaces on one bridge.

Each host (its own network stack, address 10.77.0.N, nothing shared but the bridge) runs
what docs/deploy.md tells an operator to run on a machine: a master server node on 40001
and a replica server node on 40002 (of the *previous* host's master), each with its gears
node (front doors 30001 and 30002, ``--listen 0.0.0.0:...`` ``--announce 10.77.0.N:...``),
servers with ``requirepass``, nodes sharing one peer secret file. ``gears cluster create``
run on the client host forms the cluster. Everything else runs from the client host
(10.77.0.100): batch runs, a registration chain, a keymiss read-through through a cluster
client, ``AI.MODELEXECUTE`` on every host; then host 1 is lost (link cut, every process
killed): its replica on host 2 is promoted, host 2's gears node takes over host 1's
stream, no confirmed entry is lost; host 1 comes back and rejoins.

Needs root (``ip netns``); skips with the reason otherwise. Ports are the deployment's
own (no ``GEARS_TEST_PORT_SHIFT``): each namespace has its own ports.
"""

from __future__ import annotations

import ast
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from gears.engine.shards import hashtag_for_slot, key_slot
from gears_cluster.launcher import slot_ranges
from gears.wire.peerauth import PeerSecret, write_secret_file
from gears_cluster.servers import resolve_server_binary
from conftest import ROOT, answers_ping, wait_for
from netns import VirtualNetwork, netns_problem

_PROBLEM = netns_problem() if sys.platform == "linux" else "network namespaces are Linux only"
#: One of the cluster lane's longest files (``-m 'not slow'`` leaves it out).
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_PROBLEM is not None, reason=f"multi-host test skipped: {_PROBLEM}")]

SUBNET = "10.77.0"
HOSTS = ["h1", "h2", "h3"]
CLIENT = "client"
MASTER_PORT, REPLICA_PORT = 40001, 40002
MASTER_DOOR, REPLICA_DOOR = 30001, 30002
PASSWORD = "multihost-" + PeerSecret.generate()[:16]
#: Failure detection in 3 s instead of the default 15 s keeps the test short (docs/deploy.md).
NODE_TIMEOUT_MS = 3000
PERSONS, CITIES = 300, 5
STREAM_BEFORE, STREAM_AFTER, STREAM_BACK = 200, 100, 50


def _server_config(folder: Path, address: str, port: int) -> Path:
    """The server's config file, as docs/deploy.md writes /etc/valkey/valkey-PORT.conf."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"port {port}", f"bind {address}", f"dir {folder}", "daemonize no", 'logfile ""',
        "cluster-enabled yes", "cluster-config-file nodes.conf", f"cluster-node-timeout {NODE_TIMEOUT_MS}",
        f"cluster-announce-ip {address}", "appendonly yes", "notify-keyspace-events KEAm",
        f"unixsocket {folder / 'server.sock'}", "unixsocketperm 700",
        f'requirepass "{PASSWORD}"', f'masterauth "{PASSWORD}"',
    ]
    conf = folder / "valkey.conf"
    write_secret_file(conf, "\n".join(lines))
    return conf


class Deployment:
    """The four hosts and what runs on each."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.net = VirtualNetwork(SUBNET, {**{h: i + 1 for i, h in enumerate(HOSTS)}, CLIENT: 100})
        self.binary = resolve_server_binary("valkey")
        self.secret_file = base / "peer.secret"
        write_secret_file(self.secret_file, PeerSecret.generate())
        self.password_file = base / "password"
        write_secret_file(self.password_file, PASSWORD)
        self.env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name in ("GEARS_PASSWORD", "GEARS_PEER_SECRET"):
            self.env.pop(name, None)

    def ip(self, host: str) -> str:
        return self.net.address(host)

    def folder(self, host: str, port: int) -> Path:
        return self.base / host / str(port)

    def start_servers(self, host: str) -> None:
        """Start (or restart, keeping the data) both server nodes of ``host``; returns once they answer."""
        for port in (MASTER_PORT, REPLICA_PORT):
            conf = _server_config(self.folder(host, port), self.ip(host), port)
            self.net.spawn(host, [self.binary, str(conf)], self.folder(host, port) / "server.log")
        for port in (MASTER_PORT, REPLICA_PORT):
            wait_for(lambda port=port: answers_ping(self.server(host, port)), timeout=30, what=f"server {host}:{port}")

    def start_gears(self, host: str) -> None:
        for port, door in ((MASTER_PORT, MASTER_DOOR), (REPLICA_PORT, REPLICA_DOOR)):
            self.net.spawn(host, [
                sys.executable, "-m", "gears", "node",
                "--redis", f"{self.ip(host)}:{port}", "--redis-socket", str(self.folder(host, port) / "server.sock"),
                "--listen", f"0.0.0.0:{door}", "--announce", f"{self.ip(host)}:{door}",
                "--password-file", str(self.password_file), "--peer-secret-file", str(self.secret_file),
            ], self.folder(host, port) / "gears.log", env=self.env)

    def server(self, host: str, port: int) -> redis.Redis:
        return redis.Redis(host=self.ip(host), port=port, password=PASSWORD, decode_responses=True, socket_timeout=10)

    def door(self, host: str, door: int = MASTER_DOOR) -> redis.Redis:
        return redis.Redis(host=self.ip(host), port=door, password=PASSWORD, decode_responses=True, socket_timeout=60)

    def cluster(self, host: str = "h1") -> RedisCluster:
        return RedisCluster(host=self.ip(host), port=MASTER_DOOR, password=PASSWORD, decode_responses=True, socket_timeout=60)

    def doors(self, hosts: list[str] | None = None) -> list[tuple[str, int]]:
        return [(self.ip(h), d) for h in hosts or HOSTS for d in (MASTER_DOOR, REPLICA_DOOR)]


def _slots_name_front_doors(dep: Deployment, host: str, door: int, hosts: list[str]) -> bool:
    """``CLUSTER SLOTS`` through a front door names only front doors of ``hosts``."""
    client = dep.door(host, door)
    try:
        named = {(n[0], int(n[1])) for entry in client.execute_command("CLUSTER", "SLOTS") for n in entry[2:]}
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()
    return bool(named) and named <= set(dep.doors(hosts))


def _view_masters(door: tuple[str, int]) -> list[tuple[str, int]] | None:
    """The shards' masters (front doors, in slot order) as the gears node at ``door`` sees
    them (``RG.INFOCLUSTER``: the view its cluster-wide runs use; refreshed every 5 s)."""
    client = redis.Redis(host=door[0], port=door[1], password=PASSWORD, decode_responses=True, socket_timeout=10)
    try:
        return [(shard[3], int(shard[5])) for shard in client.execute_command("RG.INFOCLUSTER")[4]]
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()


def _await_views(dep: Deployment, hosts: list[str], masters: list[tuple[str, int]]) -> None:
    """Every gears node on ``hosts`` sees ``masters`` (host, front door port) as the shards' masters."""
    expected = [(dep.ip(h), d) for h, d in masters]
    for door in dep.doors(hosts):
        wait_for(lambda door=door: _view_masters(door) == expected, timeout=30, what=f"RG.INFOCLUSTER at {door} naming {expected}")


def _replicas_caught_up(dep: Deployment, pairs: list[tuple[tuple[str, int], tuple[str, int]]]) -> bool:
    """Every (master, replica) pair has the same replication offset (the replica has every write)."""
    for (mh, mp), (rh, rp) in pairs:
        master, replica = dep.server(mh, mp), dep.server(rh, rp)
        try:
            if master.info("replication")["master_repl_offset"] != replica.info("replication")["master_repl_offset"]:
                return False
        except (redis.RedisError, OSError):
            return False
        finally:
            master.close()
            replica.close()
    return True


#: Each host's master is replicated on the next host.
REPLICA_OF = {"h2": "h1", "h3": "h2", "h1": "h3"}
TAGS = [hashtag_for_slot(lo) for lo, _ in slot_ranges(len(HOSTS))]  # shard i's hashtag; its master on HOSTS[i]


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path_factory.mktemp("multihost"))
    try:
        with deployment.net.inside(CLIENT):
            for host in HOSTS:
                deployment.start_servers(host)
            masters = [f"{deployment.ip(h)}:{MASTER_PORT}" for h in HOSTS]
            replicas = [f"{deployment.ip(h)}:{REPLICA_PORT}" for h in REPLICA_OF]  # h2 holds h1's replica ...
            created = deployment.net.run(CLIENT, [
                sys.executable, "-m", "gears", "cluster", "create", *masters, *replicas, "--replicas", "1",
                "--password-file", str(deployment.password_file),
            ], env=deployment.env)
            assert created.returncode == 0, created.stderr
            for host in HOSTS:
                deployment.start_gears(host)
            for host, door in [(h, d) for h in HOSTS for d in (MASTER_DOOR, REPLICA_DOOR)]:
                wait_for(lambda h=host, d=door: answers_ping(deployment.door(h, d)), timeout=120, what=f"gears node {host}:{door}")
                wait_for(lambda h=host, d=door: _slots_name_front_doors(deployment, h, d, HOSTS), timeout=30,
                         what=f"front doors in CLUSTER SLOTS at {host}:{door}")
        yield deployment
    finally:
        deployment.net.destroy()


@pytest.fixture(autouse=True)
def from_client_host(dep: Deployment) -> Iterator[None]:
    """Every test talks from the client host."""
    with dep.net.inside(CLIENT):
        yield


def _pyexecute(client: redis.Redis, script: str, *options: str) -> object:
    return client.execute_command("RG.PYEXECUTE", script, *options)


def _records(reply: object) -> list[object]:
    results, errors = reply  # type: ignore[misc]
    assert errors == [], errors
    return [ast.literal_eval(r) for r in results]


def _shard_of(key: str) -> int:
    slot = key_slot(key)
    return next(i for i, (lo, hi) in enumerate(slot_ranges(len(HOSTS))) if lo <= slot <= hi)


def _check_persons(dep: Deployment, host: str) -> None:
    """Batch runs through ``host``'s front door: a repartition (countby) and a collect (count)."""
    client = dep.door(host)
    by_city = {r["key"]: r["value"] for r in _records(_pyexecute(client, "GB().map(lambda r: r['value']['city']).countby().run('person:*')"))}
    assert by_city == {f"c{c}": PERSONS // CITIES for c in range(CITIES)}
    by_shard = {r["key"]: r["value"] for r in _records(_pyexecute(client, "GB().map(lambda r: hashtag()).countby().run('person:*')"))}
    expected = Counter(TAGS[_shard_of(f"person:{i}")] for i in range(PERSONS))
    assert by_shard == dict(expected) and len(by_shard) == len(HOSTS)
    assert _records(_pyexecute(client, "GB().count().run('person:*')")) == [PERSONS]
    # each city's records cross to the shard owning the city's name, then come back to the initiator
    routed = _pyexecute(client, "GB().map(lambda r: r['value']['city']).repartition(lambda c: c)"
                                ".map(lambda c: (c, hashtag())).collect().distinct().run('person:*')")
    assert sorted(_records(routed)) == sorted((f"c{c}", TAGS[_shard_of(f"c{c}")]) for c in range(CITIES))
    client.close()


def test_the_cluster_spans_the_hosts_and_clients_see_only_front_doors(dep):
    cluster = dep.cluster()
    assert {(n.host, n.port) for n in cluster.get_nodes()} == set(dep.doors())
    for i, host in enumerate(HOSTS):
        assert cluster.get_node_from_key(f"k{{{TAGS[i]}}}").host == dep.ip(host)
    shards = _records(_pyexecute(dep.door("h2"), "GB('ShardsIDReader').map(lambda x: (x, hashtag())).run()"))
    assert sorted(tag for _, tag in shards) == sorted(TAGS)
    for replica_host, master_host in REPLICA_OF.items():
        role = dep.server(replica_host, REPLICA_PORT).execute_command("ROLE")
        assert role[0] == "slave" and (role[1], int(role[2])) == (dep.ip(master_host), MASTER_PORT)
    unauthenticated = redis.Redis(host=dep.ip("h3"), port=MASTER_DOOR)
    with pytest.raises(redis.AuthenticationError):
        unauthenticated.ping()
    cluster.close()


@pytest.fixture(scope="module")
def persons(dep: Deployment) -> None:
    """``PERSONS`` hashes over the three shards, on the replicas too."""
    with dep.net.inside(CLIENT):
        cluster = dep.cluster("h3")
        for i in range(PERSONS):
            cluster.hset(f"person:{i}", mapping={"name": f"p{i}", "city": f"c{i % CITIES}"})
        cluster.close()
        pairs = [((master, MASTER_PORT), (replica, REPLICA_PORT)) for replica, master in REPLICA_OF.items()]
        wait_for(lambda: _replicas_caught_up(dep, pairs), timeout=30, what="replicas caught up")


@pytest.fixture(scope="module")
def readthrough(dep: Deployment) -> None:
    """A keymiss read-through on ``rt:*`` keys (GET of a missing one answers ``computed:KEY@HASHTAG``)."""
    script = ("GB().foreach(lambda r: override_reply('computed:' + r['key'] + '@' + hashtag()))"
              ".register('rt:*', mode='async_local', eventTypes=['keymiss'], commands=['get'])")
    with dep.net.inside(CLIENT):
        assert _pyexecute(dep.door("h2"), script, "ID", "readthrough") == "OK"


def test_batch_runs_collect_and_repartition_across_hosts(dep, persons):
    for host in HOSTS:
        _check_persons(dep, host)


def test_registration_chain_keys_to_stream_to_another_host(dep):
    sink = f"sink{{{TAGS[2]}}}"  # on h3's shard
    script = (
        "GB().foreach(lambda r: execute('XADD', 'chain{%s}' % hashtag(), '*', 'key', r['key']))"
        ".register('ord:*', mode='async_local', eventTypes=['set'])\n"
        "GB('StreamReader').map(lambda r: r['value']['key']).repartition(lambda k: '" + sink + "')"
        ".foreach(lambda k: execute('SADD', '" + sink + "', k)).register('chain*', mode='async', batch=10, duration=50)"
    )
    assert _pyexecute(dep.door("h1"), script, "ID", "chain") == "OK"
    cluster = dep.cluster("h2")
    keys = [f"ord:{i}" for i in range(60)]
    assert {_shard_of(k) for k in keys} == {0, 1, 2}
    for key in keys:
        cluster.set(key, 1)
    wait_for(lambda: cluster.scard(sink) == len(keys), timeout=60, what="every order in the sink")
    assert cluster.smembers(sink) == set(keys)
    wait_for(lambda: all(cluster.xlen(f"chain{{{t}}}") == 0 for t in TAGS), timeout=30, what="chain streams trimmed")
    cluster.close()


def test_keymiss_read_through_follows_moved_to_front_doors(dep, readthrough):
    cluster = dep.cluster("h3")
    for i in range(30):
        assert cluster.get(f"rt:{i}") == f"computed:rt:{i}@{TAGS[_shard_of(f'rt:{i}')]}"
    key = next(f"rt:{i}" for i in range(100) if _shard_of(f"rt:{i}") == 2)
    with pytest.raises(redis.exceptions.MovedError) as moved:
        dep.door("h1").get(key)
    assert (moved.value.host, moved.value.port) == (dep.ip("h3"), MASTER_DOOR)
    assert redis.Redis(host=moved.value.host, port=moved.value.port, password=PASSWORD, decode_responses=True).get(key) == f"computed:{key}@{TAGS[2]}"
    cluster.close()


def test_modelexecute_on_every_host(dep):
    from ai_models import Affine, torchscript

    blob = torchscript(Affine())
    for i, host in enumerate(HOSTS):
        client = dep.door(host)
        tag = TAGS[i]
        assert client.execute_command("AI.MODELSTORE", f"m{{{tag}}}", "TORCH", "CPU", "BLOB", blob) == "OK"
        client.execute_command("AI.TENSORSET", f"x{{{tag}}}", "FLOAT", 1, 4, "VALUES", 1, 2, 3, 4)
        assert client.execute_command("AI.MODELEXECUTE", f"m{{{tag}}}", "INPUTS", 1, f"x{{{tag}}}", "OUTPUTS", 1, f"y{{{tag}}}") == "OK"
        values = client.execute_command("AI.TENSORGET", f"y{{{tag}}}", "VALUES")
        assert [float(v) for v in values] == pytest.approx([6.0, 7.0, 8.0])
        client.close()


STREAM = f"ev{{{TAGS[0]}}}"  # h1's shard
DONE = f"done{{{TAGS[0]}}}"
STREAM_SCRIPT = (
    "import time\n"
    "def step(r):\n"
    "    time.sleep(0.01)\n"
    "    execute('HINCRBY', '" + DONE + "', r['value']['n'], 1)\n"
    "GB('StreamReader').foreach(step).register('" + STREAM + "', mode='async_local', batch=10, duration=100)"
)


def _write_entries(client: redis.Redis, first: int, count: int, *, confirm: bool) -> None:
    pipe = client.pipeline(transaction=False)
    for n in range(first, first + count):
        pipe.xadd(STREAM, {"n": n})
    pipe.execute()
    if confirm:  # on the replica too, so it survives losing the host
        assert client.execute_command("WAIT", 1, 10000) == 1


def _processed(client: redis.Redis) -> dict[int, int]:
    return {int(k): int(v) for k, v in client.hgetall(DONE).items()}


def _pending(client: redis.Redis) -> int:
    return sum(int(group["pending"]) for group in client.xinfo_groups(STREAM))


def test_losing_a_host_promotes_its_replica_elsewhere_and_loses_no_stream_entry(dep, persons, readthrough):
    h1 = dep.door("h1")
    assert _pyexecute(h1, STREAM_SCRIPT, "ID", "events") == "OK"
    _write_entries(h1, 0, STREAM_BEFORE, confirm=True)
    wait_for(lambda: len(_processed(h1)) >= STREAM_BEFORE // 4, timeout=60, what="the stream half consumed")
    h1.close()

    dep.net.cut("h1")
    assert dep.net.kill_host("h1") >= 4  # 2 servers, 2 gears nodes (and their workers)

    promoted = dep.server("h2", REPLICA_PORT)
    wait_for(lambda: promoted.execute_command("ROLE")[0] == "master", timeout=60, what="h1's replica on h2 promoted")
    takeover = dep.door("h2", REPLICA_DOOR)
    wait_for(lambda: any(STREAM in str(e) for e in takeover.execute_command("RG.DUMPREGISTRATIONS")), timeout=30,
             what="h2's second gears node running the stream registration")
    _write_entries(takeover, STREAM_BEFORE, STREAM_AFTER, confirm=False)  # the shard has no replica left
    total = STREAM_BEFORE + STREAM_AFTER
    wait_for(lambda: len(_processed(takeover)) == total and _pending(takeover) == 0, timeout=90,
             what="every entry processed on the new master")
    done = _processed(takeover)
    assert set(done) == set(range(total))  # at least once: none lost
    assert all(runs >= 1 for runs in done.values())
    duplicates = sum(done.values()) - total
    assert duplicates <= 20, f"{duplicates} entries ran twice: more than the two batches the replication lag can hold"
    wait_for(lambda: takeover.xlen(STREAM) == 0, timeout=30, what="the stream trimmed on the new master")

    survivors = ["h2", "h3"]
    _await_views(dep, survivors, [("h2", REPLICA_DOOR), ("h2", MASTER_DOOR), ("h3", MASTER_DOOR)])
    for host in survivors:
        wait_for(lambda h=host: _slots_name_front_doors(dep, h, MASTER_DOOR, survivors), timeout=30,
                 what=f"front doors of the surviving hosts in CLUSTER SLOTS at {host}")
    _check_persons(dep, "h2")
    cluster = dep.cluster("h3")
    key = next(f"rt:{i}" for i in range(100) if _shard_of(f"rt:{i}") == 0)
    assert cluster.get(key) == f"computed:{key}@{TAGS[0]}"  # h1's shard read through on h2
    cluster.close()

    # host 1 comes back: its servers rejoin as replicas, its gears nodes come up beside them
    dep.net.reconnect("h1")
    dep.start_servers("h1")
    dep.start_gears("h1")
    old_master = dep.server("h1", MASTER_PORT)
    wait_for(lambda: old_master.execute_command("ROLE")[0] == "slave", timeout=60, what="h1's old master a replica")
    wait_for(lambda: _replicas_caught_up(dep, [(("h2", REPLICA_PORT), ("h1", MASTER_PORT)), (("h3", MASTER_PORT), ("h1", REPLICA_PORT))]),
             timeout=60, what="h1's servers in sync")
    for door in (MASTER_DOOR, REPLICA_DOOR):
        wait_for(lambda d=door: answers_ping(dep.door("h1", d)), timeout=120, what=f"h1's gears node {door}")
    for host in HOSTS:
        wait_for(lambda h=host: _slots_name_front_doors(dep, h, MASTER_DOOR, HOSTS), timeout=30,
                 what=f"every host's front doors in CLUSTER SLOTS at {host}")
    _await_views(dep, HOSTS, [("h2", REPLICA_DOOR), ("h2", MASTER_DOOR), ("h3", MASTER_DOOR)])
    _check_persons(dep, "h3")
    with pytest.raises(redis.ResponseError, match="^this gears node serves a replica"):
        _pyexecute(dep.door("h1"), "GB().count().run('person:*')")  # h1's old master is a replica now
    cluster = dep.cluster("h1")  # a cluster client from h1's front door reads through on every shard
    assert [cluster.get(f"rt:{i}") for i in range(30)] == [f"computed:rt:{i}@{TAGS[_shard_of(f'rt:{i}')]}" for i in range(30)]
    cluster.close()

    # and takes its shard back (a manual failover, as an operator does after repairs)
    assert old_master.execute_command("CLUSTER", "FAILOVER") == "OK"
    wait_for(lambda: old_master.execute_command("ROLE")[0] == "master", timeout=60, what="h1 master again")
    _await_views(dep, HOSTS, [("h1", MASTER_DOOR), ("h2", MASTER_DOOR), ("h3", MASTER_DOOR)])
    _check_persons(dep, "h1")
    back = dep.door("h1")
    wait_for(lambda: any(STREAM in str(e) for e in back.execute_command("RG.DUMPREGISTRATIONS")), timeout=30,
             what="h1's gears node running the stream registration again")
    _write_entries(back, total, STREAM_BACK, confirm=True)
    final = total + STREAM_BACK
    wait_for(lambda: len(_processed(back)) == final and _pending(back) == 0, timeout=60, what="entries processed on h1 again")
    assert set(_processed(back)) == set(range(final))
    back.close()
