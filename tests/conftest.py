"""Shared pytest fixtures: local clusters started once per test session.

* ``cluster1``: 1 master + gears node, front door on 11001 (server 21001).
* ``cluster3``: 3 masters + gears nodes, front doors 11011-11013 (servers 21011-21013).
* ``gc``: ``cluster1`` and ``cluster3`` in turn (a test using it runs on both).
* ``server_cluster3``: 3 bare masters (no gears nodes) on 21021-21023; its ``.ports``
  (11021-11023) are free for a front door a test runs itself.
* ``engine``: one ``RG.PYEXECUTE`` engine in turn: ``gears.engine.testing``'s in-process host,
  then ``cluster1``, then ``cluster3`` (see :class:`InProcessEngine`, :class:`ClusterEngine`),
  for tests of the engine's semantics that must hold wherever a script runs.

Every test port (front door, server, bus = server + 10000) stays below 32768, out of
Linux's ephemeral port range: a client connection's ephemeral port (open or in
TIME_WAIT) blocks a server from binding it.

Each yields a :class:`gears_cluster.launcher.ClusterState`: ``.ports`` (front doors),
``.server_ports``, ``.dir``, ``.client()`` (``redis.Redis`` on the first front door,
decoding), ``.cluster_client()`` (``redis.RedisCluster`` from the first front door),
``.server_client(i)`` (``redis.Redis`` on server node ``i``, 0-based).

Set ``GEARS_TEST_PORT_SHIFT=N`` to move every test port up by ``N`` (e.g. when
another test run already uses the defaults on this machine).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The tests install requirement sets into a folder of their own instead of the user's
# ~/.cache one; the gears nodes the fixtures start inherit this environment.
REQUIREMENTS_DIR_VARIABLE = "GEARS_REQUIREMENTS_DIR"
os.environ.setdefault(REQUIREMENTS_DIR_VARIABLE, tempfile.mkdtemp(prefix="gears-test-requirements-"))

from gears_cluster import launcher  # noqa: E402
from gears_cluster.servers import port_in_use, port_listening  # noqa: E402

#: Added to every base port the tests use (see the module docstring).
PORT_SHIFT = int(os.environ.get("GEARS_TEST_PORT_SHIFT", "0"))


def shifted_port(base: int) -> int:
    """A test base port, moved by ``GEARS_TEST_PORT_SHIFT``."""
    return base + PORT_SHIFT


def busy_ports(masters: int, replicas: int, base_port: int, gears: bool = True) -> list[int]:
    """The ports of such a cluster that something listens on (another cluster, a
    user's server). Ports held only by closing client connections are not counted:
    the launcher waits for those."""
    return [p for p in launcher.ports_needed(masters, replicas, base_port, gears) if port_listening(p)]


def require_free_ports(masters: int, replicas: int, base_port: int, gears: bool, what: str) -> None:
    """Fail the test (clearly) when a port the cluster needs is taken."""
    busy = busy_ports(masters, replicas, base_port, gears)
    if busy:
        shown = ", ".join(map(str, busy[:6])) + (" ..." if len(busy) > 6 else "")
        pytest.fail(
            f"{what}: port(s) {shown} already in use (another test run or cluster?); "
            "stop it or set GEARS_TEST_PORT_SHIFT",
            pytrace=False,
        )


def free_base_port(preferred: int, masters: int, replicas: int = 0, gears: bool = True) -> int:
    """``preferred`` (shifted), or the next base 100 ports up whose cluster ports can
    all be bound now: for tests that need a cluster of their own but no fixed ports.

    Unlike :func:`busy_ports` this also skips ports held by client connections (an
    ephemeral port in TIME_WAIT blocks a server for up to a minute).
    """
    base = shifted_port(preferred)
    for step in range(50):
        candidate = base + 100 * step
        if not any(port_in_use(p) for p in launcher.ports_needed(masters, replicas, candidate, gears)):
            return candidate
    pytest.fail(f"no free ports for a test cluster near {base}", pytrace=False)


def wait_for(
    predicate: Callable[[], object],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str = "condition",
    describe: Callable[[], object] | None = None,
) -> object:
    """Poll ``predicate`` until it returns something true (returned); fail after ``timeout`` s,
    saying what ``describe()`` gives then (the state the condition was waiting on)."""
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() >= deadline:
            seen = f"; last seen: {describe()!r}" if describe is not None else ""
            raise AssertionError(f"{what} not met within {timeout} s{seen}")
        time.sleep(interval)


def get_following_moved(port: int, key: str, timeout: float = 60.0) -> str | None:
    """``GET key`` as a plain (non-cluster) client does it, the way ``redis-cli -c`` does:
    ask the front door on ``port`` and follow one ``MOVED`` to the address it names."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=timeout)
    try:
        return client.get(key)  # type: ignore[return-value]
    except redis.exceptions.MovedError as moved:
        target = redis.Redis(host=moved.host, port=moved.port, decode_responses=True, socket_timeout=timeout)
        try:
            return target.get(key)  # type: ignore[return-value]
        finally:
            target.close()
    finally:
        client.close()


@contextlib.contextmanager
def gears_nodes(
    servers: list[int],
    doors: list[int],
    folder: Path,
    args: list[str],
    client: Callable[[int], object],
) -> Iterator[None]:
    """``gears node`` processes (one per server port, front door on the matching port in
    ``doors``, all with ``args`` and one fresh peer secret), stopped afterwards; ready once
    ``client(door).ping()`` answers on every front door."""
    from gears.wire.peerauth import PeerSecret, write_secret_file

    secret = folder / "peer.secret"
    write_secret_file(secret, PeerSecret.generate())
    processes = []
    try:
        for server, door in zip(servers, doors, strict=True):
            log = open(folder / f"gears-{door}.log", "ab")  # noqa: SIM115 - closed with the process below
            processes.append((log, subprocess.Popen(
                [sys.executable, "-m", "gears", "node", "--redis", f"127.0.0.1:{server}", "--listen", f"127.0.0.1:{door}",
                 "--peer-secret-file", str(secret), *args],
                stdout=log, stderr=subprocess.STDOUT,
            )))
        for door in doors:
            connection = client(door)
            try:
                wait_for(lambda connection=connection: answers_ping(connection), timeout=60, what=f"gears node {door}")
            finally:
                connection.close()  # type: ignore[attr-defined]
        yield
    finally:
        for log, process in processes:
            process.terminate()
            process.wait(20)
            log.close()


@contextlib.contextmanager
def cluster_with_own_requirements(folder: Path, *args: Any, **kwargs: Any) -> Iterator[launcher.ClusterState]:
    """:func:`launched_cluster` whose gears nodes get ``folder`` as their requirement folder
    (it starts empty: nothing installed, no wheels kept)."""
    saved = os.environ[REQUIREMENTS_DIR_VARIABLE]
    os.environ[REQUIREMENTS_DIR_VARIABLE] = str(folder)
    try:
        with launched_cluster(*args, **kwargs) as state:
            os.environ[REQUIREMENTS_DIR_VARIABLE] = saved  # read by the nodes at start only
            yield state
    finally:
        os.environ[REQUIREMENTS_DIR_VARIABLE] = saved


def answers_ping(client: object) -> bool:
    """Whether ``client`` (a ``redis.Redis``, closed afterwards) gets an answer to ``PING``
    (a server still loading its data does not answer yet)."""
    import redis

    try:
        return bool(client.ping())  # type: ignore[attr-defined]
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, OSError):
        return False
    finally:
        client.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def serving(app: object, port: int) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on ``port`` in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, what="the API server started")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def _sigterm_to_exit() -> None:
    """Turn SIGTERM into SystemExit so teardown and atexit handlers stop our clusters."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@contextlib.contextmanager
def launched_cluster(
    tmp_dir: Path,
    *,
    masters: int,
    replicas: int = 0,
    base_port: int,
    gears: bool = True,
    what: str,
    server: str | None = None,
    config: dict[str, str] | None = None,
    requirepass: str | None = None,
) -> Iterator[launcher.ClusterState]:
    """Start a cluster in ``tmp_dir`` (servers requiring ``requirepass`` if given) and
    stop it (by pid) when done, whatever happens."""
    require_free_ports(masters, replicas, base_port, gears, what)
    _sigterm_to_exit()

    def stop() -> None:
        with contextlib.suppress(Exception):
            launcher.down(tmp_dir)

    atexit.register(stop)
    try:
        state = launcher.up(
            masters=masters, replicas=replicas, base_port=base_port, dir=tmp_dir, gears=gears, server=server,
            config=config,
            requirepass=requirepass,
        )
        yield state
    finally:
        stop()
        atexit.unregister(stop)


@contextlib.contextmanager
def cluster_with_graph(folder: Path, preferred_base: int, masters: int) -> Iterator[tuple[launcher.ClusterState, tuple[str, int]]]:
    """A cluster of ``masters`` in ``folder / 'cluster'`` near ``preferred_base`` with a
    FalkorDB graph server (port base + 98); yields the state and the graph's address,
    stops both afterwards."""
    base = free_base_port(preferred_base, masters)
    graph = ("127.0.0.1", base + 98)
    state = launcher.up(masters=masters, base_port=base, dir=folder / "cluster", graph_port=graph[1])
    try:
        yield state, graph
    finally:
        launcher.down(folder / "cluster")


@pytest.fixture(scope="session")
def cluster1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """One master with its gears node (front door ``cluster1.ports[0]``)."""
    with launched_cluster(
        tmp_path_factory.mktemp("cluster1"), masters=1, base_port=shifted_port(11001), what="cluster1"
    ) as state:
        yield state


@pytest.fixture(scope="session")
def cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """Three masters, each with its gears node."""
    with launched_cluster(
        tmp_path_factory.mktemp("cluster3"), masters=3, base_port=shifted_port(11011), what="cluster3"
    ) as state:
        yield state


@pytest.fixture(params=["cluster1", "cluster3"])
def gc(request: pytest.FixtureRequest) -> launcher.ClusterState:
    """The 1-shard and the 3-shard cluster in turn."""
    return request.getfixturevalue(request.param)


class ClusterEngine:
    """``RG.PYEXECUTE`` on a live cluster's first front door."""

    def __init__(self, state: launcher.ClusterState) -> None:
        self._state = state
        #: How many shards a run spreads over.
        self.shards = len(state.ports)

    def load(self, values: dict[str, str]) -> None:
        """Write string keys (each on its own shard's server)."""
        cluster = self._state.cluster_client()
        try:
            pipe = cluster.pipeline(transaction=False)
            for key, value in values.items():
                pipe.set(key, value)
            pipe.execute()
        finally:
            cluster.close()

    def run(self, script: str) -> Any:
        """The ``RG.PYEXECUTE`` reply (``[[results], [errors]]`` for a blocking run)."""
        client = self._state.client()
        try:
            return client.execute_command("RG.PYEXECUTE", script)
        finally:
            client.close()


class InProcessEngine:
    """``gears.engine.testing``'s in-process host (one shard, no server) with the interface of
    :class:`ClusterEngine`. A ``KeysReader`` run reads the keys :meth:`load` gave it,
    whatever its key pattern (each test loads keys of its own prefix only); the other
    readers read as they do on a node."""

    shards = 1

    def __init__(self) -> None:
        self._records: list[dict[str, Any]] | None = None

    def load(self, values: dict[str, str]) -> None:
        """Keep string keys as the records a ``KeysReader`` yields."""
        self._records = (self._records or []) + [
            {"key": key, "value": value, "type": "string", "event": None} for key, value in values.items()
        ]

    def run(self, script: str) -> Any:
        """The reply ``RG.PYEXECUTE`` would give (``OK`` for a script without a run)."""
        from gears.engine.testing import run_script

        result = run_script(script, records=self._records)
        return "OK" if result is None else result.reply


@pytest.fixture(params=["inprocess", "cluster1", "cluster3"])
def engine(request: pytest.FixtureRequest) -> ClusterEngine | InProcessEngine:
    """gears.engine.testing's in-process host, the 1-shard and the 3-shard cluster in turn."""
    if request.param == "inprocess":
        return InProcessEngine()
    return ClusterEngine(request.getfixturevalue(request.param))


@pytest.fixture(scope="session")
def server_cluster3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterState]:
    """Three bare server masters, no gears nodes (for front-door tests)."""
    with launched_cluster(
        tmp_path_factory.mktemp("server_cluster3"), masters=3, base_port=shifted_port(11021), gears=False,
        what="server_cluster3",
    ) as state:
        yield state
