"""The ``redisAI`` module of gears functions (``import redisAI``), as RedisGears 1.2 had it.

Argument orders follow the original C code (redisai-spec §4): ``modelRunnerAddInput(runner,
name, tensor)``, ``DAG.Input(name, tensor)``. ``modelRunnerRunAsync`` / ``scriptRunnerRunAsync``
return an awaitable for ``async def`` steps; they go through the shard's run queue, so they
are batched with ``AI.MODELEXECUTE`` requests from clients and count in ``AI.INFO``. The sync
``modelRunnerRun`` runs in the calling thread (no queue, no batching, no statistics).

Errors are raised as ``gears.error`` with RedisAI's text.
"""

from __future__ import annotations

import asyncio
import math
import operator
import sys
import threading
import types
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from gears.errors import GearsError
from gears.engine.futures import gears_loop, loop_future
from gears.engine.records import GearsScriptError
from gears.ai.runner import RunRequest
from gears.ai.storage import ModelMeta, ScriptMeta
from gears.ai.tensor_keys import decode_key_value, encode_key_value
from gears.ai.tensors import (
    E_BOOL, E_VALUE, FLOAT_DTYPES, INT_RANGES, NUMPY_DTYPES, Tensor, TensorError, check_shape, element_count, from_blob,
    parse_dtype, to_bytes,
)

if TYPE_CHECKING:  # pragma: no cover
    from gears.ai.service import AIService

__all__ = ["install", "PyGraphRunner", "PyTorchScriptRunner", "PyDAGRunner"]


def _service() -> AIService:
    from gears.engine.host_protocol import current_host

    service: AIService = current_host().ai_service()  # (the worker's host serves one)
    return service


def _conn() -> Any:
    return _service().connection()


def _raise(exc: Exception) -> None:
    raise GearsScriptError(str(exc)) from None


def _check(commands: list[tuple[Any, ...]]) -> None:
    """Raise the server's error unless the running code's ACL user may run ``commands``
    (reads of tensors like ``GET``, writes like ``SET``, runs like ``EVAL`` over the model key)."""
    from gears.engine.host_protocol import current_host

    current_host().check_access(commands)


def _runs(key: str) -> tuple[Any, ...]:
    return ("EVAL", "return 0", "1", key)


def createTensorFromValues(dtype: str, shape: Iterable[int], values: Iterable[float]) -> Tensor:
    """A tensor from Python floats (converted to ``dtype``)."""
    try:
        return create_from_values(dtype, list(shape), list(values))
    except GearsError as exc:
        _raise(exc)
        raise  # pragma: no cover


def createTensorFromBlob(dtype: str, shape: Iterable[int], blob: Any) -> Tensor:
    """A tensor from raw little-endian bytes (any buffer)."""
    try:
        return create_from_blob(dtype, list(shape), blob)
    except GearsError as exc:
        _raise(exc)
        raise  # pragma: no cover


def setTensorInKey(key: str, tensor: Tensor) -> None:
    """Store a tensor in a key of this shard."""
    msetTensorsInKeyspace({key: tensor})


def msetTensorsInKeyspace(tensors: dict[str, Tensor]) -> None:
    """Store several tensors (all keys are checked before any is written)."""
    conn = _conn()
    keys = list(tensors)
    _check([("SET", k, "x") for k in keys])
    current = conn.pipeline([("GET", k) for k in keys]) if keys else []
    for value in current:
        if isinstance(value, Exception):
            raise GearsScriptError("ERR Key is already set with non tensor values.")
        if value is not None:
            try:
                decode_key_value(value)
            except GearsError:
                raise GearsScriptError("ERR Key is already set with non tensor values.") from None
    replies = conn.pipeline([("SET", k, encode_key_value(t)) for k, t in tensors.items()])
    for reply in replies:
        if isinstance(reply, Exception):
            raise GearsScriptError(str(reply))


def getTensorFromKey(key: str) -> Tensor:
    """The tensor stored in a key of this shard."""
    return mgetTensorsFromKeyspace([key])[0]


def mgetTensorsFromKeyspace(keys: Iterable[str]) -> list[Tensor]:
    """The tensors stored in keys of this shard (one round trip)."""
    names = list(keys)
    _check([("GET", k) for k in names])
    out = []
    for value in _conn().pipeline([("GET", k) for k in names]) if names else []:
        if isinstance(value, Exception):
            raise GearsScriptError(str(value))
        if value is None:
            raise GearsScriptError("ERR tensor key is empty")
        try:
            out.append(decode_key_value(value))
        except GearsError:
            raise GearsScriptError("ERR key is not a tensor") from None
    return out


def tensorToFlatList(tensor: Tensor) -> list[Any]:
    """The values, row-major (floats or ints)."""
    try:
        return to_flat_list(tensor)
    except GearsError as exc:
        _raise(exc)
        raise  # pragma: no cover


def tensorGetDataAsBlob(tensor: Tensor) -> bytearray:
    """The raw data."""
    return data_as_blob(tensor)


def tensorGetDims(tensor: Tensor) -> tuple[int, ...]:
    """The shape."""
    return tuple(_check_tensor(tensor).shape)


class PyGraphRunner:
    """A pending model run built with ``createModelRunner``."""

    def __init__(self, key: str) -> None:
        raw = _conn().call("HGET", key, "meta")
        if raw is None:
            raise GearsScriptError("given key do not contain RedisAI model")
        self.key = key
        self.meta = ModelMeta.from_json(raw)
        self.inputs: list[Tensor] = []
        self.outputs = 0
        self.used = False

    def _request(self) -> RunRequest:
        if self.used:
            raise GearsScriptError("PyGraphRunner is invalid")
        self.used = True
        return _service().model_request(self.key, self.meta, self.inputs, None)


class PyTorchScriptRunner:
    """A pending script call built with ``createScriptRunner``."""

    def __init__(self, key: str, function: str) -> None:
        raw = _conn().call("HGET", key, "meta")
        if raw is None:
            raise GearsScriptError("given key do not contain RedisAI script")
        self.key, self.function = key, function
        self.meta = ScriptMeta.from_json(raw)
        self.inputs: list[Tensor] = []
        self.used = False

    def _request(self) -> RunRequest:
        if self.used:
            raise GearsScriptError("PyTorchScriptRunner is invalid")
        self.used = True
        service = _service()
        script = service.script(self.key, self.meta)
        function = self.function
        return RunRequest(
            target=script,
            fn=lambda arrays: script.call(function, arrays, [], []),
            inputs=[t.to_numpy() for t in self.inputs],
            stats=service.runner.stats.get(self.key),
            label=self.key,
        )


def createModelRunner(key: str) -> PyGraphRunner:
    """A runner for the model stored at ``key``."""
    _check([_runs(key)])
    return PyGraphRunner(key)


def modelRunnerAddInput(runner: PyGraphRunner, name: str, tensor: Tensor) -> int:
    """Add an input (matched by position; ``name`` is kept for compatibility)."""
    runner.inputs.append(tensor)
    return 1


def modelRunnerAddOutput(runner: PyGraphRunner, name: str) -> int:
    """Declare an output (by position)."""
    runner.outputs += 1
    return 1


def _results(request: RunRequest) -> list[Tensor]:
    if request.timed_out:
        raise GearsScriptError("TIMEDOUT")
    if request.error is not None:
        raise GearsScriptError(request.error)
    return [Tensor.from_numpy(a) for a in request.outputs or []]


def _run_sync(runner: Any) -> list[Tensor]:
    request = runner._request()
    try:
        request.outputs = request.fn(request.inputs)
    except Exception as exc:  # noqa: BLE001 - the backend's error is the caller's error
        raise GearsScriptError(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
    return _results(request)


def _run_async(runner: Any, device: str) -> "asyncio.Future[list[Tensor]]":
    request = runner._request()
    loop = gears_loop()
    future: asyncio.Future[list[Tensor]] = loop_future()

    def resolve(done: RunRequest) -> None:
        def deliver() -> None:
            if future.done():
                return
            try:
                future.set_result(_results(done))
            except GearsScriptError as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(deliver)

    request.callbacks.append(resolve)
    _service().runner.submit(device, request)
    return future


def modelRunnerRun(runner: PyGraphRunner) -> list[Tensor]:
    """Run now, in the calling thread (no queue, no batching, no statistics)."""
    return _run_sync(runner)


def modelRunnerRunAsync(runner: PyGraphRunner) -> "asyncio.Future[list[Tensor]]":
    """Queue the run on the model's device; ``await`` it for the output tensors."""
    return _run_async(runner, runner.meta.device)


def createScriptRunner(key: str, function: str) -> PyTorchScriptRunner:
    """A runner for ``function`` of the script stored at ``key``."""
    _check([_runs(key)])
    return PyTorchScriptRunner(key, function)


def scriptRunnerAddInput(runner: PyTorchScriptRunner, tensor: Tensor) -> None:
    """Add one tensor to the function's ``List[Tensor]`` argument."""
    runner.inputs.append(tensor)


def scriptRunnerAddInputList(runner: PyTorchScriptRunner, tensors: Iterable[Tensor]) -> None:
    """Add several tensors."""
    runner.inputs.extend(tensors)


def scriptRunnerAddOutput(runner: PyTorchScriptRunner) -> int:
    """Declare an output (by position)."""
    return 1


def scriptRunnerRun(runner: PyTorchScriptRunner) -> list[Tensor]:
    """Call the function now, in the calling thread."""
    return _run_sync(runner)


def scriptRunnerRunAsync(runner: PyTorchScriptRunner) -> "asyncio.Future[list[Tensor]]":
    """Queue the call on the script's device; ``await`` it for the output tensors."""
    return _run_async(runner, runner.meta.device)


class PyDAGRunner:
    """A DAG built in a gears function (``createDAGRunner()``); every method but ``Run`` chains."""

    def __init__(self) -> None:
        self._inputs: dict[str, Tensor] = {}
        self._ops: list[Any] = []
        self._used = False

    def Input(self, name: str, tensor: Tensor) -> "PyDAGRunner":
        """An in-memory input tensor (like LOAD); a duplicate name is ignored."""
        self._inputs.setdefault(name, tensor)
        return self

    def TensorSet(self, name: str, tensor: Tensor) -> "PyDAGRunner":
        """An ``AI.TENSORSET`` op."""
        from gears.ai.dag import DagOp

        self._ops.append(DagOp("tensorset", name=name, tensor=tensor))
        return self

    def TensorGet(self, name: str) -> "PyDAGRunner":
        """An ``AI.TENSORGET`` op; each adds one tensor to ``Run()``'s result."""
        from gears.ai.dag import DagOp

        self._ops.append(DagOp("tensorget", name=name))
        return self

    def ModelRun(self, name: str | None = None, inputs: list[str] | None = None, outputs: list[str] | None = None) -> "PyDAGRunner":
        """A model op (keyword arguments only, as in RedisGears)."""
        from gears.ai.dag import DagOp

        if name is None:
            raise GearsScriptError("Model key name was not given")
        if inputs is None:
            raise GearsScriptError("Must specify model inputs")
        if outputs is None:
            raise GearsScriptError("Must specify model outputs")
        raw = _conn().call("HGET", name, "meta")
        if raw is None:
            raise GearsScriptError("ERR model key is empty")
        meta = ModelMeta.from_json(raw)
        if meta.inputs and len(inputs) != len(meta.inputs):
            raise GearsScriptError("Number of keys given as INPUTS does not match model definition")
        if meta.outputs and len(outputs) != len(meta.outputs):
            raise GearsScriptError("Number of keys given as OUTPUTS does not match model definition")
        self._ops.append(DagOp("model", key=name, inputs=list(inputs), outputs=list(outputs)))
        return self

    def ScriptRun(
        self, name: str | None = None, func: str | None = None, inputs: list[str] | None = None, outputs: list[str] | None = None
    ) -> "PyDAGRunner":
        """A script op (keyword arguments only)."""
        from gears.ai.dag import DagOp

        if name is None or func is None:
            raise GearsScriptError("Script key name and function must be given")
        self._ops.append(DagOp("script", key=name, function=func, inputs=list(inputs or []), outputs=list(outputs or [])))
        return self

    def OpsFromString(self, text: str) -> "PyDAGRunner":
        """Ops in ``AI.DAGEXECUTE`` syntax: ``"|> AI.MODELEXECUTE m{1} INPUTS 1 a OUTPUTS 1 b |> AI.TENSORGET b"``."""
        from gears.ai.dag import parse_ops

        tokens = text.split()
        if not tokens or tokens[0] != "|>":
            raise GearsScriptError("ops string must start with |>")
        raw: list[list[bytes]] = []
        for token in tokens:
            if token == "|>":
                raw.append([])
            else:
                raw[-1].append(token.encode())
        try:
            self._ops.extend(parse_ops(raw))
        except GearsError as exc:
            _raise(exc)
        return self

    def Run(self) -> "asyncio.Future[list[Tensor]]":
        """Run the DAG; ``await`` it for the TensorGet tensors (or the first op's error)."""
        from gears.ai.dag import DagPlan, check_names, run_dag

        if self._used:
            raise GearsScriptError("PyDAGRunner is invalid")
        self._used = True
        _check([_runs(op.key) for op in self._ops if op.key])
        try:
            check_names(self._ops, list(self._inputs), [])
        except GearsError as exc:
            _raise(exc)
        plan = DagPlan([], [], None, None, self._ops, dict(self._inputs))
        service = _service()
        loop = gears_loop()
        future: asyncio.Future[list[Tensor]] = loop_future()

        def work() -> None:
            try:
                result, error = run_dag(service, plan, as_tensors=True), None
            except GearsError as exc:
                result, error = None, GearsScriptError(str(exc))

            def deliver() -> None:
                if not future.done():
                    future.set_exception(error) if error is not None else future.set_result(result)

            loop.call_soon_threadsafe(deliver)

        threading.Thread(target=work, name="dag-runner", daemon=True).start()
        return future


def createDAGRunner() -> PyDAGRunner:
    """A new DAG runner."""
    return PyDAGRunner()


_API = (
    "createTensorFromValues", "createTensorFromBlob", "setTensorInKey", "msetTensorsInKeyspace", "getTensorFromKey",
    "mgetTensorsFromKeyspace", "tensorToFlatList", "tensorGetDataAsBlob", "tensorGetDims", "createModelRunner",
    "modelRunnerAddInput", "modelRunnerAddOutput", "modelRunnerRun", "modelRunnerRunAsync", "createScriptRunner",
    "scriptRunnerAddInput", "scriptRunnerAddInputList", "scriptRunnerAddOutput", "scriptRunnerRun", "scriptRunnerRunAsync",
    "createDAGRunner",
)


def install() -> types.ModuleType:
    """Make ``import redisAI`` give this module's API (in a worker process)."""
    module = types.ModuleType("redisAI", __doc__)
    namespace = globals()
    for name in _API:
        setattr(module, name, namespace[name])
    module.PyTensor = Tensor  # type: ignore[attr-defined]
    module.PyGraphRunner = PyGraphRunner  # type: ignore[attr-defined]
    module.PyTorchScriptRunner = PyTorchScriptRunner  # type: ignore[attr-defined]
    module.PyDAGRunner = PyDAGRunner  # type: ignore[attr-defined]
    sys.modules["redisAI"] = module
    return module


# ------------------------------------------------------------ tensor functions (spec §4)
_E_FLAT_LIST = "Failed converting tensor to flat list"
_E_API_DTYPE = "Failed creating tensor, make sure you put the right data type."


def _api_type(type_: Any) -> str | bytes:
    if not isinstance(type_, (str, bytes)):
        raise TensorError("type argument must be a string")
    return type_


def _api_dtype(type_: str | bytes) -> str:
    try:
        return parse_dtype(type_)
    except TensorError:
        raise TensorError(_E_API_DTYPE) from None


def _api_dims(shape: Any) -> tuple[int, ...]:
    try:
        items = list(iter(shape))
    except TypeError:
        raise TensorError("dims argument must be iterable") from None
    out = []
    for d in items:
        if isinstance(d, float):
            raise TensorError("dims arguments must be long")
        try:
            out.append(operator.index(d))
        except TypeError:
            raise TensorError("dims arguments must be long") from None
    return check_shape(out)


def _check_tensor(t: Any) -> Tensor:
    if not isinstance(t, Tensor):
        raise TensorError("Given argument is not of type PyTensor")
    return t


def create_from_values(type_: str, shape: Iterable[int], values: Iterable[float]) -> Tensor:
    """``redisAI.createTensorFromValues(type, shape, values)``: values must be Python floats.
    Integer dtypes convert them (truncated toward zero, range-checked → ``ERR invalid value``);
    BOOL takes 0.0/1.0; the count must match the shape."""
    _api_type(type_)
    dims_ = _api_dims(shape)  # dims are checked before the dtype, as in the original
    name = _api_dtype(type_)
    try:
        items = list(iter(values))
    except TypeError:
        raise TensorError("values argument must be iterable") from None
    for v in items:
        if not isinstance(v, float):
            raise TensorError("values arguments must be double")
    if name == "STRING":
        raise TensorError(_E_API_DTYPE)
    if len(items) != element_count(dims_):
        raise TensorError("ERR wrong number of values for the tensor shape")
    if name in FLOAT_DTYPES:
        with np.errstate(over="ignore"):
            arr = np.array(items, dtype=NUMPY_DTYPES[name])
    else:
        low, high = INT_RANGES[name]
        ints: list[int] = []
        for v in items:
            if not math.isfinite(v):
                raise TensorError(E_VALUE)
            i = int(v)
            if name == "BOOL" and v not in (0.0, 1.0):
                raise TensorError(E_BOOL)
            if i < low or i > high:
                raise TensorError(E_VALUE)
            ints.append(i)
        arr = np.array(ints, dtype=NUMPY_DTYPES[name])
    return Tensor._wrap(name, arr.reshape(dims_))


def create_from_blob(type_: str, shape: Iterable[int], blob: Any) -> Tensor:
    """``redisAI.createTensorFromBlob(type, shape, blob)``: bytes, bytearray or any buffer
    (a numpy array: its elements in row-major order, whatever its memory layout); the data
    is copied. Dims may be any integers (``int`` or numpy integers)."""
    _api_type(type_)
    if not isinstance(blob, (bytes, bytearray)):
        try:
            memoryview(blob)
        except TypeError:
            raise TensorError("blob argument must be bytes, byte array or a buffer") from None
    dims_ = _api_dims(shape)
    name = _api_dtype(type_)
    data = blob if type(blob) is bytes else to_bytes(blob)
    return from_blob(name, dims_, data)


def to_flat_list(t: Tensor) -> list[Any]:
    """``redisAI.tensorToFlatList(t)``: floats or ints, row-major; STRING is unsupported."""
    t = _check_tensor(t)
    if t.dtype == "STRING":
        raise TensorError(_E_FLAT_LIST)
    return t.values()


def data_as_blob(t: Tensor) -> bytearray:
    """``redisAI.tensorGetDataAsBlob(t)``: the raw data as a new bytearray."""
    return bytearray(_check_tensor(t).blob())
