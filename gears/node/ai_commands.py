"""The ``AI.*`` commands: parsing and validation in the gears node, runs in the worker.

Argument rules, error texts and reply shapes follow RedisAI (redisai-spec §1). Every key
a command names must hash to one slot (``CROSSSLOT`` otherwise) owned by this shard
(``MOVED`` to the owner's front door otherwise). Tensors are written by the node itself;
anything that needs a backend is handed to the shard's worker
(:class:`~gears.ai.service.AIService`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gears.wire.protocol import ToWorker, WorkerCall
from gears.engine.shards import key_slot

from gears.node.dispatch import MARKED_REPLIES, MARKED_REPLY, command
from gears.errors import ArityError, CommandError, GearsError
from gears.wire.resp import OK, Status, encode, encode_error
from gears.ai.backends import BACKENDS
from gears.ai.dag import parse_dag
from gears.ai.storage import CHUNK_FIELD_PREFIX, CHUNK_SIZE, MARKER_FIELD, ModelMeta, ScriptMeta, chunk_fields, new_version, split_chunks
from gears.ai.syntax import arg_text, int_arg, parse_modelexecute, parse_modelrun, parse_modelstore, parse_scriptexecute, parse_scriptrun
from gears.ai.tensor_keys import MAGIC, decode_key_value, encode_key_value
from gears.ai.tensor_syntax import parse_tensorget, parse_tensorset, tensorget_reply

if TYPE_CHECKING:  # pragma: no cover
    from gears.node.services import NodeServices

__all__ = ["WRONGTYPE"]

WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
#: RedisAI's reply to a command that waits for a run, sent inside MULTI.
_BLOCKING_IN_TRANSACTION = "ERR Cannot run RedisAI command within a transaction or a LUA script"

# SET a tensor unless the key holds something that is not a tensor (one atomic step).
_TENSORSET = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and (t ~= 'string' or redis.call('GETRANGE', KEYS[1], 0, string.len(ARGV[2]) - 1) ~= ARGV[2]) then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
return redis.call('SET', KEYS[1], ARGV[1])
"""
# A key's value for AI.TENSORGET in a transaction, as a marked reply (gears.node.commands).
_TENSORGET_MARKED = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'none' and t ~= 'string' then
  return redis.error_reply('WRONGTYPE Operation against a key holding the wrong kind of value')
end
return {ARGV[1], ARGV[2], ARGV[3], redis.call('GET', KEYS[1])}
"""


def _local(node: "NodeServices", keys: list[bytes]) -> None:
    """All keys in one slot, owned here (CROSSSLOT / MOVED otherwise; any keys on a
    server that is not in cluster mode)."""
    if not keys or not node.view.server_cluster_enabled:
        return
    if len({key_slot(k) for k in keys}) > 1:
        raise CommandError("CROSSSLOT Keys in request don't hash to the same slot")
    node.check_key_is_local(keys[0])


async def _ai_fields(node: "NodeServices", key: bytes, kind: str, missing: str) -> dict[bytes, bytes]:
    """The marker and meta of a model/script key (errors for missing or other types)."""
    key_type = (await node.server.type(key)).decode()
    if key_type == "none":
        raise CommandError(missing)
    if key_type != "hash":
        raise CommandError(WRONGTYPE)
    marker, meta = await node.server.hmget(key, MARKER_FIELD, "meta")
    if marker is None or marker.decode() != kind or meta is None:
        raise CommandError(WRONGTYPE)
    return {b"meta": meta}


async def _check_writable(node: "NodeServices", key: bytes, kind: str) -> None:
    """Raise WRONGTYPE unless the key is free or holds a model/script of ``kind``.

    A model key that is a hash of chunks with no marker is free too: a store of the key
    that has not switched its ``meta`` in yet, still running (a client that gave up
    waiting and sent it again) or cut short. A new store may go ahead beside it. The
    check is one script, so a store switching in meanwhile cannot split it."""
    verdict = await node.server.eval(_WRITABLE, 1, key, MARKER_FIELD, kind, CHUNK_FIELD_PREFIX,
                                     _UNFINISHED_STORE_MAX_FIELDS)
    if verdict == _WRONG_KIND:
        raise CommandError(WRONGTYPE)


#: ``wrong-kind``, or ``false`` where a store of ``ARGV[2]`` may go ahead.
_WRITABLE = """
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return false end
if t ~= 'hash' then return 'wrong-kind' end
local marker = redis.call('HGET', KEYS[1], ARGV[1])
if marker then
  if marker ~= ARGV[2] then return 'wrong-kind' end
  return false
end
if ARGV[2] ~= 'model' or redis.call('HLEN', KEYS[1]) > tonumber(ARGV[4]) then return 'wrong-kind' end
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, string.len(ARGV[3])) ~= ARGV[3] then return 'wrong-kind' end
end
return false
"""
_WRONG_KIND = b"wrong-kind"
#: Make a stored model version current: its meta in (with the marker); the meta it replaced.
_SWITCH_MODEL_VERSION = """
local replaced = redis.call('HGET', KEYS[1], 'meta')
redis.call('HSET', KEYS[1], ARGV[1], 'model', 'meta', ARGV[2])
return replaced
"""
#: A hash with more fields than this is not taken for an unfinished model store (a model
#: of this many 64 MB chunks would be 64 GB).
_UNFINISHED_STORE_MAX_FIELDS = 1024


# ----------------------------------------------------------------------- tensors
def _tensorset_script(node: "NodeServices", args: list[bytes]) -> list[Any]:
    """The server command that does ``AI.TENSORSET``: one atomic script, run now or,
    inside a transaction, queued."""
    key, tensor = parse_tensorset(args)
    _local(node, [key])
    return ["EVAL", _TENSORSET, 1, key, encode_key_value(tensor), MAGIC]


@command("AI.TENSORSET", queued=_tensorset_script, forwarded=True)
async def tensorset(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.TENSORSET key type shape... [BLOB data | VALUES v...]``."""
    await node.server.execute_command(*_tensorset_script(node, args))
    return OK


def _tensorget_value(data: bytes | None, fmt: int) -> Any:
    """The reply of ``AI.TENSORGET`` for a key's value (``None``: no key)."""
    if data is None:
        raise CommandError("ERR tensor key is empty or in a different shard")
    return tensorget_reply(decode_key_value(data), fmt)


def _queued_tensorget(node: "NodeServices", args: list[bytes]) -> list[Any]:
    """``AI.TENSORGET`` inside a transaction: the value, marked so that the front door
    turns the ``EXEC`` result into the tensor reply."""
    key, fmt = parse_tensorget(args)
    _local(node, [key])
    return ["EVAL", _TENSORGET_MARKED, 1, key, MARKED_REPLY, b"AI.TENSORGET", fmt]


def _marked_tensorget(payload: list[Any]) -> bytes:
    fmt, data = payload
    try:
        return encode(_tensorget_value(data, int(fmt)))
    except GearsError as exc:
        return encode_error(exc)


MARKED_REPLIES[b"AI.TENSORGET"] = _marked_tensorget


@command("AI.TENSORGET", queued=_queued_tensorget, forwarded=True)
async def tensorget(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.TENSORGET key [META] [BLOB | VALUES]``."""
    key, fmt = parse_tensorget(args)
    _local(node, [key])
    return _tensorget_value(await node.server.get(key), fmt)


# ------------------------------------------------------------------------ models
async def _store_model(node: "NodeServices", args: list[bytes], deprecated: bool) -> Any:
    key, meta, parts = parse_modelstore(args, deprecated)
    _local(node, [key])
    await _check_writable(node, key, "model")
    chunks = split_chunks(parts, CHUNK_SIZE)
    meta.version, meta.chunks, meta.size = new_version(), len(chunks), sum(len(c) for c in chunks)
    fields = chunk_fields(meta.version, meta.chunks)
    for field_name, chunk in zip(fields, chunks):
        await node.server.hset(key, field_name, chunk)
    try:
        inputs, outputs = await node.workers.base.call(WorkerCall.AI_CHECK_MODEL, arg_text(key), meta.to_json())
    except Exception:
        await node.server.hdel(key, *fields)
        raise
    if meta.backend != "TF":
        meta.inputs, meta.outputs = inputs, outputs
    # The version this one replaces is the one current at the switch (another store of the
    # key may have switched in since the check above), so each switch drops its predecessor.
    replaced = await node.server.eval(_SWITCH_MODEL_VERSION, 1, key, MARKER_FIELD, meta.to_json())
    if replaced is not None:
        previous = ModelMeta.from_json(replaced)
        stale = chunk_fields(previous.version, previous.chunks)
        if stale:
            await node.server.hdel(key, *stale)
    return OK


@command("AI.MODELSTORE")
async def modelstore(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.MODELSTORE key backend device [TAG t] [BATCHSIZE n [MINBATCHSIZE m [MINBATCHTIMEOUT t]]] [INPUTS ..] [OUTPUTS ..] BLOB b...``."""
    return await _store_model(node, args, deprecated=False)


@command("AI.MODELSET")
async def modelset(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Deprecated ``AI.MODELSET`` (INPUTS/OUTPUTS without counts)."""
    return await _store_model(node, args, deprecated=True)


@command("AI.MODELGET")
async def modelget(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.MODELGET key [META] [BLOB]``."""
    if not 2 <= len(args) <= 4:
        raise ArityError("AI.MODELGET")
    key = args[1]
    _local(node, [key])
    meta = ModelMeta.from_json((await _ai_fields(node, key, "model", "ERR model key is empty"))[b"meta"])
    options = {arg_text(a).upper() for a in args[2:]}
    info = [
        "backend", meta.backend, "device", meta.device, "tag", meta.tag, "batchsize", meta.batchsize,
        "minbatchsize", meta.minbatchsize, "inputs", meta.inputs, "outputs", meta.outputs,
        "minbatchtimeout", meta.minbatchtimeout,
    ]
    want_meta, want_blob = "META" in options, "BLOB" in options
    if want_meta and not want_blob:
        return info
    chunks = await node.server.hmget(key, *chunk_fields(meta.version, meta.chunks))
    blob: Any = b"".join(c or b"" for c in chunks)
    if len(blob) >= 512 * 1024 * 1024:
        blob = list(chunks)
    if want_blob and not want_meta:
        return blob
    return [*info, "blob", blob]


async def _delete(node: "NodeServices", args: list[bytes], kind: str) -> Any:
    if len(args) != 2:
        raise ArityError(arg_text(args[0]))
    _local(node, [args[1]])
    await _ai_fields(node, args[1], kind, f"ERR {kind} key is empty")
    await node.server.delete(args[1])
    node.workers.base.send(ToWorker.AI_FORGET, arg_text(args[1]))
    return OK


@command("AI.MODELDEL")
async def modeldel(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.MODELDEL key``."""
    return await _delete(node, args, "model")


@command("AI.MODELEXECUTE", in_transaction=_BLOCKING_IN_TRANSACTION)
async def modelexecute(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.MODELEXECUTE key INPUTS n in... OUTPUTS n out... [TIMEOUT t]``."""
    key, inputs, outputs, timeout = parse_modelexecute(args)
    return await _execute_model(node, key, inputs, outputs, timeout)


@command("AI.MODELRUN", in_transaction=_BLOCKING_IN_TRANSACTION)
async def modelrun(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Deprecated ``AI.MODELRUN key [TIMEOUT t] INPUTS in... OUTPUTS out...``."""
    key, inputs, outputs, timeout = parse_modelrun(args)
    return await _execute_model(node, key, inputs, outputs, timeout)


async def _execute_model(node: "NodeServices", key: bytes, inputs: list[str], outputs: list[str], timeout: int | None) -> Any:
    _local(node, [key, *(i.encode() for i in inputs), *(o.encode() for o in outputs)])
    # The worker reads the model's meta with the inputs (one round trip) and checks them.
    reply = await node.workers.base.call(WorkerCall.AI_MODEL_EXECUTE, arg_text(key), inputs, outputs, timeout)
    return Status(reply)


# ----------------------------------------------------------------------- scripts
async def _store_script(node: "NodeServices", args: list[bytes], deprecated: bool) -> Any:
    name = arg_text(args[0]).upper()
    if len(args) < (5 if deprecated else 8):
        raise ArityError(name)
    key = args[1]
    _local(node, [key])
    meta = ScriptMeta(device=arg_text(args[2]).upper())
    i = 3
    if args[i].upper() == b"TAG":
        meta.tag = arg_text(args[i + 1])
        i += 2
    if not deprecated:
        if i >= len(args) or args[i].upper() != b"ENTRY_POINTS":
            raise CommandError("ERR Insufficient arguments, missing script entry points")
        count = int_arg(args[i + 1], "ERR Non numeric entry points number provided to AI.SCRIPTSTORE command")
        meta.entry_points = [arg_text(a) for a in args[i + 2 : i + 2 + count]]
        i += 2 + count
    if i >= len(args) or args[i].upper() != b"SOURCE" or i + 1 >= len(args):
        raise CommandError("ERR Insufficient arguments, missing script SOURCE")
    source = arg_text(args[i + 1])
    await _check_writable(node, key, "script")
    meta.version = new_version()
    await node.workers.base.call(WorkerCall.AI_CHECK_SCRIPT, arg_text(key), meta.to_json(), source)
    await node.server.hset(key, mapping={MARKER_FIELD: "script", "meta": meta.to_json(), "source": source})
    return OK


@command("AI.SCRIPTSTORE")
async def scriptstore(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.SCRIPTSTORE key device [TAG t] ENTRY_POINTS n ep... SOURCE src``."""
    return await _store_script(node, args, deprecated=False)


@command("AI.SCRIPTSET")
async def scriptset(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Deprecated ``AI.SCRIPTSET key device [TAG t] SOURCE src``."""
    return await _store_script(node, args, deprecated=True)


@command("AI.SCRIPTGET")
async def scriptget(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.SCRIPTGET key [META] [SOURCE]``."""
    if not 2 <= len(args) <= 4:
        raise ArityError("AI.SCRIPTGET")
    key = args[1]
    _local(node, [key])
    meta = ScriptMeta.from_json((await _ai_fields(node, key, "script", "ERR script key is empty"))[b"meta"])
    source = (await node.server.hget(key, "source") or b"").decode()
    options = {arg_text(a).upper() for a in args[2:]}
    info = ["device", meta.device, "tag", meta.tag, "Entry Points", meta.entry_points]
    if "SOURCE" in options and "META" not in options:
        return source
    if "META" in options and "SOURCE" not in options:
        return info
    return [*info, "source", source]


@command("AI.SCRIPTDEL")
async def scriptdel(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.SCRIPTDEL key``."""
    return await _delete(node, args, "script")


@command("AI.SCRIPTEXECUTE", in_transaction=_BLOCKING_IN_TRANSACTION)
async def scriptexecute(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.SCRIPTEXECUTE key fn [KEYS n k..] [INPUTS n i..] [ARGS n a..] [OUTPUTS n o..] [TIMEOUT t]``."""
    key, function, scopes, timeout = parse_scriptexecute(args)
    keys, inputs, outputs = scopes.get("KEYS", []), scopes.get("INPUTS", []), scopes.get("OUTPUTS", [])
    _local(node, [key, *(k.encode() for k in keys + inputs + outputs)])
    await _ai_fields(node, key, "script", "ERR script key is empty")
    reply = await node.workers.base.call(WorkerCall.AI_SCRIPT_EXECUTE, arg_text(key), function, keys, inputs, scopes.get("ARGS", []), outputs, timeout)
    return Status(reply)


@command("AI.SCRIPTRUN", in_transaction=_BLOCKING_IN_TRANSACTION)
async def scriptrun(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Deprecated ``AI.SCRIPTRUN key fn [TIMEOUT t] INPUTS in... [$ in...] OUTPUTS out...``."""
    key, function, inputs, variadic, outputs, timeout = parse_scriptrun(args)
    _local(node, [key, *(k.encode() for k in inputs + outputs)])
    await _ai_fields(node, key, "script", "ERR script key is empty")
    reply = await node.workers.base.call(WorkerCall.AI_SCRIPT_EXECUTE, arg_text(key), function, [], inputs, [], outputs, timeout, variadic)
    return Status(reply)


# ------------------------------------------------------------------------- DAGs
async def _dag(node: "NodeServices", args: list[bytes]) -> Any:
    plan = parse_dag(args)
    _local(node, plan.keys())
    return await node.workers.base.call(WorkerCall.AI_DAG, plan)


@command("AI.DAGEXECUTE", in_transaction=_BLOCKING_IN_TRANSACTION)
async def dagexecute(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.DAGEXECUTE [LOAD n k..] [PERSIST n k..] [ROUTING tag] [TIMEOUT t] |> op |> op ...``."""
    return await _dag(node, args)


@command("AI.DAGEXECUTE_RO", in_transaction=_BLOCKING_IN_TRANSACTION)
async def dagexecute_ro(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Read-only DAG: no PERSIST, no SCRIPTEXECUTE."""
    return await _dag(node, args)


@command("AI.DAGRUN", in_transaction=_BLOCKING_IN_TRANSACTION)
async def dagrun(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Deprecated DAG with AI.MODELRUN ops."""
    return await _dag(node, args)


@command("AI.DAGRUN_RO", in_transaction=_BLOCKING_IN_TRANSACTION)
async def dagrun_ro(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """Deprecated read-only DAG."""
    return await _dag(node, args)


# ---------------------------------------------------------------- info & config
@command("AI.INFO")
async def info(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.INFO key [RESETSTAT]``: this shard's run statistics of a model or script."""
    if not 2 <= len(args) <= 3:
        raise ArityError("AI.INFO")
    _local(node, [args[1]])
    reset = len(args) == 3 and args[2].upper() == b"RESETSTAT"
    reply = await node.workers.base.call(WorkerCall.AI_INFO, arg_text(args[1]), reset)
    return OK if reply == "OK" else reply


@command("AI.CONFIG")
async def config(node: "NodeServices", ctx: Any, args: list[bytes]) -> Any:
    """``AI.CONFIG MODEL_CHUNK_SIZE n | GET MODEL_CHUNK_SIZE | BACKENDSPATH p | LOADBACKEND b p``."""
    if len(args) < 2:
        raise ArityError("AI.CONFIG")
    sub = arg_text(args[1]).upper()
    settings = node.ai_config
    if sub == "GET":
        if len(args) < 3:
            raise ArityError("AI.CONFIG")
        return settings.get(arg_text(args[2]).upper())
    if sub == "MODEL_CHUNK_SIZE":
        if len(args) < 3:
            raise CommandError("ERR MODEL_CHUNK_SIZE: missing chunk size")
        settings["MODEL_CHUNK_SIZE"] = int_arg(args[2], "ERR MODEL_CHUNK_SIZE: invalid chunk size", 1)
        return OK
    if sub == "BACKENDSPATH":
        if len(args) < 3:
            raise CommandError("ERR BACKENDSPATH: missing path argument")
        settings["BACKENDSPATH"] = arg_text(args[2])
        return OK
    if sub == "LOADBACKEND":
        if len(args) < 4:
            raise ArityError("AI.CONFIG")
        backend = arg_text(args[2]).upper()
        if backend not in BACKENDS:
            raise CommandError("ERR unsupported backend")
        if backend in ("TF", "TFLITE"):
            raise CommandError("ERR error loading backend")
        return OK  # TORCH and ONNX are Python packages: nothing to load from a path
    raise CommandError("ERR unsupported subcommand")
