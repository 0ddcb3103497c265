"""The node's side of its worker process: start it, talk to it, restart it when it dies.

The worker is ``python -m gears.worker`` with one end of a Unix socket pair; the first
message on it carries the worker's server credentials (never its argv or environment,
which other local processes can read; the secret variables of the node are not passed
on either). If it exits (a crash in user code, an out-of-memory kill,
``WorkerMaxMemoryMB`` exceeded, or the node replaced it to end an execution that ignored
``RG.ABORTEXECUTION``), the executions it was running end with an error, and a new
worker is started with the current configuration, topology and requirement paths.
Restarts after quick successive crashes back off (0.5 s doubling up to
:data:`MAX_RESTART_DELAY`), so a crash loop cannot eat the host; a worker that lived
:data:`STABLE_SECONDS` resets the back-off. Memory is sampled every
:data:`MEMORY_CHECK_INTERVAL` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from typing import Any, Awaitable, Callable

from gears.wire.credentials import SECRET_VARIABLES
from gears.errors import WorkerBusy
from gears.wire.ipc import AsyncChannel, ChannelClosed

__all__ = ["WorkerHandle"]

log = logging.getLogger(__name__)

RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 8.0
STABLE_SECONDS = 30.0
MEMORY_CHECK_INTERVAL = 0.05
#: How long :meth:`WorkerHandle.query` waits for an answer.
QUERY_SECONDS = 2.0


class WorkerHandle:
    """A supervised worker process."""

    def __init__(
        self,
        *,
        server: tuple[str, int],
        frontdoor: tuple[str, int],
        on_message: Callable[..., None],
        on_call: Callable[..., Awaitable[Any]],
        on_started: Callable[[], None],
        on_lost: Callable[[str], None],
        secrets: Callable[[], dict[str, Any]],
        requirement_paths: Callable[[], list[str]],
        memory_limit_mb: Callable[[], int],
        execution_threads: int,
    ) -> None:
        self._server = server
        self._frontdoor = frontdoor
        self._on_message = on_message
        self._on_call = on_call
        self._on_started = on_started
        self._on_lost = on_lost
        self._secrets = secrets
        self._requirement_paths = requirement_paths
        self._memory_limit_mb = memory_limit_mb
        self._execution_threads = execution_threads
        self._channel: AsyncChannel | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._kill_reason: str | None = None
        #: Worker processes that ended other than by :meth:`close` since the node started.
        self.restarts = 0
        #: Why the last one ended (``None``: none did).
        self.last_exit: str | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> None:
        """Start the worker and keep it running until :meth:`close`."""
        self._supervisor = asyncio.ensure_future(self._supervise())
        await self._ready.wait()

    async def _spawn(self) -> None:
        parent, child = socket.socketpair()
        env = {name: value for name, value in os.environ.items() if name not in SECRET_VARIABLES}
        env["GEARS_REQUIREMENT_PATHS"] = os.pathsep.join(self._requirement_paths())
        env["GEARS_EXECUTION_THREADS"] = str(self._execution_threads)
        # Idle model threads sleep instead of spinning: a worker shares the host's cores
        # with its server node, its front door and the other shards' workers.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gears.worker",
            "--fd",
            str(child.fileno()),
            "--server",
            "%s:%d" % self._server,
            "--frontdoor",
            "%s:%d" % self._frontdoor,
            pass_fds=(child.fileno(),),
            env=env,
        )
        child.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        self._channel = AsyncChannel(reader, writer)
        self._channel.send("secrets", self._secrets())
        log.info("worker process %d started", self._process.pid)

    @property
    def alive(self) -> bool:
        """Whether a worker process is running and connected."""
        return self._ready.is_set() and self._process is not None and self._process.returncode is None

    async def _supervise(self) -> None:
        quick_crashes = 0
        while not self._closing:
            await self._spawn()
            assert self._channel is not None and self._process is not None
            started = time.monotonic()
            serving = asyncio.ensure_future(self._channel.serve(self._on_message, self._on_call))
            self._on_started()
            self._ready.set()
            watcher = asyncio.ensure_future(self._watch_memory())
            code = await self._process.wait()
            watcher.cancel()
            self._channel.close()
            await asyncio.gather(serving, return_exceptions=True)
            if self._closing:
                return
            cause, self._kill_reason = self._kill_reason, None
            reason = f"worker process exited with code {code}" + (f" ({cause})" if cause else "") + "; its executions were lost"
            log.error(reason)
            self.restarts += 1
            self.last_exit = reason
            self._ready.clear()
            self._on_lost(reason)
            quick_crashes = quick_crashes + 1 if time.monotonic() - started < STABLE_SECONDS else 1
            delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** (quick_crashes - 1))
            if delay > RESTART_DELAY:
                log.warning("worker process crashed %d times in a row: next start in %.1f s", quick_crashes, delay)
            await asyncio.sleep(delay)

    def replace(self, reason: str) -> None:
        """Kill the running worker (``reason`` goes into the error of its executions); the
        supervisor starts a new one."""
        if self._process is not None and self._process.returncode is None:
            log.error("replacing worker process %d: %s", self._process.pid, reason)
            self._kill_reason = reason
            self._process.kill()

    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(MEMORY_CHECK_INTERVAL)
            limit = self._memory_limit_mb()
            rss = self.memory()[0]
            if limit and rss > limit * 1024 * 1024:
                over_mb = -(-rss >> 20)  # rounded up: just over the limit reads as over it
                self.replace(f"killed at {over_mb} MB > WorkerMaxMemoryMB={limit}")
                return

    def memory(self) -> tuple[int, int]:
        """``(current, peak)`` resident memory of the worker in bytes."""
        if self._process is None:
            return 0, 0
        values = {"VmRSS": 0, "VmHWM": 0}
        try:
            with open(f"/proc/{self._process.pid}/status", encoding="ascii") as status:
                for line in status:
                    name, _, rest = line.partition(":")
                    if name in values:
                        values[name] = int(rest.split()[0]) * 1024
        except OSError:
            pass
        return values["VmRSS"], values["VmHWM"]

    async def call(self, kind: str, *args: Any, timeout: float | None = None) -> Any:
        """Ask the worker; waits for a worker to be running first."""
        await self._ready.wait()
        assert self._channel is not None
        return await self._channel.call(kind, *args, timeout=timeout)

    async def query(self, kind: str, *args: Any, after: asyncio.Event | None = None) -> Any:
        """Ask the worker something it answers at once (a listing, statistics), once it
        runs and ``after`` is set. A worker that dies meanwhile is asked again once its
        successor runs; :class:`WorkerBusy` when a running worker gives no answer within
        :data:`QUERY_SECONDS` (code that holds the worker's GIL must not hang the node's
        own commands)."""
        while True:
            await self._ready.wait()
            if after is not None:
                await after.wait()
            try:
                return await asyncio.wait_for(self.call(kind, *args), QUERY_SECONDS)
            except ChannelClosed:  # the supervisor notices the exit and clears _ready
                await asyncio.sleep(RESTART_DELAY / 10)
            except asyncio.TimeoutError:
                raise WorkerBusy(f"the worker process did not answer {kind} within {QUERY_SECONDS:g} s") from None

    def send(self, kind: str, *args: Any) -> None:
        """One-way message to the worker (dropped, with a log line, if it is restarting)."""
        try:
            if self._channel is None:
                raise ChannelClosed("no worker")
            self._channel.send(kind, *args)
        except ChannelClosed:
            log.warning("worker unavailable; dropped %s message", kind)

    async def close(self) -> None:
        """Stop the worker process."""
        self._closing = True
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except asyncio.TimeoutError:
                self._process.kill()
        if self._supervisor is not None:
            await asyncio.gather(self._supervisor, return_exceptions=True)
