"""One gears node: the process beside one server node.

It wires the pieces together: the :class:`~gears.node.topology.ClusterView` (what the
cluster looks like), the :class:`~gears.node.frontdoor.FrontDoor` (clients), the
:class:`~gears.node.coordinator.Coordinator` (executions), the
:class:`~gears.node.worker_pool.WorkerPool` (the worker processes where user code runs, one per
user environment) and one
:class:`~gears.node.peers.PeerLink` per other shard. The front door opens only when
the node is ready, so "answers PING" means "ready".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import secrets
from functools import partial
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.asyncio.retry import Retry

from gears.engine.shards import key_slot
from gears.node.peers import PeerLink
from gears.wire.peerauth import PeerSecret
from gears.node.topology import CLIENT_NAME_PREFIX, ClusterView

from gears.node import ai_commands as _ai_commands  # noqa: F401 - registers the AI.* commands
from gears.environments import base as userenv
from gears.environments import packages as reqpackages
from gears.environments import requirements
from gears.node.access import AccessControl
from gears.node.commands import handlers_for
from gears.node.config import GearsConfig
from gears.node.coordinator import Coordinator
from gears.node.crashes import CrashLedger
from gears.wire.credentials import Credentials
from gears.node.slowlog import SlowLog
from gears.node.sessions import SessionRecord, SessionStore
from gears.wire.tls import ServerTLSOptions, TLSOptions
from gears.errors import MovedError, NodeUnavailable, WorkerBusy
from gears.node.frontdoor import FrontDoor
from gears.node.interception import CommandTable, RegistrationInterceptor
from gears.node.metrics import CommandMetrics, MetricsServer, info_section
from gears.engine.records import GearsScriptError
from gears.wire.resp import OK
from gears.node.worker_pool import Environment, WorkerPool
from gears.wire.protocol import Handlers, NodeCall, PeerMessage, ToNode, ToWorker, UnknownMessage, WorkerCall
from gears.node.worker_handle import WorkerHandle

__all__ = ["GearsNode"]

log = logging.getLogger(__name__)

TOPOLOGY_REFRESH_SECONDS = 5.0
#: How often the node asks its server node for its role (a promotion is acted on within this).
ROLE_POLL_SECONDS = 0.25
ROLE_POLL_TIMEOUT = 1.0
SERVER_WAIT_SECONDS = 30.0
#: Execution sequence numbers a worker gets at a time (``execution_ids``).
EXECUTION_ID_BLOCK = 1000
#: How often the node looks for requirement-set workers that nothing uses.
REAP_SECONDS = 5.0


def _text_reply(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        #: Stream entries running when a worker died, per user environment (key).
        self.crashes: dict[str, CrashLedger] = {}
        self._next_exec_seq = 1
        self.workers = WorkerPool(self._make_worker, self._prepare_environment, self._environment_in_use)
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
            trusts=self.access.trusts,
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
        await self.workers.start()
        await self.sessions.load()  # a replica holds them too, and runs them once promoted
        self._reg_seq = itertools.count(self.sessions.max_registration_seq() + 1)
        await self.frontdoor.start()
        if self.metrics is not None:
            self.metrics.start()
        await self.ensure_peers()
        self._tasks.append(asyncio.ensure_future(self._refresh_forever()))
        self._tasks.append(asyncio.ensure_future(self._watch_server()))
        self._tasks.append(asyncio.ensure_future(self._reap_workers_forever()))
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
        await self.workers.close()
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
            for worker in self.workers.handles():
                worker.send(ToWorker.TOPOLOGY, after)
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
        """Handle one ``RG.INNERMSG`` (:class:`~gears.wire.protocol.PeerMessage`; the
        order-sensitive kinds act before their handler first awaits)."""
        try:
            outcome = _PEER_MESSAGES.dispatch(self, kind, (header, blob))
        except UnknownMessage as exc:
            raise NodeUnavailable(str(exc)) from None
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        return OK if outcome is None else outcome

    async def ensure_peers(self) -> None:
        """Know every peer's front door; learn run ids in the background."""
        if any(self.view.shard_frontdoor(i) is None for i in self.peer_indexes()):
            await self.view.refresh()
        for index in self.peer_indexes():
            if index not in self._peer_run_ids and index not in self._hellos:
                self._hellos[index] = asyncio.ensure_future(self._hello(index))

    async def _hello(self, index: int) -> None:
        try:
            run_id = await self.peer(index).call(PeerMessage.HELLO, None, timeout=SERVER_WAIT_SECONDS)
            self._peer_run_ids[index] = run_id.decode() if isinstance(run_id, bytes) else run_id
        except Exception as exc:  # noqa: BLE001 - asked again with the next execution
            log.debug("hello to shard %d failed: %s", index, exc)
        finally:
            self._hellos.pop(index, None)

    # ----------------------------------------------------------------- workers
    def _make_worker(self, environment: Environment) -> WorkerHandle:
        """A (not started) worker process for ``environment``, its callbacks bound to it."""
        return WorkerHandle(
            server=self.server_address,
            frontdoor=("127.0.0.1" if self.listen[0] in ("0.0.0.0", "", "::") else self.listen[0], self.listen[1]),
            on_message=partial(self._on_worker_message, environment),
            on_call=partial(self._on_worker_call, environment),
            on_started=partial(self._on_worker_started, environment),
            on_lost=partial(self._on_worker_lost, environment.key),
            secrets=partial(self._worker_secrets, environment),
            requirement_paths=partial(self._environment_paths, environment),
            memory_limit_mb=lambda: int(self.config["WorkerMaxMemoryMB"]),
            execution_threads=int(self.config["ExecutionThreads"]),
        )

    def _environment_paths(self, environment: Environment) -> list[str]:
        """What a worker of ``environment`` puts in front of ``sys.path``: the set's
        installed copy (none for the base environment), then the base user environment."""
        paths = []
        if environment.requirements:
            installed = requirements.load_set(environment.requirements, root=self.requirements_root)
            if installed is None or installed.site is None:  # removed by hand since it was prepared
                log.error("requirements %s are not installed any more: their worker starts without them",
                          " ".join(environment.requirements))
            else:
                paths.append(str(installed.site))
        return paths + userenv.search_paths()

    async def _prepare_environment(self, environment: Environment) -> None:
        """Install a set on this host when a session or an execution needs it here and
        it is not installed (a node restarted on a fresh host, a peer's execution)."""
        if environment.requirements:
            await requirements.ensure_installed(
                environment.requirements, root=self.requirements_root, timeout=self._install_timeout()
            )

    async def _environment_in_use(self, environment: Environment, worker: WorkerHandle) -> bool:
        """Whether a set's worker still has work: a session of that set, an execution
        that is not over, or anything its process still runs (registrations, time events)."""
        if any(record.environment == environment for record in self.sessions.sessions.values()):
            return True
        if self.coordinator.running_in(environment.key):
            return True
        if not worker.alive:
            return True  # restarting: asked again once it runs
        try:
            return bool(await worker.query(WorkerCall.IN_USE))
        except WorkerBusy:
            return True

    async def worker_for(self, requirement_list: list[str] | tuple[str, ...] | None) -> WorkerHandle:
        """The worker of the user environment of ``requirement_list`` (started if needed)."""
        return await self.workers.ensure(Environment.of(requirement_list))

    async def _reap_workers_forever(self) -> None:
        while True:
            idle = int(self.config["EnvironmentWorkerIdleMS"]) / 1000
            await asyncio.sleep(min(REAP_SECONDS, idle / 2))
            try:
                await self.workers.reap_idle(idle)
            except Exception as exc:  # noqa: BLE001 - tried again at the next round
                log.warning("could not stop idle workers: %s", exc)

    def _worker_secrets(self, environment: Environment) -> dict[str, Any]:
        """What a new worker gets over its socket before anything else (never in argv or env)."""
        return {
            "user": self._worker_credentials.user,
            "password": self._worker_credentials.password,
            "node_user": self.access.node_user,
            "frontdoor_ca": (self.tls.ca_cert_file or "") if self.tls is not None else None,
            "server_tls": self.server_tls,
            "requirements": list(environment.requirements),
        }

    def _ledger(self, key: str) -> CrashLedger:
        return self.crashes.setdefault(key, CrashLedger())

    def _on_worker_started(self, environment: Environment) -> None:
        worker = self.workers.get(environment.key)
        if worker is None:
            return
        worker.send(ToWorker.CONFIG, self.config.for_worker())
        worker.send(ToWorker.TOPOLOGY, self.view.shard_map)
        worker.send(ToWorker.CRASHES, self._ledger(environment.key).counts())
        if any(record.environment == environment for record in self.sessions.sessions.values()):
            self._tasks.append(asyncio.ensure_future(self.sessions.reapply(environment)))
        else:
            self.sessions.restored.set()

    def _on_worker_lost(self, key: str, reason: str) -> None:
        self.sessions.restored.clear()
        blamed = self._ledger(key).worker_died()
        if blamed:
            log.error("the worker died running %d stream entries; each counts one crash", blamed)
        self.coordinator.worker_lost(key, reason)

    def config_changed(self) -> None:
        """Push the configuration to the workers."""
        for worker in self.workers.handles():
            worker.send(ToWorker.CONFIG, self.config.for_worker())

    def _on_worker_message(self, environment: Environment, kind: str, *args: Any) -> None:
        """One-way messages from a worker (:class:`~gears.wire.protocol.ToNode`)."""
        try:
            _WORKER_MESSAGES.dispatch(self, kind, (environment, *args))
        except UnknownMessage as exc:
            log.warning("%s", exc)

    def relay_records(self, exec_id: str, step: int, target: int, blob: bytes) -> None:
        """Records this shard's worker sent for shard ``target``: on to its node."""
        self.peer(target).send(PeerMessage.RECORDS, (exec_id, step, self.view.shard_map.my_index), blob)

    def relay_done(self, exec_id: str, step: int, targets: list[int]) -> None:
        """This shard sent all its records for a step: tell the ``targets``' nodes."""
        my_index = self.view.shard_map.my_index
        for target in targets:
            self.peer(target).send(PeerMessage.DONE, (exec_id, step, my_index))

    def stream_entries_running(self, environment: Environment, *entries: Any) -> None:
        """A worker runs (or finished) a batch of stream entries (poison isolation)."""
        self._ledger(environment.key).running(*entries)

    def start_timer_environments(self, requirement_lists: list[list[str]]) -> None:
        """Stored time events of other user environments exist: start their workers."""
        for requirement_list in requirement_lists:
            self._tasks.append(asyncio.ensure_future(self._start_for_timers(requirement_list)))

    async def _start_for_timers(self, requirement_list: list[str]) -> None:
        """Start the worker of a user environment whose stored time events were found."""
        try:
            await self.worker_for(requirement_list)
        except Exception as exc:  # noqa: BLE001 - logged; the events stay stored
            log.error("could not start the worker for the time events of requirements %s: %s",
                      " ".join(requirement_list), exc)

    async def _on_worker_call(self, environment: Environment, kind: str, *args: Any) -> Any:
        """Requests from a worker (:class:`~gears.wire.protocol.NodeCall`)."""
        return await _WORKER_CALLS.dispatch(self, kind, (environment, *args))

    async def start_execution(self, environment: Environment, blob: bytes | None, meta: dict[str, Any]) -> str:
        """A worker starts an execution: distribute it (its meta names the environment)."""
        if meta["distributed"]:
            await self.ensure_peers()
        return await self.coordinator.start(blob, {**meta, "requirements": list(environment.requirements)}, environment.key)

    def execution_ids(self) -> tuple[int, int]:
        """A block of execution sequence numbers for a worker: ``(first, count)``."""
        start, self._next_exec_seq = self._next_exec_seq, self._next_exec_seq + EXECUTION_ID_BLOCK
        return start, EXECUTION_ID_BLOCK

    def new_registration_id(self) -> str:
        """A registration id unique in the cluster (``<shard id>-<n>``)."""
        return f"{self.view.shard_map.my_id}-{next(self._reg_seq)}"

    async def call_next(self, context_id: int, command: list[str]) -> Any:
        """A command hook's ``call_next``: the original command on the client's connection."""
        try:
            return await self.interceptor.call_next(context_id, command)
        except hiredis.ReplyError as exc:
            raise GearsScriptError(str(exc)) from None

    async def clear_registration_stats(self) -> None:
        """Zero the registrations' statistics in every worker of this node."""
        await asyncio.gather(*(worker.call(WorkerCall.CLEAR_STATS) for worker in self.workers.handles()))

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
        header = ({**record.to_peer(), "removed": []}, replaces)

        async def apply_on(index: int | None) -> None:
            if index is None:
                await self.sessions.apply(SessionRecord(**header[0]), replaces)
            else:
                await self.peer(index).call(PeerMessage.APPLY_SESSION, header)

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
            header = (previous.to_peer(), session_id)
            if index is None:
                await self.sessions.apply(SessionRecord(**header[0]), session_id)
            else:
                await self.peer(index).call(PeerMessage.APPLY_SESSION, header)
        elif index is None:
            await self.sessions.remove(session_id)
        else:
            await self.peer(index).call(PeerMessage.REMOVE_SESSION, session_id)

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
        """Install a requirement set on this host (its sessions' worker imports from it);
        a forced reinstall replaces the set's running worker, so it imports the new copy."""
        await requirements.ensure_installed(reqs, root=self.requirements_root, timeout=self._install_timeout(), force=force)
        environment = Environment.of(reqs)
        if force and await self.workers.stop(environment.key):
            self._on_worker_lost(environment.key, f"its worker was replaced: requirements {' '.join(environment.requirements)} were reinstalled")
            await self.workers.ensure(environment)
            self.registrations_changed()  # intercepted commands go to the new worker

    async def install_requirements_everywhere(self, reqs: list[str], *, force: bool = False) -> None:
        """Install a requirement set for this node and every peer (each on its own host)."""
        await self.install_requirements(reqs, force=force)
        if self.view.shard_map.cluster_mode:
            await self.ensure_peers()
            await asyncio.gather(
                *(self.peer(i).call(PeerMessage.REQUIREMENTS, (reqs, force), timeout=self._install_timeout()) for i in self.peer_indexes())
            )

    async def import_requirement(self, package: bytes) -> None:
        """Import a requirement package (``RG.PYIMPORTREQ``) on this host."""
        await reqpackages.import_requirement(package, self.requirements_root, self._install_timeout())

    async def import_requirement_everywhere(self, package: bytes) -> None:
        """Import a requirement package for this node and every peer (each on its own host)."""
        await self.import_requirement(package)
        if self.view.shard_map.cluster_mode:
            await self.ensure_peers()
            await asyncio.gather(
                *(self.peer(i).call(PeerMessage.IMPORT_REQUIREMENT, None, package, timeout=self._install_timeout())
                  for i in self.peer_indexes())
            )

    def _install_timeout(self) -> float:
        return int(self.config["PythonInstallReqMaxIdleTime"]) / 1000 * 10

    def dump_requirements(self) -> list[Any]:
        """``RG.PYDUMPREQS`` entries of the requirements installed on this host."""
        return requirements.dump_installed(self.requirements_root)


# ------------------------------------------------------------------ message tables
_PEER_MESSAGES: Handlers[PeerMessage] = Handlers(PeerMessage)
_WORKER_MESSAGES: Handlers[ToNode] = Handlers(ToNode)
_WORKER_CALLS: Handlers[NodeCall] = Handlers(NodeCall)


@_PEER_MESSAGES.on(PeerMessage.RECORDS)
def _peer_records(node: GearsNode, header: tuple[str, int, int], blob: bytes | None) -> None:
    exec_id, step, from_index = header
    node.coordinator.deliver(exec_id, ToWorker.RECORDS, step, from_index, blob)


@_PEER_MESSAGES.on(PeerMessage.DONE)
def _peer_done(node: GearsNode, header: tuple[str, int, int], blob: bytes | None) -> None:
    exec_id, step, from_index = header
    node.coordinator.deliver(exec_id, ToWorker.DONE, step, from_index)


@_PEER_MESSAGES.on(PeerMessage.SHARD_DONE)
def _peer_shard_done(node: GearsNode, exec_id: str, blob: bytes | None) -> None:
    node.coordinator.shard_done(exec_id)


@_PEER_MESSAGES.on(PeerMessage.RUN)
def _peer_run(node: GearsNode, exec_id: str, blob: bytes | None) -> None:
    node.coordinator.run(exec_id)


@_PEER_MESSAGES.on(PeerMessage.PREPARE)
async def _peer_prepare(node: GearsNode, header: tuple[str, int, dict[str, Any]], blob: bytes | None) -> None:
    exec_id, initiator_index, meta = header
    # This shard's part will send records to the other shards: a node started moments
    # ago may not have found their front doors yet.
    await node.ensure_peers()
    await node.coordinator.prepare(exec_id, initiator_index, meta, blob)


@_PEER_MESSAGES.on(PeerMessage.DROP)
def _peer_drop(node: GearsNode, exec_id: str, blob: bytes | None) -> None:
    node.coordinator.drop_quietly(exec_id)


@_PEER_MESSAGES.on(PeerMessage.ABORT)
def _peer_abort(node: GearsNode, exec_id: str, blob: bytes | None) -> None:
    if exec_id in node.coordinator.executions:
        node.coordinator.abort(exec_id, broadcast=False)


@_PEER_MESSAGES.on(PeerMessage.GETEXECUTION)
def _peer_getexecution(node: GearsNode, exec_id: str, blob: bytes | None) -> bytes:
    execution = node.coordinator.executions.get(exec_id)
    return pickle.dumps(execution.plan_entry(node.view.shard_map.my_id)) if execution else b""


@_PEER_MESSAGES.on(PeerMessage.HELLO)
def _peer_hello(node: GearsNode, header: None, blob: bytes | None) -> str:
    return node.run_id


@_PEER_MESSAGES.on(PeerMessage.REQUIREMENTS)
async def _peer_requirements(node: GearsNode, header: tuple[list[str], bool], blob: bytes | None) -> None:
    reqs, force = header
    await node.install_requirements(reqs, force=force)


@_PEER_MESSAGES.on(PeerMessage.IMPORT_REQUIREMENT)
async def _peer_import_requirement(node: GearsNode, header: None, blob: bytes | None) -> None:
    await node.import_requirement(blob or b"")


@_PEER_MESSAGES.on(PeerMessage.APPLY_SESSION)
async def _peer_apply_session(node: GearsNode, header: tuple[dict[str, Any], str | None], blob: bytes | None) -> None:
    record, replaces = header
    await node.sessions.apply(SessionRecord(**record), replaces)


@_PEER_MESSAGES.on(PeerMessage.REMOVE_SESSION)
async def _peer_remove_session(node: GearsNode, session_id: str, blob: bytes | None) -> None:
    await node.sessions.remove(session_id)


@_PEER_MESSAGES.on(PeerMessage.UNREGISTER)
async def _peer_unregister(node: GearsNode, header: tuple[str, bool], blob: bytes | None) -> bytes:
    reg_id, abort_pending = header
    return b"1" if await node.sessions.unregister(reg_id, abort_pending) else b"0"


@_PEER_MESSAGES.on(PeerMessage.CLEAR_STATS)
async def _peer_clear_stats(node: GearsNode, header: None, blob: bytes | None) -> None:
    await node.clear_registration_stats()


@_PEER_MESSAGES.on(PeerMessage.PAUSE)
async def _peer_pause(node: GearsNode, header: tuple[str, bool], blob: bytes | None) -> None:
    reg_id, pause = header
    await node.sessions.worker_of(reg_id).call(WorkerCall.PAUSE, reg_id, pause)


_WORKER_MESSAGES.on(ToNode.RECORDS)(lambda node, environment, *args: node.relay_records(*args))
_WORKER_MESSAGES.on(ToNode.DONE)(lambda node, environment, *args: node.relay_done(*args))
_WORKER_MESSAGES.on(ToNode.FINISHED)(lambda node, environment, *args: node.coordinator.local_finished(*args))
_WORKER_MESSAGES.on(ToNode.IN_FLIGHT)(lambda node, environment, *args: node.stream_entries_running(environment, *args))
_WORKER_MESSAGES.on(ToNode.TIMER_ENVIRONMENTS)(lambda node, environment, lists: node.start_timer_environments(lists))


@_WORKER_CALLS.on(NodeCall.START_EXECUTION)
async def _start_execution(node: GearsNode, environment: Environment, blob: bytes | None, meta: dict[str, Any]) -> str:
    return await node.start_execution(environment, blob, meta)


@_WORKER_CALLS.on(NodeCall.EXECUTION_IDS)
async def _execution_ids(node: GearsNode, environment: Environment) -> tuple[int, int]:
    return node.execution_ids()


@_WORKER_CALLS.on(NodeCall.AUTHORIZE)
async def _authorize(node: GearsNode, environment: Environment, user: str, words: list[bytes]) -> None:
    await node.access.check(user, words)


@_WORKER_CALLS.on(NodeCall.REGISTRATION_ID)
async def _registration_id(node: GearsNode, environment: Environment) -> str:
    return node.new_registration_id()


@_WORKER_CALLS.on(NodeCall.CALL_NEXT)
async def _call_next(node: GearsNode, environment: Environment, context_id: int, command: list[str]) -> Any:
    return await node.call_next(context_id, command)
