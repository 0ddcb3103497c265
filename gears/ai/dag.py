"""``AI.DAGEXECUTE`` / ``AI.DAGRUN``: several tensor, model and script ops in one command.

:func:`parse_dag` checks the whole DAG before anything runs (redisai-spec §1.15): the
``LOAD``/``PERSIST``/``ROUTING``/``TIMEOUT`` header, each op's own syntax, and the names:
every op input must be a ``LOAD``ed tensor or an earlier op's output (the latest one wins),
and every ``PERSIST``ed name must be produced by some op. Names inside a DAG are local;
only ``PERSIST`` writes them to the keyspace.

:func:`run_dag` executes a parsed DAG in a worker. Model and script ops go through the
run queues (so they batch with other clients' requests): each device's ops in op order,
different devices side by side, every op as soon as the ops it reads from have finished.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from gears.errors import ArityError, CommandError, GearsError
from gears.wire.resp import ErrorValue, Status
from gears.ai.runner import TIMEDOUT, RunRequest
from gears.ai.storage import ModelMeta, ScriptMeta
from gears.ai.syntax import arg_text, parse_modelexecute, parse_modelrun, parse_scriptexecute, parse_scriptrun
from gears.ai.tensor_syntax import parse_tensorget, parse_tensorset, tensorget_reply
from gears.ai.tensors import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from gears.ai.service import AIService

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
    return [arg_text(n) for n in names], i + 2 + count


def parse_dag(args: list[bytes]) -> DagPlan:
    """Parse ``AI.DAGEXECUTE[_RO]`` / ``AI.DAGRUN[_RO]`` completely (no I/O)."""
    command = arg_text(args[0]).upper()
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
        word = arg_text(header[i]).upper()
        if word in seen or word not in ("LOAD", "PERSIST", "ROUTING", "TIMEOUT"):
            raise CommandError(f"ERR Invalid DAG command. Unexpected argument:  {arg_text(header[i])}")
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
            routing, i = arg_text(header[i + 1]), i + 2
        else:
            timeout, i = _positive_timeout(header, i), i + 2
    if not deprecated and not (loads or persists or routing):
        raise CommandError(
            "ERR AI.DAGEXECUTE and AI.DAGEXECUTE_RO commands must contain at least one out of ROUTING, LOAD, PERSIST keywords"
        )
    if not raw_ops or all(not op for op in raw_ops):
        raise CommandError("ERR DAG is empty")
    ops = parse_ops(raw_ops, deprecated=deprecated, readonly=readonly)
    check_names(ops, loads, persists)
    return DagPlan(loads, persists, routing, timeout, ops)


def _positive_timeout(header: list[bytes], i: int) -> int:
    """The value after ``TIMEOUT`` at ``header[i]``: a positive integer."""
    try:
        timeout = int(header[i + 1])
    except (IndexError, ValueError):
        timeout = 0
    if timeout <= 0:
        raise CommandError("ERR Invalid value for TIMEOUT")
    return timeout


def parse_ops(raw_ops: list[list[bytes]], *, deprecated: bool = False, readonly: bool = False) -> list[DagOp]:
    """The ops of a DAG, each given as its own argument list."""
    ops: list[DagOp] = []
    for op_args in raw_ops:
        name = arg_text(op_args[0]).upper() if op_args else ""
        if name == "AI.TENSORSET":
            key, tensor = parse_tensorset(op_args)
            ops.append(DagOp("tensorset", name=arg_text(key), tensor=tensor))
        elif name == "AI.TENSORGET":
            key, fmt = parse_tensorget(op_args)
            ops.append(DagOp("tensorget", name=arg_text(key), fmt=fmt))
        elif name == "AI.MODELEXECUTE":
            if deprecated:
                raise CommandError("AI.MODELEXECUTE cannot be used in a deprecated AI.DAGRUN command")
            key, inputs, outputs, _ = parse_modelexecute(op_args, in_dag=True)
            ops.append(DagOp("model", key=arg_text(key), inputs=inputs, outputs=outputs))
        elif name == "AI.MODELRUN":
            if not deprecated:
                raise CommandError("Deprecated AI.MODELRUN cannot be used in AI.DAGEXECUTE command")
            key, inputs, outputs, _ = parse_modelrun(op_args, in_dag=True)
            ops.append(DagOp("model", key=arg_text(key), inputs=inputs, outputs=outputs))
        elif name == "AI.SCRIPTEXECUTE":
            if readonly:
                raise CommandError("ERR AI.SCRIPTEXECUTE command cannot be specified in a read-only DAG")
            key, function, scopes, _ = parse_scriptexecute(op_args, in_dag=True)
            ops.append(DagOp(
                "script", key=arg_text(key), function=function, inputs=scopes.get("INPUTS", []),
                outputs=scopes.get("OUTPUTS", []), keys=scopes.get("KEYS", []), args=scopes.get("ARGS", []),
            ))
        elif name == "AI.SCRIPTRUN":
            if not deprecated:
                raise CommandError("Unsupported command within DAG")
            key, function, inputs, variadic, outputs, _ = parse_scriptrun(op_args, in_dag=True)
            ops.append(DagOp("script", key=arg_text(key), function=function, inputs=inputs, outputs=outputs, variadic=variadic))
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

    Each device's model and script ops run in op order, and devices run side by side
    (redisai-spec §3.4): an op starts once the ops producing its inputs have finished,
    so ``CPU`` and ``GPU`` (or ``CPU:1``) ops that do not depend on each other overlap.
    After the first failing op no new op starts; ops that never ran reply ``NA``.

    With ``as_tensors`` (the ``redisAI`` DAG runner) the result is the list of tensors the
    TensorGet ops name, and the first failing op (in op order) raises its error."""
    meta_keys = sorted({op.key for op in plan.ops if op.key})
    metas_raw, loaded = service.fetch(meta_keys, plan.loads)
    run = _DagRun(service, plan, {**plan.inputs, **dict(zip(plan.loads, loaded))}, dict(zip(meta_keys, metas_raw)))
    run.execute()
    if run.timed_out:
        return Status(TIMEDOUT)
    replies: list[Any] = []
    for i, op in enumerate(plan.ops):
        if op.kind == "tensorset":
            replies.append(Status("OK"))
        elif op.kind == "tensorget":
            tensor = run.value(run.reads[i])
            if as_tensors:
                if tensor is None:
                    raise GearsError("ERR tensor key is empty")
                replies.append(tensor)
            else:
                replies.append(Status("NA") if tensor is None else tensorget_reply(tensor, op.fmt))
        elif i not in run.results:
            replies.append(Status("NA"))
        elif run.results[i] is None:
            replies.append(Status("OK"))
        elif as_tensors:
            raise GearsError(run.results[i])
        else:
            replies.append(ErrorValue(run.results[i]))
    if not run.failed and plan.persists:
        try:
            service.write(plan.persists, [run.values[slot] for slot in run.persisted])
        except GearsError as exc:
            replies.append(ErrorValue(str(exc)))
    if as_tensors:
        return [reply for reply in replies if isinstance(reply, Tensor)]
    return replies


#: Where a DAG tensor lives: ``(-1, name)`` for a LOADed or given input, ``(op index,
#: output index)`` for what an op produced. A name written twice has two slots, and each
#: op reads the latest one before it (RedisAI's single-assignment binding).
_Slot = tuple[int, Any]


class _DagRun:
    """The model and script ops of one DAG on their device queues, in dependency order."""

    def __init__(self, service: "AIService", plan: DagPlan, named: dict[str, Tensor], metas: dict[str, Any]) -> None:
        """Bind every op's inputs to slots and prepare its model or script (so a missing
        or unloadable one fails the command before anything runs)."""
        self._service = service
        self._ops = plan.ops
        self._deadline = None if plan.timeout is None else time.monotonic() + plan.timeout / 1000
        self.values: dict[_Slot, Tensor] = {(-1, name): tensor for name, tensor in named.items()}
        latest: dict[str, _Slot] = {name: (-1, name) for name in named}
        self.reads: dict[int, _Slot | None] = {}
        self._bindings: dict[int, list[_Slot]] = {}
        self._makers: dict[int, Callable[[list[Tensor], int | None], RunRequest]] = {}
        self._waiting: dict[str, deque[int]] = {}
        for i, op in enumerate(plan.ops):
            if op.kind == "tensorset":
                self.values[(i, 0)] = op.tensor  # type: ignore[assignment]
                latest[op.name] = (i, 0)
            elif op.kind == "tensorget":
                self.reads[i] = latest.get(op.name)
            else:
                self._bindings[i] = [latest[name] for name in op.inputs]
                latest.update({name: (i, j) for j, name in enumerate(op.outputs)})
                device, self._makers[i] = _prepare(service, op, metas.get(op.key))
                self._waiting.setdefault(device.upper(), deque()).append(i)
        self.persisted = [latest[name] for name in plan.persists]
        #: op index -> None (it ran) or its error; ops that never ran are absent
        self.results: dict[int, str | None] = {}
        self.timed_out = False
        self._busy: set[str] = set()
        self._cond = threading.Condition()

    @property
    def failed(self) -> bool:
        return any(error is not None for error in self.results.values())

    def value(self, slot: _Slot | None) -> Tensor | None:
        return None if slot is None else self.values.get(slot)

    def execute(self) -> None:
        """Start every op whose device is free and whose inputs exist, until all have run
        (or one failed or timed out and the running ones have finished)."""
        while True:
            with self._cond:
                ready = self._take_ready()
                if not ready:
                    if not self._busy:
                        return
                    self._cond.wait()
                    continue
            for i, device, inputs in ready:  # outside the lock: making a request may load a model
                self._start(i, device, inputs)

    def _take_ready(self) -> list[tuple[int, str, list[Tensor]]]:
        if self.failed or self.timed_out:
            return []
        ready = []
        for device, waiting in self._waiting.items():
            if device in self._busy or not waiting:
                continue
            slots = self._bindings[waiting[0]]
            if all(slot in self.values for slot in slots):
                ready.append((waiting.popleft(), device, [self.values[slot] for slot in slots]))
                self._busy.add(device)
        return ready

    def _start(self, i: int, device: str, inputs: list[Tensor]) -> None:
        remaining = None if self._deadline is None else max(1, int((self._deadline - time.monotonic()) * 1000))
        try:
            request = self._makers[i](inputs, remaining)
        except GearsError as exc:
            with self._cond:
                self._busy.discard(device)
                self.results[i] = str(exc)
                self._cond.notify_all()
            return
        request.callbacks.append(functools.partial(self._finished, i, device))
        self._service.runner.submit(device, request)

    def _finished(self, i: int, device: str, request: RunRequest) -> None:
        """On the run queue's thread: keep the op's outputs (or its error) and wake execute()."""
        with self._cond:
            self._busy.discard(device)
            names = self._ops[i].outputs
            outputs = request.outputs or []
            if request.timed_out:
                self.timed_out = True
            elif request.error is not None:
                self.results[i] = request.error
            elif len(outputs) < len(names):
                self.results[i] = "ERR Model did not generate the expected number of outputs"
            else:
                self.values.update({(i, j): Tensor.from_numpy(outputs[j], copy=False) for j in range(len(names))})
                self.results[i] = None
            self._cond.notify_all()


def _prepare(
    service: "AIService", op: DagOp, meta_raw: Any
) -> tuple[str, Callable[[list[Tensor], int | None], RunRequest]]:
    """The op's device and a maker of its run request from its input tensors and timeout."""
    if op.kind == "model":
        if meta_raw is None:
            raise CommandError("ERR model key is empty")
        meta = ModelMeta.from_json(meta_raw)
        service.model(op.key, meta)
        return meta.device, lambda inputs, timeout: service.model_request(op.key, meta, inputs, timeout)
    if meta_raw is None:
        raise CommandError("ERR script key is empty")
    script_meta = ScriptMeta.from_json(meta_raw)
    service.script(op.key, script_meta)
    return script_meta.device, lambda inputs, timeout: service.script_request(
        op.key, script_meta, op.function, op.keys, op.args, inputs, timeout, op.variadic
    )
