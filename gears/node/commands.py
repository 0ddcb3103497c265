"""The ``RG.*`` commands a gears node answers itself: parsing, validation, reply shapes.

Each handler is ``async def handler(node, ctx, args) -> reply value``; ``args[0]`` is
the command name as sent. Errors are raised as :mod:`gears.errors` types and become
error replies in the front door. :func:`handlers_for` binds them to one node.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import re
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import hiredis
from redis.exceptions import (
    BusyLoadingError, ExecAbortError, NoPermissionError, NoScriptError, OutOfMemoryError, ReadOnlyError, RedisError,
    ResponseError,
)

from gears.wire.protocol import PeerMessage, WorkerCall
from gears.node.peers import AUTH_COMMAND, HELLO_COMMAND, INNER_COMMAND
from gears.wire.peerauth import PeerAuthError, PeerSecret

from gears.environments import packages as reqpackages
from gears.errors import (
    ArityError, CommandError, ExecutionError, GearsError, PermissionDenied, ServerRefusal, WorkerBusy,
)
from gears.wire.ipc import ChannelClosed
from gears.engine.records import GearsScriptError
from gears.environments.requirements import normalize_requirements
from gears.wire.resp import OK, ErrorValue, RawReply, Status
from gears.node.sessions import SessionRecord
from gears.node.slowlog import merge_entries
from gears.node.dispatch import (
    BEFORE_AUTH, COMMANDS, FORWARDED, TRANSACTION_ERRORS, TRANSACTION_FORMS, UNLOGGED, Handler, command,
)
from gears.node.worker_handle import QUERY_SECONDS

if TYPE_CHECKING:  # pragma: no cover
    from gears.node.services import NodeServices

__all__ = ["handlers_for"]

log = logging.getLogger(__name__)

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]+$")


def handlers_for(node: "NodeServices") -> dict[str, Callable[[Any, list[bytes]], Awaitable[Any]]]:
    """Every command handler bound to ``node``, keyed by upper-case name. A bound handler
    carries its transaction behaviour: ``transaction_error`` (its own error text),
    ``transaction_form(args)`` (the server command to queue) or ``at_exec`` (run at
    ``EXEC``; see :mod:`gears.node.frontdoor`), and, for the :data:`FORWARDED` commands,
    ``forwarded_form(args)``: the server command that stands for it outside a transaction
    too (``None`` while the server node is not in cluster mode, where a client's
    ``SELECT`` would send it to another database than the handler's)."""

    def bind(name: str, handler: Handler) -> Callable[[Any, list[bytes]], Awaitable[Any]]:
        async def answered(ctx: Any, args: list[bytes]) -> Any:
            try:
                return await handler(node, ctx, args)
            except ResponseError as exc:
                raise server_refusal(exc) from None

        if name in BEFORE_AUTH or name in UNLOGGED:
            bound = answered
        else:

            async def bound(ctx: Any, args: list[bytes]) -> Any:
                started = time.perf_counter()
                try:
                    return await answered(ctx, args)
                finally:
                    task = asyncio.current_task()
                    if task is None or not task.cancelling():
                        await _log_if_slow(node, ctx, args, started)

        bound.before_auth = name in BEFORE_AUTH  # type: ignore[attr-defined]
        if name in TRANSACTION_ERRORS:
            bound.transaction_error = TRANSACTION_ERRORS[name]  # type: ignore[attr-defined]
        if name in TRANSACTION_FORMS:
            form = TRANSACTION_FORMS[name]
            bound.transaction_form = lambda args: form(node, args)  # type: ignore[attr-defined]
            if name in FORWARDED:
                bound.forwarded_form = (  # type: ignore[attr-defined]
                    lambda args: form(node, args) if node.view.server_cluster_enabled else None
                )
        bound.at_exec = not (  # type: ignore[attr-defined]
            name in BEFORE_AUTH or name in TRANSACTION_ERRORS or name in TRANSACTION_FORMS
        )
        return bound

    return {name: bind(name, handler) for name, handler in COMMANDS.items()}


#: The error codes redis-py takes off the error lines it turns into these exception types.
_STRIPPED_CODES: tuple[tuple[type[ResponseError], str], ...] = (
    (OutOfMemoryError, "OOM"), (ReadOnlyError, "READONLY"), (NoPermissionError, "NOPERM"),
    (BusyLoadingError, "LOADING"), (NoScriptError, "NOSCRIPT"), (ExecAbortError, "EXECABORT"),
)


def server_refusal(exc: ResponseError) -> GearsError:
    """The error a handler answers when the server node refused what it asked: the
    server's own line, its code put back where redis-py took it off (a plain
    ``ResponseError`` keeps a code of its own, such as ``WRONGTYPE``; else ``ERR``).

    >>> server_refusal(ResponseError("WRONGTYPE Operation against a key")).reply_text()
    'WRONGTYPE Operation against a key'
    >>> server_refusal(OutOfMemoryError("command not allowed")).reply_text()
    'OOM command not allowed'
    >>> server_refusal(ResponseError("unknown command")).reply_text()
    'ERR unknown command'
    """
    text = str(exc)
    for kind, code in _STRIPPED_CODES:
        if isinstance(exc, kind):
            return ServerRefusal(code, text)
    first, _, rest = text.partition(" ")
    if type(exc) is ResponseError and rest and first.isupper() and first.isalpha():
        return ServerRefusal(first, rest)
    return ServerRefusal("ERR", text)


async def _log_if_slow(node: "NodeServices", ctx: Any, args: list[bytes], started: float) -> None:
    """Put a handler command in the node's slow log if it was slow (:mod:`gears.node.slowlog`)."""
    duration_us = int((time.perf_counter() - started) * 1_000_000)

    async def client_name() -> str:
        try:
            return _text(await ctx.call_server("CLIENT", "GETNAME") or b"")
        except (GearsError, hiredis.ReplyError):
            return ""

    try:
        await node.slowlog.record(args, duration_us, ctx.peer, client_name)
    except (OSError, RedisError) as exc:
        log.warning("slow log: cannot read the server's configuration: %s", exc)


def _text(arg: bytes) -> str:
    return arg.decode("utf-8", "surrogateescape")


def _exactly(args: list[bytes], count: int) -> None:
    if len(args) != count:
        raise ArityError(_text(args[0]))


# --------------------------------------------------------------------------- scripts
async def _parse_pyexecute(args: list[bytes]) -> dict[str, Any]:
    if len(args) < 2:
        raise ArityError("RG.PYEXECUTE")
    options: dict[str, Any] = {
        "script": _text(args[1]),
        "unblocking": False,
        "id": None,
        "description": None,
        "upgrade": False,
        "replace_with": None,
        "force_reinstall": False,
        "requirements": [],
    }
    i = 2
    while i < len(args):
        word = _text(args[i]).upper()
        if word == "UNBLOCKING":
            options["unblocking"] = True
        elif word in ("ID", "DESCRIPTION", "REPLACE_WITH"):
            if i + 1 >= len(args):
                raise CommandError(f"{word} is missing")
            options[word.lower()] = _text(args[i + 1])
            i += 1
        elif word == "UPGRADE":
            options["upgrade"] = True
        elif word == "FORCE_REINSTALL_REQUIREMENTS":
            options["force_reinstall"] = True
        elif word == "REQUIREMENTS":
            options["requirements"] = [_text(a) for a in args[i + 1 :]]
            break
        else:
            raise CommandError(f"Unknown arguments were given: {_text(args[i])}")
        i += 1
    session_id = options["id"]
    if session_id is not None and not _SESSION_ID.match(session_id):
        raise CommandError("ID must be compose of: ['A'-'Z' | 'a'-'z' | '0' - '9' | '-' | '_']")
    return options


@command("RG.PYEXECUTE")
async def pyexecute(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Run a script; reply with its run's results, its execution id, or OK."""
    options = await _parse_pyexecute(args)
    node.sessions.check_new(options["id"], options["upgrade"], options["replace_with"])
    if options["requirements"]:
        await node.install_requirements_everywhere(options["requirements"], force=options["force_reinstall"])
    try:
        user = node.access.user_of(ctx)
        worker = await node.worker_for(options["requirements"])
        outcome = await worker.call(WorkerCall.PYEXECUTE, options["script"], options["id"], options["description"], user)
    except ChannelClosed:
        raise ExecutionError("worker process exited while running the script; it is being restarted") from None
    session = outcome["session"]
    errors: list[str] = []
    if session is not None:
        replaces = options["replace_with"] or (session["id"] if session["id"] in node.sessions.sessions else None)
        record = SessionRecord(
            session["id"], session["blob"], session["description"], session["registrations"], user=session["user"],
            requirements=list(normalize_requirements(options["requirements"])),
        )
        errors = await node.apply_session_everywhere(record, replaces)
    exec_id = outcome["execution_id"]
    if exec_id is None:
        return [ErrorValue(e) for e in errors] if errors else OK
    execution = node.coordinator.get(exec_id)
    if options["unblocking"]:
        execution.keep = True
        return exec_id
    await execution.done.wait()
    reply = node.coordinator.reply_of(execution)
    if exec_id in node.coordinator.executions:
        node.coordinator.drop(exec_id)
    return reply


# ------------------------------------------------------------------ executions
@command("RG.GETRESULTS")
async def getresults(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``[[results], [errors]]`` of a finished execution."""
    _exactly(args, 2)
    execution = await node.coordinator.find(_text(args[1]))
    if not execution.done.is_set():
        raise ExecutionError("execution is still running")
    return node.coordinator.reply_of(execution)


@command("RG.GETRESULTSBLOCKING")
async def getresultsblocking(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Wait for an execution, then ``[[results], [errors]]``."""
    _exactly(args, 2)
    execution = await node.coordinator.find(_text(args[1]))
    await execution.done.wait()
    return node.coordinator.reply_of(execution)


@command("RG.DUMPEXECUTIONS")
async def dumpexecutions(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Every execution this node lists, the triggered ones its workers keep included."""
    return await node.coordinator.dump()


@command("RG.DROPEXECUTION")
async def dropexecution(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Forget a finished execution (on every shard), or one a registration triggered on
    this shard (kept by the worker and listed by ``RG.DUMPEXECUTIONS`` too)."""
    _exactly(args, 2)
    exec_id = _text(args[1])
    if exec_id in node.coordinator.executions:
        node.coordinator.drop(exec_id)
    elif not await node.coordinator.drop_kept(exec_id):
        raise ExecutionError("execution plan does not exist")
    return OK


@command("RG.ABORTEXECUTION")
async def abortexecution(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Abort a running execution everywhere (``OK`` for a finished one, a kept triggered
    one too)."""
    _exactly(args, 2)
    exec_id = _text(args[1])
    if exec_id not in node.coordinator.executions and await node.coordinator.kept(exec_id) is not None:
        return OK
    node.coordinator.abort(exec_id)
    return OK


@command("RG.GETEXECUTION")
async def getexecution(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Per-shard execution plans: ``RG.GETEXECUTION id [SHARD|CLUSTER]``."""
    if len(args) not in (2, 3):
        raise ArityError("RG.GETEXECUTION")
    cluster_mode = node.view.shard_map.cluster_mode
    scope = _text(args[2]).upper() if len(args) == 3 else ("CLUSTER" if cluster_mode else "SHARD")
    if scope not in ("SHARD", "CLUSTER"):
        raise CommandError("unknown subcommand")
    exec_id = _text(args[1])
    execution = await node.coordinator.find(exec_id)
    entry = execution.plan_entry(node.view.shard_map.my_id)
    if scope == "SHARD":
        return [entry]
    if not cluster_mode:
        raise CommandError("no cluster detected - use `RG.GETEXECUTION <id> [SHARD]` instead")
    entries = [entry]
    for index in node.peer_indexes():
        blob = await node.peer(index).call(PeerMessage.GETEXECUTION, exec_id)
        if blob:
            entries.append(pickle.loads(blob))
    return entries


# ------------------------------------------------------------------- cluster
@command("RG.INFOCLUSTER")
async def infocluster(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """This node's view of the cluster."""
    shard_map = node.view.shard_map
    if not shard_map.cluster_mode:
        return "no cluster mode"
    await node.ensure_peers()
    shards = []
    for index, shard in enumerate(shard_map.shards):
        door = node.view.shard_frontdoor(index) or shard.master
        run_id = node.run_id if index == shard_map.my_index else node.peer_run_id(index)
        lo = min(r[0] for r in shard.ranges)
        hi = max(r[1] for r in shard.ranges)
        shards.append(
            ["id", shard.id, "ip", door[0], "port", door[1], "unixSocket", "None", "runid", run_id,
             "minHslot", lo, "maxHslot", hi, "pendingMessages", 0]
        )
    return ["MyId", shard_map.my_id, "MyRunId", node.run_id, shards]


@command("RG.REFRESHCLUSTER")
async def refreshcluster(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Re-read the topology now."""
    await node.refresh_topology()
    return OK


# ---------------------------------------------------------------- peer channel
@command(HELLO_COMMAND, before_auth=True)
async def peerhello(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Step 2 of the peer handshake (:mod:`gears.wire.peerauth`): our nonce and our proof."""
    _exactly(args, 2)
    peer_nonce = PeerSecret.nonce()
    ctx.gears_peer = False
    ctx.handshake = (args[1], peer_nonce)
    return [peer_nonce, node.peer_secret.proof(b"peer", args[1], peer_nonce, node.announce_text)]


@command(AUTH_COMMAND, before_auth=True)
async def peerauth(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Step 3 of the peer handshake: the caller's proof makes this a peer connection."""
    _exactly(args, 2)
    handshake, ctx.handshake = ctx.handshake, None
    if handshake is None:
        raise CommandError(f"ERR {AUTH_COMMAND} without {HELLO_COMMAND}")
    try:
        node.peer_secret.check(b"caller", handshake[0], handshake[1], node.announce_text, args[1])
    except PeerAuthError as exc:
        raise PermissionDenied(str(exc)) from None
    ctx.gears_peer = True
    return OK


@command(INNER_COMMAND, before_auth=True)
async def innermsg(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """A message from another gears node (see gears/node/peers.py); nothing a client sends is unpickled."""
    if not ctx.gears_peer:
        raise PermissionDenied(f"{INNER_COMMAND} is only accepted from gears nodes that passed the peer handshake")
    if len(args) not in (3, 4):
        raise ArityError(INNER_COMMAND)
    return await node.on_peer_message(_text(args[1]), pickle.loads(args[2]), args[3] if len(args) == 4 else None)


# -------------------------------------------------------------------- config
@command("RG.CONFIGGET")
async def configget(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Config values (an embedded error for an unknown key)."""
    if len(args) < 2:
        raise ArityError("RG.CONFIGGET")
    return node.config.get([_text(a) for a in args[1:]])


@command("RG.CONFIGSET")
async def configset(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Set config values: ``RG.CONFIGSET k v [k v ...]``."""
    if len(args) < 3 or len(args) % 2 == 0:
        raise ArityError("RG.CONFIGSET")
    pairs = [(_text(args[i]), _text(args[i + 1])) for i in range(1, len(args), 2)]
    reply = node.config.set(pairs)
    node.config_changed()
    return reply


# -------------------------------------------------------------- registrations
@command("RG.DUMPREGISTRATIONS")
async def dumpregistrations(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """The registrations of this shard, with live statistics."""
    return await _registrations(node)


async def _registrations(node: "NodeServices") -> list[Any]:
    """``RG.DUMPREGISTRATIONS`` entries of every worker of this node, in registration order."""
    entries: list[Any] = []
    for worker in node.workers.handles():
        entries += await worker.query(WorkerCall.DUMP_REGISTRATIONS, after=node.sessions.restored)
    return sorted(entries, key=_registration_order)


def _registration_order(entry: list[Any]) -> tuple[int, str]:
    """Registration ids end in their sequence number (``<shard id>-<n>``)."""
    reg_id = str(entry[1])
    seq = reg_id.rsplit("-", 1)[-1]
    return (int(seq), reg_id) if seq.isdigit() else (0, reg_id)


@command("RG.UNREGISTER")
async def unregister(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``RG.UNREGISTER id [abortpending]`` on every shard."""
    if len(args) not in (2, 3):
        raise ArityError("RG.UNREGISTER")
    reg_id = _text(args[1])
    abort_pending = len(args) == 3 and _text(args[2]).lower() == "abortpending"
    found = await node.sessions.unregister(reg_id, abort_pending)
    answers = await node.broadcast("unregister", (reg_id, abort_pending))
    if not found and not any(a == b"1" for a in answers):
        raise ExecutionError("execution is not registered")
    return OK


async def _pause(node: "NodeServices", args: list[bytes], pause: bool) -> Any:
    words = [_text(a) for a in args[1:]]
    if words and words[0].upper() == "ABORTPENDING" and pause:
        words = words[1:]
    if len(words) != 1:
        raise ArityError(_text(args[0]))
    try:
        await node.sessions.worker_of(words[0]).call(WorkerCall.PAUSE, words[0], pause)
    except GearsScriptError as exc:
        raise CommandError(str(exc)) from None
    answers = await node.broadcast("pause", (words[0], pause))
    failures = [a for a in answers if isinstance(a, BaseException)]
    if failures:
        raise CommandError(str(failures[0]))
    return OK


@command("RG.PAUSEREGISTRATIONS")
async def pauseregistrations(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Pause a StreamReader registration on every shard (its current batch finishes)."""
    return await _pause(node, args, True)


@command("RG.UNPAUSEREGISTRATIONS")
async def unpauseregistrations(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Resume a paused StreamReader registration on every shard."""
    return await _pause(node, args, False)


@command("RG.CLEARREGISTRATIONSSTATS")
async def clearregistrationsstats(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Zero the registrations' statistics on every shard."""
    _exactly(args, 1)
    await node.clear_registration_stats()
    await node.broadcast("clear_stats", None)
    return OK


@command("RG.TRIGGER")
async def trigger(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Run a CommandReader registration: its results, or its first error."""
    if len(args) < 2:
        raise ArityError("RG.TRIGGER")
    return await _trigger(node, [_text(a) for a in args[1:]])


@command("RG.TRIGGERONKEY")
async def triggeronkey(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``RG.TRIGGERONKEY name key args...``: on the shard that owns ``key`` (MOVED otherwise)."""
    if len(args) < 3:
        raise ArityError("RG.TRIGGERONKEY")
    node.check_key_is_local(args[2])
    return await _trigger(node, [_text(a) for a in args[1:]])


async def _trigger(node: "NodeServices", words: list[str]) -> Any:
    try:
        results, errors = await node.sessions.worker_of_trigger(words[0]).call(WorkerCall.TRIGGER, words[0], words[1:])
    except GearsScriptError as exc:
        raise CommandError(f"ERR {exc}") from None
    if errors:
        raise CommandError(errors[0])
    return results


@command("RG.PYDUMPSESSIONS")
async def pydumpsessions(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``RG.PYDUMPSESSIONS [VERBOSE] [DEAD] [SESSIONS s...]``."""
    verbose = False
    names: list[str] | None = None
    i = 1
    while i < len(args):
        word = _text(args[i]).upper()
        if word == "VERBOSE":
            verbose = True
        elif word == "DEAD":
            return []  # sessions are never kept alive by running executions after an upgrade
        elif word == "SESSIONS":
            names = [_text(a) for a in args[i + 1 :]]
            break
        else:
            raise CommandError(f"Unknown option {_text(args[i])}")
        i += 1
    registrations = await _registrations(node) if verbose else []
    return node.sessions.dump(names, verbose, registrations)


@command("RG.PYSTATS")
async def pystats(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Memory of the worker processes (resident bytes: total = current, peak)."""
    current, peak = node.workers.memory()
    return ["TotalAllocated", current, "PeakAllocated", peak, "CurrAllocated", current]


@command("RG.HEALTH")
async def health(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """This node's health (not a RedisGears command): its server node, its base worker,
    its user environments' workers, and which registrations are not running or have
    failed (``None`` while a worker does not answer)."""
    _exactly(args, 1)
    worker = node.workers.base
    try:
        entries = await asyncio.wait_for(_registrations(node), QUERY_SECONDS)
    except (WorkerBusy, asyncio.TimeoutError) as exc:
        log.warning("RG.HEALTH without registrations: %s", exc)
        entries = None
    reply: list[Any] = [
        "server", "ok" if node.server_reachable else "unreachable",
        "worker", "alive" if worker.alive else "down",
        "workerPid", worker.pid if worker.alive else None,
        "workerRestarts", sum(w.restarts for w in node.workers.handles()),
        "lastWorkerExit", worker.last_exit,
        "environments", [
            [environment.label, w.pid if w.alive else None] for environment, w in node.workers.environments()
        ],
    ]
    if entries is None:
        return reply + ["registrations", None, "notRunning", None, "withErrors", None]
    stopped, failed = [], []
    for entry in entries:
        data = dict(zip(entry[7][0::2], entry[7][1::2]))
        if data.get("status", "OK") != "OK":
            stopped.append([entry[1], data["status"]])
        if data["numFailures"]:
            failed.append([entry[1], data["numFailures"], data["lastError"]])
    return reply + ["registrations", len(entries), "notRunning", stopped, "withErrors", failed]


@command("RG.PYDUMPREQS")
async def pydumpreqs(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """The requirement sets installed on this host."""
    return node.dump_requirements()


@command("RG.PYEXPORTREQ")
async def pyexportreq(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``[metadata, [package chunks]]`` of an installed requirement (:mod:`gears.environments.packages`)."""
    _exactly(args, 2)
    entry, chunks = await asyncio.to_thread(reqpackages.export_requirement, _text(args[1]), node.requirements_root)
    return [entry, chunks]


@command("RG.PYIMPORTREQ")
async def pyimportreq(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Import a package ``RG.PYEXPORTREQ`` made (its chunks, in order) on every shard."""
    if len(args) < 2:
        raise ArityError("RG.PYIMPORTREQ")
    await node.import_requirement_everywhere(b"".join(args[1:]))
    return OK


async def _unsupported(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    return Status(f"{_text(args[0]).upper()} is not longer supported")


COMMANDS["RG.PYEXECUTEREMOTE"] = _unsupported
COMMANDS["RG.PYFREEINTERPRETER"] = _unsupported


# --------------------------------------------------------------------------- slow log
@command("SLOWLOG")
async def slowlog(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``SLOWLOG``: the server's slow log and the node's own, as one (see :mod:`gears.node.slowlog`).
    The server answers the command first, on the client's connection (its checks, its
    errors, its rights); ``GET``, ``LEN`` and ``RESET`` then add the node's part."""
    raw = await ctx.call_server_raw(*args)
    sub = args[1].upper() if len(args) > 1 else b""
    if raw.startswith(b"-") or sub not in (b"GET", b"LEN", b"RESET"):
        return RawReply(raw)
    if sub == b"RESET":
        node.slowlog.reset()
        return RawReply(raw)
    reader = hiredis.Reader()
    reader.feed(raw)
    server_part = reader.gets()
    mine = await node.slowlog.entries()
    limit = node.slowlog.max_len
    if sub == b"LEN":
        return min(server_part + len(mine), limit)
    count = int(args[2]) if len(args) > 2 else 10  # (the server accepted it)
    return merge_entries(server_part, mine, limit if count < 0 else min(count, limit))
