"""Model backends: TorchScript (``TORCH``) and ONNX Runtime (``ONNX``).

A backend turns a stored blob into a :class:`LoadedModel` that runs on numpy arrays.
``TF`` and ``TFLITE`` are not available: storing such a model is a clear error.
Devices are ``CPU`` and ``GPU`` / ``GPU:<n>`` (``CPU:<n>`` is accepted as CPU); asking
for a GPU on a machine without CUDA is an error at store time.

Thread counts follow RedisAI's ``INTRA_OP_PARALLELISM`` and ``INTER_OP_PARALLELISM`` (0: the
backend's default), set once per worker with :func:`set_parallelism` before the first load.
"""

from __future__ import annotations

import io
import logging
import re
import threading
from typing import Any, Callable

from gears.errors import CommandError

__all__ = ["LoadedModel", "LoadedScript", "load_model", "load_script", "check_device", "set_parallelism", "BACKENDS"]

log = logging.getLogger(__name__)

BACKENDS = ("TF", "TFLITE", "TORCH", "ONNX")
_DEVICE = re.compile(r"^(CPU|GPU)(:\d+)?$", re.IGNORECASE)
#: (intra-op threads, inter-op threads); 0 is the backend's default.
_parallelism = (0, 0)
_torch_configured = False


def set_parallelism(intra_op: int, inter_op: int) -> None:
    """Threads inside one op and across independent ops, for models loaded from now on."""
    global _parallelism
    _parallelism = (intra_op, inter_op)


def _configure_torch(torch: Any) -> None:
    """Apply the thread counts to torch once, before its first model runs."""
    global _torch_configured
    if _torch_configured:
        return
    _torch_configured = True
    intra_op, inter_op = _parallelism
    if intra_op > 0:
        torch.set_num_threads(intra_op)
    if inter_op > 0:
        try:
            torch.set_num_interop_threads(inter_op)
        except RuntimeError as exc:  # torch allows it only before any inter-op work
            log.warning("INTER_OP_PARALLELISM not applied: %s", exc)


def check_device(device: str) -> str:
    """Validate a device name as RedisAI does; returns it upper-cased."""
    if len(device) >= 10 or not _DEVICE.match(device):
        raise CommandError("ERR Invalid DEVICE")
    return device.upper()


def _torch_device(device: str) -> Any:
    import torch

    name = device.upper()
    if not _DEVICE.match(name):
        raise CommandError("ERR unsupported device")
    if name.startswith("CPU"):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CommandError(f"ERR GPU requested ({device}) but no CUDA device is available on this node")
    index = int(name.split(":", 1)[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise CommandError(f"ERR GPU requested ({device}) but this node has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(f"cuda:{index}")


class LoadedModel:
    """A model ready to run: ``run(arrays) -> arrays`` (numpy in, numpy out)."""

    def __init__(self, backend: str, device: str, runner: Callable[[list[Any]], list[Any]], inputs: list[str],
                 outputs: list[str]) -> None:
        self.backend = backend
        self.device = device
        self._runner = runner
        self.inputs = inputs
        self.outputs = outputs
        self.lock = threading.Lock()

    @property
    def input_count(self) -> int | None:
        return len(self.inputs) if self.inputs else None

    def run(self, arrays: list[Any]) -> list[Any]:
        """Run once on numpy arrays; returns numpy arrays (one per output)."""
        return self._runner(arrays)


def load_model(backend: str, device: str, blob: bytes) -> LoadedModel:
    """Load a stored blob with its backend; a backend error becomes a one-line error reply."""
    backend = backend.upper()
    if backend == "TORCH":
        return _load_torch(device, blob)
    if backend == "ONNX":
        return _load_onnx(device, blob)
    if backend in ("TF", "TFLITE"):
        raise CommandError(f"ERR backend {backend} is not available in Gears Fabric (convert the model to ONNX or TorchScript)")
    raise CommandError("ERR unsupported backend")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _load_torch(device: str, blob: bytes) -> LoadedModel:
    import torch

    _configure_torch(torch)
    target = _torch_device(device)
    try:
        module = torch.jit.load(io.BytesIO(blob), map_location=target)
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's model
        raise CommandError(f"ERR could not load the TORCH model: {_one_line(exc)}") from None
    module.eval()
    arguments = [a.name for a in module.forward.schema.arguments][1:]

    def run(arrays: list[Any]) -> list[Any]:
        with torch.inference_mode():
            inputs = [torch.from_numpy(a).to(target) for a in arrays]
            result = module(*inputs)
        if isinstance(result, torch.Tensor):
            result = (result,)
        elif isinstance(result, dict):
            result = tuple(result.values())
        return [t.detach().to("cpu").contiguous().numpy() for t in result]

    return LoadedModel("TORCH", device, run, arguments, [])


def _load_onnx(device: str, blob: bytes) -> LoadedModel:
    try:
        import onnxruntime
    except ImportError:
        raise CommandError("ERR backend ONNX is not installed (pip install gears-fabric[ai])") from None
    providers = ["CPUExecutionProvider"]
    if device.upper().startswith("GPU"):
        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise CommandError(f"ERR GPU requested ({device}) but onnxruntime has no CUDA provider on this node")
        providers = ["CUDAExecutionProvider"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = _parallelism
    try:
        session = onnxruntime.InferenceSession(blob, options, providers=providers)
    except Exception as exc:  # noqa: BLE001
        raise CommandError(f"ERR could not load the ONNX model: {_one_line(exc)}") from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(arrays: list[Any]) -> list[Any]:
        return list(session.run(None, dict(zip(inputs, arrays))))

    return LoadedModel("ONNX", device, run, inputs, outputs)


class LoadedScript:
    """A compiled TorchScript script: ``call(function, tensors, keys, args)``."""

    def __init__(self, device: str, unit: Any, entry_points: list[str]) -> None:
        self.device = device
        self._unit = unit
        self.entry_points = entry_points

    def call(self, function: str, arrays: list[Any], keys: list[str], args: list[str], variadic: int = -1) -> list[Any]:
        """Call an entry point ``f(tensors, keys, args)``; a function with another signature
        (scripts stored with the deprecated ``AI.SCRIPTSET``) gets the tensors positionally,
        the ones from ``variadic`` on (``$`` in ``AI.SCRIPTRUN``) as one list."""
        import torch

        try:
            fn = getattr(self._unit, function)
        except AttributeError:
            raise CommandError(f"Function does not exist: {function}") from None
        target = _torch_device(self.device)
        with torch.inference_mode():
            tensors = [torch.from_numpy(a).to(target) for a in arrays]
            if [str(a.type) for a in fn.schema.arguments] == ["List[Tensor]", "List[str]", "List[str]"]:
                result = fn(tensors, keys, args)
            elif variadic >= 0:
                result = fn(*tensors[:variadic], tensors[variadic:])
            else:
                result = fn(*tensors)
        if isinstance(result, torch.Tensor):
            result = (result,)
        return [t.detach().to("cpu").contiguous().numpy() for t in result]


def load_script(device: str, source: str, entry_points: list[str] | None) -> LoadedScript:
    """Compile TorchScript source; check each entry point's signature (SCRIPTSTORE rules)."""
    import torch

    _configure_torch(torch)
    _torch_device(device)
    try:
        unit = torch.jit.CompilationUnit(source)
    except Exception as exc:  # noqa: BLE001 - compile errors are replied verbatim (first line)
        raise CommandError(_one_line(exc)) from None
    for name in entry_points or []:
        try:
            fn = getattr(unit, name)
        except AttributeError:
            raise CommandError(f"Function {name} does not exist in the given script.") from None
        arguments = fn.schema.arguments
        if len(arguments) != 3:
            raise CommandError(f"Wrong number of inputs in function {name}. Expected 3 but was {len(arguments)}")
        types = [str(a.type) for a in arguments]
        if types != ["List[Tensor]", "List[str]", "List[str]"]:
            raise CommandError(
                f"Wrong inputs type in function {name}. Expected signature similar to: "
                f"def {name}(tensors: List[Tensor], keys: List[str], args: List[str])"
            )
    return LoadedScript(device, unit, list(entry_points or []))
