"""``AI.DAGEXECUTE`` / ``AI.DAGRUN``: several tensor, model and script ops in one command.

:func:`parse_dag` checks the whole DAG before anything runs (redisai-spec §1.15): the
``LOAD``/``PERSIST``/``ROUTING``/``TIMEOUT`` header, each op's own syntax, and the names:
every op input must be a ``LOAD``ed tensor or an earlier op's output (the latest one wins),
and every ``PERSIST``ed name must be produced by some op. Names inside a DAG are local;
only ``PERSIST`` writes them to the keyspace.

:func:`run_dag` executes a parsed DAG in a worker. Model and script ops go through the
run queues (so they batch with other clients' requests); ops run one after another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ArityError, CommandError, GearsError
from ..resp import ErrorValue, Status
from .runner import TIMEDOUT, RunRequest
from .storage import ModelMeta, ScriptMeta
from .tensors import Tensor, parse_tensorget, parse_tensorset, tensorget_reply

if TYPE_CHECKING:  # pragma: no cover
    from .service import AIService

__all__ = ["DagOp", "DagPlan", "parse_dag", "run_dag"]

_SEPARATOR = b"|>"


@dataclass
class DagOp:
    """One op of a DAG."""

    kind: str  # "tensorset" | "tensorget" | "model" | "script"
    name: str = ""
    tensor: Tensor | None = None
    fmt: int = 0
    key: str = ""
    function: str = ""
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    variadic: int = -1


@dataclass
class DagPlan:
    """A parsed DAG: its header and ops."""

    loads: list[str]
    persists: list[str]
    routing: str | None
    timeout: int | None
    ops: list[DagOp]
    #: In-memory inputs (``DAG.Input`` in gears functions), like LOADed tensors.
    inputs: dict[str, Tensor] = field(default_factory=dict)

    def keys(self) -> list[bytes]:
        """Every key the DAG touches (for the slot check): LOAD, PERSIST, ROUTING, models, scripts."""
        names = [*self.loads, *self.persists, *([self.routing] if self.routing else []), *(op.key for op in self.ops if op.key)]
        return [n.encode("utf-8", "surrogateescape") for n in names]


def _text(arg: bytes) -> str:
    return arg.decode("utf-8", "surrogateescape")


def _split(args: list[bytes]) -> tuple[list[bytes], list[list[bytes]]]:
    header: list[bytes] = []
    ops: list[list[bytes]] = []
    current = header
    for arg in args[1:]:
        if arg == _SEPARATOR:
            current = []
            ops.append(current)
        else:
            current.append(arg)
    return header, ops


def _count_list(header: list[bytes], i: int, what: str) -> tuple[list[str], int]:
    try:
        count = int(header[i + 1])
    except (IndexError, ValueError):
        count = 0
    if count <= 0:
        raise CommandError(f"ERR invalid or negative value found in number of keys to {what}")
    names = header[i + 2 : i + 2 + count]
    if len(names) != count:
        raise CommandError(f"ERR number of keys to {what} into DAG does not match the number of given arguments"
                           if what == "LOAD" else f"ERR number of keys to {what} does not match the number of given arguments")
    return [_text(n) for n in names], i + 2 + count


def parse_dag(args: list[bytes]) -> DagPlan:
    """Parse ``AI.DAGEXECUTE[_RO]`` / ``AI.DAGRUN[_RO]`` completely (no I/O)."""
    command = _text(args[0]).upper()
    deprecated = command.startswith("AI.DAGRUN")
    readonly = command.endswith("_RO")
    if len(args) < (4 if deprecated else 6):
        if deprecated:
            raise ArityError(command)
        raise CommandError(f"ERR missing arguments for '{command}' command")
    header, raw_ops = _split(args)
    loads: list[str] = []
    persists: list[str] = []
    routing: str | None = None
    timeout: int | None = None
    seen: set[str] = set()
    i = 0
    while i < len(header):
        word = _text(header[i]).upper()
        if word in seen or word not in ("LOAD", "PERSIST", "ROUTING", "TIMEOUT"):
            raise CommandError(f"ERR Invalid DAG command. Unexpected argument:  {_text(header[i])}")
        seen.add(word)
        if word == "LOAD":
            loads, i = _count_list(header, i, "LOAD")
        elif word == "PERSIST":
            if readonly:
                raise CommandError("ERR PERSIST cannot be specified in a read-only DAG")
            persists, i = _count_list(header, i, "PERSIST")
            if len(set(persists)) != len(persists):
                raise CommandError("ERR PERSIST keys must be unique")
        elif word == "ROUTING":
            if i + 1 >= len(header):
                raise CommandError("ERR missing routing tag")
            routing, i = _text(header[i + 1]), i + 2
        else:
            try:
                timeout = int(header[i + 1])
            except (IndexError, ValueError):
                timeout = 0
            if timeout <= 0:
                raise CommandError("ERR Invalid value for TIMEOUT")
            i += 2
    if not deprecated and not (loads or persists or routing):
        raise CommandError(
            "ERR AI.DAGEXECUTE and AI.DAGEXECUTE_RO commands must contain at least one out of ROUTING, LOAD, PERSIST keywords"
        )
    if not raw_ops or all(not op for op in raw_ops):
        raise CommandError("ERR DAG is empty")
    ops = parse_ops(raw_ops, deprecated=deprecated, readonly=readonly)
    check_names(ops, loads, persists)
    return DagPlan(loads, persists, routing, timeout, ops)


def parse_ops(raw_ops: list[list[bytes]], *, deprecated: bool = False, readonly: bool = False) -> list[DagOp]:
    """The ops of a DAG, each given as its own argument list."""
    from .commands import parse_modelexecute, parse_modelrun, parse_scriptexecute, parse_scriptrun

    ops: list[DagOp] = []
    for op_args in raw_ops:
        name = _text(op_args[0]).upper() if op_args else ""
        if name == "AI.TENSORSET":
            key, tensor = parse_tensorset(op_args)
            ops.append(DagOp("tensorset", name=_text(key), tensor=tensor))
        elif name == "AI.TENSORGET":
            key, fmt = parse_tensorget(op_args)
            ops.append(DagOp("tensorget", name=_text(key), fmt=fmt))
        elif name == "AI.MODELEXECUTE":
            if deprecated:
                raise CommandError("AI.MODELEXECUTE cannot be used in a deprecated AI.DAGRUN command")
            key, inputs, outputs, _ = parse_modelexecute(op_args, in_dag=True)
            ops.append(DagOp("model", key=_text(key), inputs=inputs, outputs=outputs))
        elif name == "AI.MODELRUN":
            if not deprecated:
                raise CommandError("Deprecated AI.MODELRUN cannot be used in AI.DAGEXECUTE command")
            key, inputs, outputs, _ = parse_modelrun(op_args, in_dag=True)
            ops.append(DagOp("model", key=_text(key), inputs=inputs, outputs=outputs))
        elif name == "AI.SCRIPTEXECUTE":
            if readonly:
                raise CommandError("ERR AI.SCRIPTEXECUTE command cannot be specified in a read-only DAG")
            key, function, scopes, _ = parse_scriptexecute(op_args, in_dag=True)
            ops.append(DagOp(
                "script", key=_text(key), function=function, inputs=scopes.get("INPUTS", []),
                outputs=scopes.get("OUTPUTS", []), keys=scopes.get("KEYS", []), args=scopes.get("ARGS", []),
            ))
        elif name == "AI.SCRIPTRUN":
            if not deprecated:
                raise CommandError("Unsupported command within DAG")
            key, function, inputs, variadic, outputs, _ = parse_scriptrun(op_args, in_dag=True)
            ops.append(DagOp("script", key=_text(key), function=function, inputs=inputs, outputs=outputs, variadic=variadic))
        else:
            raise CommandError("Unsupported command within DAG")
    return ops


def check_names(ops: list[DagOp], loads: list[str], persists: list[str]) -> None:
    """Every input is a LOADed tensor or an earlier op's output; every PERSIST is produced."""
    available = set(loads)
    for op in ops:  # names bind to the latest producer: a LOAD or an earlier op
        if any(name not in available for name in op.inputs):
            raise CommandError("ERR INPUT key cannot be found in DAG")
        available.update(op.outputs)
        if op.kind == "tensorset":
            available.add(op.name)
    if any(not _produced(ops, name) for name in persists):
        raise CommandError("ERR PERSIST key cannot be found in DAG")


def _produced(ops: list[DagOp], name: str) -> bool:
    return any(name in op.outputs or (op.kind == "tensorset" and op.name == name) for op in ops)


def run_dag(service: "AIService", plan: DagPlan, *, as_tensors: bool = False) -> Any:
    """Execute a parsed DAG on this shard; the reply of the command.

    With ``as_tensors`` (the ``redisAI`` DAG runner) the result is the list of tensors the
    TensorGet ops name, and the first failing op raises its error."""
    import time

    meta_keys = sorted({op.key for op in plan.ops if op.key})
    metas_raw, loaded = service.fetch(meta_keys, plan.loads)
    metas = dict(zip(meta_keys, metas_raw))
    table: dict[str, Tensor] = {**plan.inputs, **dict(zip(plan.loads, loaded))}
    deadline = None if plan.timeout is None else time.monotonic() + plan.timeout / 1000
    replies: list[Any] = []
    failed = False
    for op in plan.ops:
        if op.kind == "tensorset":
            table[op.name] = op.tensor  # type: ignore[assignment]
            replies.append(Status("OK"))
        elif op.kind == "tensorget":
            tensor = table.get(op.name)
            if as_tensors:
                if tensor is None:
                    raise GearsError("ERR tensor key is empty")
                replies.append(tensor)
            else:
                replies.append(Status("NA") if tensor is None else tensorget_reply(tensor, op.fmt))
        elif failed:
            replies.append(Status("NA"))
        else:
            remaining = None if deadline is None else max(1, int((deadline - time.monotonic()) * 1000))
            request, device = _op_request(service, op, metas.get(op.key), [table[n] for n in op.inputs], remaining)
            service.runner.run(device, request)
            if request.timed_out:
                return Status(TIMEDOUT)
            if request.error is not None:
                if as_tensors:
                    raise GearsError(request.error)
                replies.append(ErrorValue(request.error))
                failed = True
                continue
            outputs = request.outputs or []
            if len(outputs) < len(op.outputs):
                replies.append(ErrorValue("ERR Model did not generate the expected number of outputs"))
                failed = True
                continue
            for name, array in zip(op.outputs, outputs):
                table[name] = Tensor.from_numpy(array, copy=False)
            replies.append(Status("OK"))
    if not failed and plan.persists:
        try:
            service.write(plan.persists, [table[name] for name in plan.persists])
        except GearsError as exc:
            replies.append(ErrorValue(str(exc)))
    if as_tensors:
        return [reply for reply in replies if isinstance(reply, Tensor)]
    return replies


def _op_request(service: "AIService", op: DagOp, meta_raw: Any, inputs: list[Tensor], timeout: int | None) -> tuple[RunRequest, str]:
    if op.kind == "model":
        if meta_raw is None:
            raise CommandError("ERR model key is empty")
        meta = ModelMeta.from_json(meta_raw)
        return service.model_request(op.key, meta, inputs, timeout), meta.device
    if meta_raw is None:
        raise CommandError("ERR script key is empty")
    script_meta = ScriptMeta.from_json(meta_raw)
    request = service.script_request(op.key, script_meta, op.function, op.keys, op.args, inputs, timeout, op.variadic)
    return request, script_meta.device
