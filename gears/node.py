"""One gears node: the process beside one server node.

It wires the pieces together: the :class:`~cluster.topology.ClusterView` (what the
cluster looks like), the :class:`~gears.frontdoor.FrontDoor` (clients), the
:class:`~gears.coordinator.Coordinator` (executions), the
:class:`~gears.workers.WorkerHandle` (where user code runs) and one
:class:`~cluster.messaging.PeerLink` per other shard. The front door opens only when
the node is ready, so "answers PING" means "ready".
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import pickle
import secrets
import signal
from functools import partial
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.asyncio.retry import Retry

from cluster.hashtags import key_slot
from cluster.messaging import PeerLink
from cluster.peerauth import PeerSecret, SecretFileError, read_secret_file
from cluster.topology import CLIENT_NAME_PREFIX, ClusterView

from . import cliargs
from . import credentials as _credentials
from . import ai as _ai  # noqa: F401 - registers the AI.* commands
from . import reqpackages, requirements, userenv
from .access import AccessControl
from .commands import handlers_for
from .config import GearsConfig
from .coordinator import Coordinator
from .crashes import CrashLedger
from .credentials import Credentials
from .slowlog import SlowLog
from .sessions import SessionRecord, SessionStore
from .tls import ServerTLSOptions, TLSOptions
from . import tls as _tls
from .errors import CommandError, MovedError, NodeUnavailable
from .frontdoor import FrontDoor
from .interception import CommandTable, RegistrationInterceptor
from .metrics import CommandMetrics, MetricsServer, info_section
from .records import GearsScriptError
from .resp import OK
from .workers import WorkerHandle

__all__ = ["GearsNode", "main"]

log = logging.getLogger(__name__)

TOPOLOGY_REFRESH_SECONDS = 5.0
#: How often the node asks its server node for its role (a promotion is acted on within this).
ROLE_POLL_SECONDS = 0.25
ROLE_POLL_TIMEOUT = 1.0
SERVER_WAIT_SECONDS = 30.0


def _address(text: str, option: str) -> tuple[str, int]:
    """``HOST:PORT`` of a command-line option (:func:`gears.cliargs.address`'s rules)."""
    try:
        return cliargs.address(text)
    except argparse.ArgumentTypeError as exc:
        raise CommandError(f"{option}: {exc}") from None


def _text_reply(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _config_pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CommandError(f"--config takes KEY=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


class GearsNode:
    """A gears node bound to one server node."""

    def __init__(
        self,
        server: tuple[str, int],
        listen: tuple[str, int],
        *,
        announce: tuple[str, int] | None = None,
        credentials: Credentials | None = None,
        peer_secret: PeerSecret | None = None,
        config: dict[str, str] | None = None,
        tls: TLSOptions | None = None,
        server_socket: str | None = None,
        server_tls: ServerTLSOptions | None = None,
        metrics: tuple[str, int] | None = None,
    ) -> None:
        self.server_address = server
        self.listen = listen
        self.announce = announce or listen
        #: The announced front door address as peers dial it (``host:port``).
        self.announce_text = "%s:%d" % self.announce
        self.peer_secret = peer_secret or PeerSecret(PeerSecret.generate())
        self.tls = tls
        self._peer_tls = tls.client_context() if tls is not None else None
        self.config = GearsConfig(config)
        self.run_id = secrets.token_hex(20)
        self.server_tls = server_tls
        #: How this node's clients of server nodes log in (credentials, TLS).
        self._server_login = {
            **(credentials or Credentials()).redis_kwargs(), **(server_tls.redis_kwargs() if server_tls else {})
        }
        self.server = aioredis.Redis(
            host=server[0],
            port=server[1],
            client_name=CLIENT_NAME_PREFIX + self.announce_text,
            **self._server_login,
        )
        self.access = AccessControl(self.server)
        self._worker_credentials = Credentials()
        self.view = ClusterView(self.server, server, self.announce, self._server_login)
        self.coordinator = Coordinator(self)
        self.sessions = SessionStore(self)
        self._reg_seq = itertools.count(1)
        self.requirements_root = requirements.default_root()
        self._links: dict[tuple[str, int], PeerLink] = {}
        self._peer_run_ids: dict[int, str] = {}
        self._hellos: dict[int, asyncio.Task[None]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.crashes = CrashLedger()
        self.worker = WorkerHandle(
            server=server,
            frontdoor=("127.0.0.1" if listen[0] in ("0.0.0.0", "", "::") else listen[0], listen[1]),
            on_message=self._on_worker_message,
            on_call=self._on_worker_call,
            on_started=self._on_worker_started,
            on_lost=self._on_worker_lost,
            secrets=self._worker_secrets,
            requirement_paths=lambda: requirements.search_paths(self.requirements_root) + userenv.search_paths(),
            memory_limit_mb=lambda: int(self.config["WorkerMaxMemoryMB"]),
            execution_threads=int(self.config["ExecutionThreads"]),
        )
        self.command_table: CommandTable | None = None
        #: Whether the server node answered the last role poll.
        self.server_reachable = True
        #: The role poll's own client: no retries, short timeouts, so an outage shows at once.
        self._probe = aioredis.Redis(
            host=server[0], port=server[1], socket_timeout=ROLE_POLL_TIMEOUT,
            socket_connect_timeout=ROLE_POLL_TIMEOUT, retry=Retry(NoBackoff(), 0), **self._server_login,
        )
        self._refresh_lock = asyncio.Lock()
        #: ``AI.CONFIG`` values of this node.
        self.ai_config: dict[str, Any] = {"MODEL_CHUNK_SIZE": 511 * 1024 * 1024, "BACKENDSPATH": ""}
        self.interceptor = RegistrationInterceptor(self)
        self.slowlog = SlowLog(lambda: self.server.config_get("slowlog-*"))
        self.command_metrics = CommandMetrics()
        #: The Prometheus endpoint (``None``: no ``--metrics``).
        self.metrics = MetricsServer(self, metrics) if metrics is not None else None
        self.frontdoor = FrontDoor(
            listen=listen,
            server=server,
            handlers=handlers_for(self),
            address_map=self.view.frontdoor_for,
            authorize=self.access.authorize,
            interceptor=self.interceptor,
            tls=tls.server_context() if tls is not None else None,
            server_socket=server_socket,
            server_tls=server_tls.context() if server_tls is not None else None,
            on_config_set=self.slowlog.config_changed,
            observer=self.command_metrics,
            info_section=partial(info_section, self),
        )

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Connect to the server node, learn the topology, start the worker, open the front door."""
        await self._wait_for_server()
        await self.access.start()
        self._worker_credentials = await self.access.create_worker_account()
        await self.view.refresh()
        self.command_table = CommandTable(await self.server.command())
        await self.worker.start()
        await self.sessions.load()  # a replica holds them too, and runs them once promoted
        self._reg_seq = itertools.count(self.sessions.max_registration_seq() + 1)
        await self.frontdoor.start()
        if self.metrics is not None:
            self.metrics.start()
        await self.ensure_peers()
        self._tasks.append(asyncio.ensure_future(self._refresh_forever()))
        self._tasks.append(asyncio.ensure_future(self._watch_server()))
        log.info("gears node ready: front door %s:%d, server %s:%d", *self.listen, *self.server_address)

    async def _wait_for_server(self) -> None:
        deadline = asyncio.get_running_loop().time() + SERVER_WAIT_SECONDS
        while True:
            try:
                await self.server.ping()
                return
            except (OSError, aioredis.ConnectionError) as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise NodeUnavailable(f"server node {self.server_address[0]}:{self.server_address[1]} unavailable: {exc}") from exc
                await asyncio.sleep(0.2)

    async def close(self) -> None:
        """Stop everything this node started."""
        for task in self._tasks:
            task.cancel()
        await self.frontdoor.close()
        if self.metrics is not None:
            self.metrics.close()
        await self.worker.close()
        for link in self._links.values():
            await link.close()
        await self.server.aclose()
        await self._probe.aclose()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(TOPOLOGY_REFRESH_SECONDS)
            try:
                await self.access.keep_worker_account(self._worker_credentials)
                await self.refresh_topology()
            except Exception as exc:  # noqa: BLE001 - keep serving with the last known topology
                log.warning("topology refresh failed: %s", exc)

    def replica_reads(self) -> aioredis.Redis:
        """A one-connection client of the local server node, for reads that need ``READONLY``
        (the caller sends it and closes the client)."""
        return aioredis.Redis(
            host=self.server_address[0], port=self.server_address[1], single_connection_client=True,
            **self._server_login,
        )

    async def _watch_server(self) -> None:
        """Poll the server node's role: a promotion (or demotion) refreshes the topology at
        once instead of at the next periodic refresh; an outage is logged when it starts
        and ends."""
        while True:
            await asyncio.sleep(ROLE_POLL_SECONDS)
            try:
                role = _text_reply((await self._probe.execute_command("ROLE"))[0])
            except (OSError, aioredis.RedisError) as exc:
                if self.server_reachable:
                    log.error("server node %s:%d unreachable: %s", *self.server_address, exc)
                self.server_reachable = False
                continue
            if not self.server_reachable:
                log.info("server node %s:%d answers again", *self.server_address)
                self.server_reachable = True
                try:  # a restarted server may have lost the worker's account: the worker waits for it
                    await self.access.keep_worker_account(self._worker_credentials)
                except (OSError, aioredis.RedisError) as exc:
                    log.warning("could not check the worker's account: %s", exc)
            if self.view.server_cluster_enabled and (role == "master") != (self.view.shard_map.my_role == "master"):
                try:
                    await self.refresh_topology()
                except Exception as exc:  # noqa: BLE001 - tried again at the next poll
                    log.warning("topology refresh after a role change failed: %s", exc)

    async def refresh_topology(self) -> None:
        """Re-read the topology; tell the worker when it changed."""
        async with self._refresh_lock:
            await self._refresh_topology()

    async def _refresh_topology(self) -> None:
        before = self.view.shard_map
        after = await self.view.refresh()
        await self.ensure_peers()
        if (before.my_index, before.my_role, [s.id for s in before.shards], [s.ranges for s in before.shards]) != (
            after.my_index, after.my_role, [s.id for s in after.shards], [s.ranges for s in after.shards]
        ):
            log.info("topology changed: shard %d of %d, %s", after.my_index, after.shard_count, after.my_role)
            self.worker.send("topology", after)
        if before.my_role == "master" and after.my_role != "master":
            log.warning("this node's server is now a replica: the shard's registrations pause here")
        if before.my_role != "master" and after.my_role == "master":
            log.info("this node's server was promoted: taking over the shard's registrations")
            await self.sessions.load()
            self._reg_seq = itertools.count(max(self.sessions.max_registration_seq() + 1, next(self._reg_seq)))

    # ------------------------------------------------------------------ peers
    def peer_indexes(self) -> list[int]:
        """Indexes of the other shards."""
        shard_map = self.view.shard_map
        return [i for i in range(shard_map.shard_count) if i != shard_map.my_index]

    def peer(self, index: int) -> PeerLink:
        """The message link to shard ``index``'s gears node."""
        address = self.view.shard_frontdoor(index)
        if address is None:
            raise NodeUnavailable(f"no gears node is known for shard {index} yet")
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = PeerLink(address, self.peer_secret, self._peer_tls)
        return link

    def peer_run_id(self, index: int) -> str | None:
        """The run id a peer reported (``None`` until it has)."""
        return self._peer_run_ids.get(index)

    async def on_peer_message(self, kind: str, header: Any, blob: bytes | None) -> Any:
        """Handle one ``RG.INNERMSG`` (order-sensitive kinds never await before acting)."""
        coordinator = self.coordinator
        if kind == "records":
            exec_id, step, from_index = header
            self.worker.send("records", exec_id, step, from_index, blob)
        elif kind == "done":
            exec_id, step, from_index = header
            self.worker.send("done", exec_id, step, from_index)
        elif kind == "shard_done":
            coordinator.shard_done(header)
        elif kind == "run":
            coordinator.run(header)
        elif kind == "prepare":
            exec_id, initiator_index, meta = header
            # This shard's part will send records to the other shards: a node started
            # moments ago may not have found their front doors yet.
            await self.ensure_peers()
            await coordinator.prepare(exec_id, initiator_index, meta, blob)
        elif kind == "drop":
            coordinator.drop_quietly(header)
        elif kind == "abort":
            if header in coordinator.executions:
                coordinator.abort(header, broadcast=False)
        elif kind == "getexecution":
            execution = coordinator.executions.get(header)
            return pickle.dumps(execution.plan_entry(self.view.shard_map.my_id)) if execution else b""
        elif kind == "hello":
            return self.run_id
        elif kind == "requirements":
            reqs, force = header
            await self.install_requirements(reqs, force=force)
        elif kind == "import_requirement":
            await self.import_requirement(blob or b"")
        elif kind == "apply_session":
            record, replaces = header
            await self.sessions.apply(SessionRecord(**record), replaces)
        elif kind == "remove_session":
            await self.sessions.remove(header)
        elif kind == "unregister":
            reg_id, abort_pending = header
            return b"1" if await self.sessions.unregister(reg_id, abort_pending) else b"0"
        elif kind == "clear_stats":
            await self.worker.call("clear_stats")
        elif kind == "pause":
            reg_id, pause = header
            await self.worker.call("pause", reg_id, pause)
        else:
            raise NodeUnavailable(f"unknown inner message {kind!r}")
        return OK

    async def ensure_peers(self) -> None:
        """Know every peer's front door; learn run ids in the background."""
        if any(self.view.shard_frontdoor(i) is None for i in self.peer_indexes()):
            await self.view.refresh()
        for index in self.peer_indexes():
            if index not in self._peer_run_ids and index not in self._hellos:
                self._hellos[index] = asyncio.ensure_future(self._hello(index))

    async def _hello(self, index: int) -> None:
        try:
            run_id = await self.peer(index).call("hello", None, timeout=SERVER_WAIT_SECONDS)
            self._peer_run_ids[index] = run_id.decode() if isinstance(run_id, bytes) else run_id
        except Exception as exc:  # noqa: BLE001 - asked again with the next execution
            log.debug("hello to shard %d failed: %s", index, exc)
        finally:
            self._hellos.pop(index, None)

    # ----------------------------------------------------------------- worker
    def _worker_secrets(self) -> dict[str, Any]:
        """What a new worker gets over its socket before anything else (never in argv or env)."""
        return {
            "user": self._worker_credentials.user,
            "password": self._worker_credentials.password,
            "node_user": self.access.node_user,
            "frontdoor_ca": (self.tls.ca_cert_file or "") if self.tls is not None else None,
            "server_tls": self.server_tls,
        }

    def _on_worker_started(self) -> None:
        self.worker.send("config", {**self.config.for_worker(), "exec_seq": self.coordinator.high_water + 1})
        self.worker.send("topology", self.view.shard_map)
        self.worker.send("crashes", self.crashes.counts())
        if self.sessions.sessions:
            self._tasks.append(asyncio.ensure_future(self.sessions.reapply()))
        else:
            self.sessions.restored.set()

    def _on_worker_lost(self, reason: str) -> None:
        self.sessions.restored.clear()
        blamed = self.crashes.worker_died()
        if blamed:
            log.error("the worker died running %d stream entries; each counts one crash", blamed)
        self.coordinator.worker_lost(reason)

    def config_changed(self) -> None:
        """Push the configuration to the worker."""
        self.worker.send("config", self.config.for_worker())

    def _on_worker_message(self, kind: str, *args: Any) -> None:
        my_index = self.view.shard_map.my_index
        if kind == "send":
            exec_id, step, target, blob = args
            self.peer(target).send("records", (exec_id, step, my_index), blob)
        elif kind == "send_done":
            exec_id, step, targets = args
            for target in targets:
                self.peer(target).send("done", (exec_id, step, my_index))
        elif kind == "finished":
            self.coordinator.local_finished(*args)
        elif kind == "in_flight":
            self.crashes.running(*args)
        else:
            log.warning("unknown message from the worker: %s", kind)

    async def _on_worker_call(self, kind: str, *args: Any) -> Any:
        if kind == "start_execution":
            blob, meta = args
            if meta["distributed"]:
                await self.ensure_peers()
            return await self.coordinator.start(blob, meta)
        if kind == "authorize":
            user, words = args
            await self.access.check(user, words)
            return None
        if kind == "registration_id":
            return f"{self.view.shard_map.my_id}-{next(self._reg_seq)}"
        if kind == "call_next":
            context_id, command = args
            try:
                return await self.interceptor.call_next(context_id, command)
            except hiredis.ReplyError as exc:
                raise GearsScriptError(str(exc)) from None
        raise ValueError(f"unknown worker request {kind!r}")

    # ------------------------------------------------------------ registrations
    def registrations_changed(self) -> None:
        """Registrations were added or removed on this shard: re-route intercepted commands."""
        self.interceptor.refresh(self.sessions.metas(), self.command_table)
        self.frontdoor.refresh_routes()

    def key_is_local(self, key: bytes) -> bool:
        """Whether this shard owns ``key``'s slot."""
        shard_map = self.view.shard_map
        return not shard_map.cluster_mode or shard_map.shard_of_key(key) == shard_map.my_index

    async def apply_session_everywhere(self, record: SessionRecord, replaces: str | None) -> list[str]:
        """Apply a session on every shard; on any failure undo it everywhere.

        Returns the error texts (one per failing shard; empty on success)."""
        previous = self.sessions.sessions.get(replaces) if replaces else None
        targets: list[int | None] = [None, *self.peer_indexes()]
        header = ({"id": record.id, "blob": record.blob, "description": record.description,
                   "registrations": record.registrations, "removed": [], "user": record.user}, replaces)

        async def apply_on(index: int | None) -> None:
            if index is None:
                await self.sessions.apply(SessionRecord(**header[0]), replaces)
            else:
                await self.peer(index).call("apply_session", header)

        outcomes = await asyncio.gather(*(apply_on(i) for i in targets), return_exceptions=True)
        errors = [str(o) for o in outcomes if isinstance(o, BaseException)]
        if errors:
            await asyncio.gather(
                *(self._undo_apply(i, record.id, previous) for i, o in zip(targets, outcomes) if not isinstance(o, BaseException)),
                return_exceptions=True,
            )
        return errors

    async def _undo_apply(self, index: int | None, session_id: str, previous: SessionRecord | None) -> None:
        if previous is not None:
            header = ({"id": previous.id, "blob": previous.blob, "description": previous.description,
                       "registrations": previous.registrations, "removed": previous.removed, "user": previous.user},
                      session_id)
            if index is None:
                await self.sessions.apply(SessionRecord(**header[0]), session_id)
            else:
                await self.peer(index).call("apply_session", header)
        elif index is None:
            await self.sessions.remove(session_id)
        else:
            await self.peer(index).call("remove_session", session_id)

    def check_key_is_local(self, key: bytes) -> None:
        """Raise the cluster's MOVED error (pointing at a front door) for a key of another shard."""
        shard_map = self.view.shard_map
        if not self.key_is_local(key):
            owner = shard_map.shard_of_key(key)
            door = self.view.shard_frontdoor(owner) or shard_map.shards[owner].master
            raise MovedError(key_slot(key), door)

    async def broadcast(self, kind: str, header: Any) -> list[Any]:
        """Send a call to every peer; their answers (exceptions included) in shard order."""
        return await asyncio.gather(*(self.peer(i).call(kind, header) for i in self.peer_indexes()), return_exceptions=True)

    # ----------------------------------------------------------- requirements
    async def install_requirements(self, reqs: list[str], *, force: bool = False) -> None:
        """Install a requirement set on this host and make it importable by the worker."""
        await requirements.ensure_installed(reqs, root=self.requirements_root, timeout=self._install_timeout(), force=force)
        self.worker.send("paths", requirements.search_paths(self.requirements_root))

    async def install_requirements_everywhere(self, reqs: list[str], *, force: bool = False) -> None:
        """Install a requirement set for this node and every peer (each on its own host)."""
        await self.install_requirements(reqs, force=force)
        if self.view.shard_map.cluster_mode:
            await self.ensure_peers()
            await asyncio.gather(
                *(self.peer(i).call("requirements", (reqs, force), timeout=self._install_timeout()) for i in self.peer_indexes())
            )

    async def import_requirement(self, package: bytes) -> None:
        """Import a requirement package (``RG.PYIMPORTREQ``) on this host."""
        await reqpackages.import_requirement(package, self.requirements_root, self._install_timeout())
        self.worker.send("paths", requirements.search_paths(self.requirements_root))

    async def import_requirement_everywhere(self, package: bytes) -> None:
        """Import a requirement package for this node and every peer (each on its own host)."""
        await self.import_requirement(package)
        if self.view.shard_map.cluster_mode:
            await self.ensure_peers()
            await asyncio.gather(
                *(self.peer(i).call("import_requirement", None, package, timeout=self._install_timeout())
                  for i in self.peer_indexes())
            )

    def _install_timeout(self) -> float:
        return int(self.config["PythonInstallReqMaxIdleTime"]) / 1000 * 10

    def dump_requirements(self) -> list[Any]:
        """``RG.PYDUMPREQS`` entries of the requirements installed on this host."""
        return requirements.dump_installed(self.requirements_root)


async def _serve(node: GearsNode) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await node.start()
    await stop.wait()
    log.info("stopping")
    await node.close()


def _peer_secret(args: Any) -> PeerSecret:
    """The deployment's peer secret: ``--peer-secret-file``, ``$GEARS_PEER_SECRET_FILE`` or
    ``$GEARS_PEER_SECRET``; without one, a random secret (this node then talks to no peer)."""
    path = getattr(args, "peer_secret_file", None) or os.environ.get("GEARS_PEER_SECRET_FILE")
    text = read_secret_file(path) if path else os.environ.get("GEARS_PEER_SECRET")
    if not text:
        log.warning("no peer secret given (--peer-secret-file): other gears nodes will not accept this one")
        text = PeerSecret.generate()
    return PeerSecret(text)


def _forbid_inspection() -> None:
    """Make this process non-dumpable: other processes of the same OS user (user code in a
    worker included) can then read neither its memory nor its ``/proc`` environment."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        log.warning("could not make the gears node non-dumpable")


def main(args: Any) -> int:
    """``gears node --redis HOST:PORT --listen HOST:PORT [--announce HOST:PORT] [--metrics HOST:PORT]``."""
    logging.basicConfig(
        level=os.environ.get("GEARS_LOG_LEVEL", "INFO"),
        format="%(asctime)s node[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    _forbid_inspection()
    try:
        credentials = _credentials.from_args(args)
        peer_secret = _peer_secret(args)
        tls = _tls.from_args(args)
        server_tls = _tls.server_tls_from_args(args)
    except (SecretFileError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        _credentials.scrub_environment()
    node = GearsNode(
        _address(args.redis, "--redis"),
        _address(args.listen, "--listen"),
        announce=_address(args.announce, "--announce") if getattr(args, "announce", None) else None,
        credentials=credentials,
        peer_secret=peer_secret,
        config=_config_pairs(getattr(args, "config", None) or []),
        tls=tls,
        server_socket=getattr(args, "redis_socket", None),
        server_tls=server_tls,
        metrics=_address(args.metrics, "--metrics") if getattr(args, "metrics", None) else None,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is optional off Linux
        pass
    asyncio.run(_serve(node))
    return 0
