"""Machines on one Linux box: network namespaces joined by a bridge (for tests/test_multihost.py).

A :class:`VirtualNetwork` makes one namespace per host, each with its own loopback and
one interface ``eth0`` holding its address, and a *switch* namespace holding a bridge
that every host's ``eth0`` is cabled to (a veth pair whose other end is a bridge port).
Nothing is added to the namespace the test runs in: no address, no interface, no route.

A host's link is cut by taking its bridge port down (:meth:`VirtualNetwork.cut`).
Processes run inside a host with ``ip netns exec`` (:meth:`VirtualNetwork.spawn`), each
in its own session; :meth:`VirtualNetwork.kill_host` kills every process in a host's
namespace and :meth:`VirtualNetwork.destroy` everything, then deletes the namespaces.
:meth:`VirtualNetwork.inside` moves the calling thread into a host's namespace, so
ordinary clients of the test talk from that host.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["NetnsUnavailable", "VirtualNetwork", "netns_problem"]

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = Path("/run/netns")
#: Every namespace this module makes is named ``<prefix><creator pid>-<name>``.
_PREFIX = "gftest"


class NetnsUnavailable(Exception):
    """Network namespaces cannot be made here (not root, no ``ip``, or the kernel refuses)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip() or done.returncode}")
    return done


def netns_problem() -> str | None:
    """Why this machine cannot run namespace tests (``None``: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (`ip netns add` makes /run/netns entries and veth pairs)"
    try:
        _ip("-V")
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    probe = f"{_PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
    except NetnsUnavailable as exc:
        return f"this kernel or container refuses network namespaces or veth pairs: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _remove_stale() -> None:
    """Delete namespaces left by test runs whose process is gone (killed before teardown)."""
    if not _NETNS_DIR.is_dir():
        return
    for entry in _NETNS_DIR.iterdir():
        owner = entry.name.removeprefix(_PREFIX).partition("-")[0]
        if entry.name.startswith(_PREFIX) and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            _kill_all_in(entry.name)
            _ip("netns", "del", entry.name, check=False)


def _pids_in(namespace: str) -> list[int]:
    done = _ip("netns", "pids", namespace, check=False)
    return [int(pid) for pid in done.stdout.split() if pid.isdigit()]


def _kill_all_in(namespace: str, timeout: float = 20.0) -> None:
    """SIGKILL every process in ``namespace`` and wait until none is left."""
    deadline = time.monotonic() + timeout
    while True:
        pids = _pids_in(namespace)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes {pids} in namespace {namespace} survived SIGKILL")
        time.sleep(0.05)


class VirtualNetwork:
    """Hosts (network namespaces) on one bridge in ``subnet`` (``"10.77.0"``: a /24)."""

    def __init__(self, subnet: str, hosts: dict[str, int]) -> None:
        """``hosts`` maps a host name to the last byte of its address."""
        _remove_stale()
        self.subnet = subnet
        self.hosts = dict(hosts)
        self._tag = f"{_PREFIX}{os.getpid()}"
        self.switch = f"{self._tag}-switch"
        self._made: list[str] = []
        self._children: dict[str, list[subprocess.Popen[bytes]]] = {name: [] for name in hosts}
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise

    def namespace(self, host: str) -> str:
        """The namespace name of ``host``."""
        return f"{self._tag}-{host}"

    def address(self, host: str) -> str:
        """``host``'s IPv4 address."""
        return f"{self.subnet}.{self.hosts[host]}"

    def _build(self) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts:
            ns = self.namespace(host)
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", self.switch, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", self.switch, "link", "set", host, "master", "br0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    # ------------------------------------------------------------------ links
    def cut(self, host: str) -> None:
        """Pull ``host``'s cable out of the switch."""
        _ip("-n", self.switch, "link", "set", host, "down")

    def reconnect(self, host: str) -> None:
        """Plug ``host``'s cable back in."""
        _ip("-n", self.switch, "link", "set", host, "up")

    # -------------------------------------------------------------- processes
    def spawn(self, host: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``host`` (its own session; output to ``log``)."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.namespace(host), *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )
        self._children[host].append(process)
        return process

    def run(self, host: str, argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``host`` to completion; its output is captured."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace(host), *argv],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )

    def kill_host(self, host: str) -> int:
        """SIGKILL every process on ``host`` (a power cut); returns how many there were."""
        count = len(_pids_in(self.namespace(host)))
        _kill_all_in(self.namespace(host))
        for process in self._children[host]:
            process.wait(10)
        self._children[host].clear()
        return count

    @contextlib.contextmanager
    def inside(self, host: str) -> Iterator[None]:
        """Run the calling thread's new connections from ``host`` for the duration."""
        libc = ctypes.CDLL(None, use_errno=True)
        with open("/proc/thread-self/ns/net", "rb") as own, open(_NETNS_DIR / self.namespace(host), "rb") as target:
            if libc.setns(target.fileno(), _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns into {self.namespace(host)} failed")
            try:
                yield
            finally:
                if libc.setns(own.fileno(), _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back into the test's own namespace failed")

    def destroy(self) -> None:
        """Kill every process in the hosts and delete every namespace made (safe to call twice)."""
        for ns in reversed(self._made):
            _kill_all_in(ns)
        for processes in self._children.values():
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
            processes.clear()
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()
