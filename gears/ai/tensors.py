"""Tensors: the value type (:class:`Tensor`), its dtypes, and building one from a blob or values.

The key format is :mod:`gears.ai.tensor_keys`, the ``AI.TENSORSET``/``AI.TENSORGET``
syntax :mod:`gears.ai.tensor_syntax`, the ``redisAI`` tensor functions :mod:`gears.ai.redisai`.

Everything here is pure (no I/O). The contract is ``redisai-spec.md`` §1.1, §1.2, §2 and §4.

Tensor model
============

A :class:`Tensor` is an immutable (read-only) C-contiguous numpy array with an explicit
little-endian dtype plus its RedisAI dtype name:

==========  ==============  ===========================================================
name        numpy dtype     notes
==========  ==============  ===========================================================
FLOAT       ``<f4``
DOUBLE      ``<f8``
INT8        ``i1``
INT16       ``<i2``
INT32       ``<i4``
INT64       ``<i8``
UINT8       ``u1``
UINT16      ``<u2``
BOOL        ``u1``          values 0/1 only; the dtype name stays ``BOOL``
STRING      ``object``      each element a ``bytes`` without NUL; blob = elements, each
                            followed by ``\\0``
==========  ==============  ===========================================================

Dims are integers ``>= 0`` (``AI.TENSORSET`` itself rejects 0, as RedisAI does, but a model
may output an empty dimension), at most :data:`MAX_DIMS` of them (numpy's limit; RedisAI
has none). Shape ``()`` is a 0-d scalar of one element.

Deliberate differences from RedisAI
===================================

* **Negative integers** in ``VALUES`` are accepted within the dtype's range
  (``INT8 2 VALUES -1 -128`` works). RedisAI's range check casts to unsigned and rejects
  every negative value (spec §1.1 [quirk]).
* ``createTensorFromValues`` with an integer or BOOL dtype converts the given floats
  (truncated toward zero, range-checked; BOOL needs ``0.0``/``1.0``) instead of silently
  leaving the tensor zero, and the number of values must match the shape (spec §4 [quirk]).
* More than :data:`MAX_DIMS` dims, and zero-filled tensors (no ``BLOB``/``VALUES``) whose
  data would exceed :data:`MAX_ZERO_TENSOR_BYTES` (the largest Redis string), are refused.
* Float ``VALUES`` replies use the shortest round-trip digits in ``%.17g`` layout
  (``"1"``, ``"0.5"``, ``"0.10000000149011612"`` for FLOAT 0.1), as Redis >= 7.2 does.

Errors are :class:`TensorError` (a :class:`gears.errors.CommandError` with an empty
``code``): ``str(err)`` is the exact reply text, including its ``ERR`` prefix.
"""

from __future__ import annotations

import math
import operator
import re
from typing import Any, Iterable, Sequence

import numpy as np

from gears.errors import CommandError

__all__ = [
    "DTYPES", "E_BOOL", "E_NVALUES", "E_SHAPE", "E_TOO_MANY_DIMS", "E_VALUE", "FLOAT_DTYPES", "INTEGER_TOKEN", "INT_RANGES",
    "MAX_DIMS", "MAX_ZERO_TENSOR_BYTES", "NUMPY_DTYPES", "WRONGTYPE", "Tensor", "TensorError", "WrongTypeError",
    "check_shape", "element_count", "from_blob", "from_values", "parse_dtype", "to_bytes", "zeros_tensor",
]


class TensorError(CommandError):
    """A tensor error; ``str(err)`` is the full reply text (``ERR ...``), ``code`` is empty."""


class WrongTypeError(TensorError):
    """The value is not a tensor (``WRONGTYPE ...``)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or WRONGTYPE)


# ------------------------------------------------------------------------- constants
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"

#: Dtype names (in the order of the key format's dtype codes, :mod:`gears.ai.tensor_keys`).
DTYPES: tuple[str, ...] = ("FLOAT", "DOUBLE", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "BOOL", "STRING")

NUMPY_DTYPES: dict[str, np.dtype] = {
    "FLOAT": np.dtype("<f4"),
    "DOUBLE": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "BOOL": np.dtype("u1"),
    "STRING": np.dtype(object),
}
_BY_TOKEN: dict[bytes, str] = {name.encode(): name for name in DTYPES}
FLOAT_DTYPES = frozenset(("FLOAT", "DOUBLE"))
#: Integer dtypes and their inclusive value ranges (BOOL included).
INT_RANGES: dict[str, tuple[int, int]] = {
    "INT8": (-(1 << 7), (1 << 7) - 1),
    "INT16": (-(1 << 15), (1 << 15) - 1),
    "INT32": (-(1 << 31), (1 << 31) - 1),
    "INT64": (-(1 << 63), (1 << 63) - 1),
    "UINT8": (0, (1 << 8) - 1),
    "UINT16": (0, (1 << 16) - 1),
    "BOOL": (0, 1),
}

#: numpy's (and so this implementation's) limit on the number of dims.
MAX_DIMS = 64
#: Largest zero-filled tensor ``AI.TENSORSET`` creates (a Redis string holds 512 MB).
MAX_ZERO_TENSOR_BYTES = 512 * 1024 * 1024

_E_DTYPE = "ERR invalid data type"
E_SHAPE = "ERR invalid or negative value found in tensor shape"
_E_LENGTH = "ERR data length does not match tensor shape and type"
E_BOOL = "ERR BOOL tensor elements must be 0 or 1"
E_NVALUES = "ERR wrong number of values was given in 'AI.TENSORSET' command"
E_VALUE = "ERR invalid value"
_E_NSTRINGS = "ERR Number of string elements in data blob does not match tensor length"
_E_NUL = "ERR C-string value contains null character"
E_TOO_MANY_DIMS = f"ERR tensor shape has more than {MAX_DIMS} dimensions"
_E_TOO_LARGE = "ERR tensor is too large"
_E_STRING_TORCH = "ERR STRING tensors cannot be converted to torch tensors"

# Redis' string2ll: no sign but '-', no leading zeros, no spaces, "-0" rejected.
INTEGER_TOKEN = re.compile(rb"(?:0|-?[1-9][0-9]*)\Z")
# strtod as Redis' string2d accepts it: decimal, hex, inf/infinity; no spaces; nan rejected.
_DEC_RE = re.compile(rb"[+-]?(?:([0-9]+)\.?([0-9]*)|\.([0-9]+))(?:[eE][+-]?[0-9]+)?\Z")
_HEX_RE = re.compile(rb"[+-]?0[xX](?:([0-9a-fA-F]+)\.?([0-9a-fA-F]*)|\.([0-9a-fA-F]+))(?:[pP][+-]?[0-9]+)?\Z")
_INF_RE = re.compile(rb"[+-]?inf(?:inity)?\Z", re.IGNORECASE)
_NONZERO_RE = re.compile(rb"[1-9a-fA-F]")


# ---------------------------------------------------------------------------- Tensor
class Tensor:
    """An immutable tensor: a read-only, C-contiguous little-endian numpy array + dtype name.

    Build one with the ``from_*`` class methods or :meth:`zeros`; ``Tensor(dtype, array)``
    converts and validates any array-like.
    """

    __slots__ = ("_dtype", "_array", "_blob")

    _dtype: str
    _array: np.ndarray
    _blob: bytes | None

    def __init__(self, dtype: str | bytes, array: Any) -> None:
        name = parse_dtype(dtype)
        if name == "STRING":
            arr = _string_array(np.asarray(array, dtype=object))
        else:
            source = np.asarray(array)
            if name == "BOOL" and source.dtype.kind not in "biu":
                raise TensorError(E_BOOL)
            arr = np.array(source, dtype=NUMPY_DTYPES[name], order="C", copy=True)
            if name == "BOOL" and arr.size and int(arr.max()) > 1:
                raise TensorError(E_BOOL)
        check_shape(arr.shape)
        arr.flags.writeable = False
        self._dtype = name
        self._array = arr
        self._blob = None

    @classmethod
    def _wrap(cls, dtype: str, array: np.ndarray, blob: bytes | None = None) -> "Tensor":
        """Trusted constructor: ``array`` already has the right dtype, layout and values."""
        t = object.__new__(cls)
        if array.flags.writeable:
            array.flags.writeable = False
        t._dtype = dtype
        t._array = array
        t._blob = blob
        return t

    # ------------------------------------------------------------------ properties
    @property
    def dtype(self) -> str:
        """The dtype name, upper case (``FLOAT`` ... ``STRING``)."""
        return self._dtype

    @property
    def shape(self) -> tuple[int, ...]:
        """The dims (``()`` for a scalar)."""
        return self._array.shape

    @property
    def ndim(self) -> int:
        """Number of dims."""
        return self._array.ndim

    @property
    def size(self) -> int:
        """Number of elements (1 for a scalar)."""
        return self._array.size

    @property
    def array(self) -> np.ndarray:
        """The read-only numpy array (BOOL as ``u1``, STRING as an object array of bytes)."""
        return self._array

    # ------------------------------------------------------------------ data
    def blob(self) -> bytes:
        """The raw data: little-endian memory image, or NUL-terminated STRING elements."""
        blob = self._blob
        if blob is None:
            if self._dtype == "STRING":
                items = self._array.ravel().tolist()
                blob = b"\0".join(items) + b"\0" if items else b""
            else:
                blob = self._array.tobytes()
            self._blob = blob
        return blob

    def values(self) -> list[Any]:
        """Flat row-major list: floats (FLOAT/DOUBLE), ints (integer types, BOOL), bytes (STRING)."""
        flat: list[Any] = self._array.ravel().tolist()
        return flat

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_blob(cls, dtype: str | bytes, shape: Sequence[int], data: Any) -> "Tensor":
        """A tensor from raw data (``bytes``, ``bytearray`` or any buffer); data is copied
        unless it is ``bytes``. Non-STRING: ``len == prod(shape) * itemsize``; STRING:
        NUL-terminated elements, their count ``== prod(shape)``."""
        name = parse_dtype(dtype)
        shape = check_shape(shape)
        if type(data) is not bytes:
            data = to_bytes(data)
        return from_blob(name, shape, data)

    @classmethod
    def from_values(cls, dtype: str | bytes, shape: Sequence[int], values: Sequence[bytes | str]) -> "Tensor":
        """A tensor from ``VALUES`` tokens (bytes or str), parsed as ``AI.TENSORSET`` does."""
        name = parse_dtype(dtype)
        shape = check_shape(shape)
        return from_values(name, shape, values)

    @classmethod
    def zeros(cls, dtype: str | bytes, shape: Sequence[int]) -> "Tensor":
        """A zero-filled tensor (STRING: empty strings); refused past :data:`MAX_ZERO_TENSOR_BYTES`."""
        name = parse_dtype(dtype)
        shape = check_shape(shape)
        return zeros_tensor(name, shape)

    @classmethod
    def from_numpy(cls, array: Any, copy: bool = True) -> "Tensor":
        """A tensor from a numpy array (or array-like). Supported dtypes: float32/64,
        int8..int64, uint8/16, bool (→ BOOL), bytes/str/object (→ STRING, elements as
        UTF-8 bytes). With ``copy=False`` the tensor may share memory with ``array``
        (which must then not be modified)."""
        arr = np.asarray(array)
        name = _dtype_of_numpy(arr.dtype)
        if name == "STRING":
            return cls._wrap(name, _string_array(arr))
        check_shape(arr.shape)
        target = np.dtype(np.bool_) if name == "BOOL" else NUMPY_DTYPES[name]
        if copy:
            arr = np.array(arr, dtype=target, order="C", copy=True)
        else:
            arr = np.asarray(arr, dtype=target, order="C").view()
        if name == "BOOL":
            arr = arr.view(np.uint8)
        return cls._wrap(name, arr)

    def to_numpy(self, copy: bool = True) -> np.ndarray:
        """The data as numpy (BOOL as ``np.bool_``, STRING as an object array of bytes).
        ``copy=True`` (default) gives a fresh writable array (safe for ``torch.from_numpy``
        and for in-place ops); ``copy=False`` a read-only view without copying."""
        arr = self._array
        if self._dtype == "BOOL":
            arr = arr.view(np.bool_)
        return arr.copy() if copy else arr

    @classmethod
    def from_torch(cls, tensor: Any, copy: bool = True) -> "Tensor":
        """A tensor from a ``torch.Tensor`` (any device; detached, moved to CPU). torch.bool
        becomes BOOL. Other torch dtypes than those of :data:`DTYPES` raise TensorError."""
        import torch

        t = tensor.detach()
        if t.device.type != "cpu":
            t = t.cpu()
            copy = False  # already a fresh copy
        if t.dtype not in _torch_dtypes(torch):
            raise TensorError(f"ERR unsupported tensor data type {str(t.dtype).replace('torch.', '')}")
        t = t.resolve_conj().resolve_neg().contiguous()
        return cls.from_numpy(t.numpy(), copy=copy)

    def to_torch(self) -> Any:
        """A new CPU ``torch.Tensor`` with a copy of the data (BOOL → torch.bool).
        STRING tensors cannot be converted (TensorError)."""
        import torch

        if self._dtype == "STRING":
            raise TensorError(_E_STRING_TORCH)
        return torch.from_numpy(self.to_numpy(copy=True))

    # ------------------------------------------------------------------ protocol
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tensor):
            return NotImplemented
        return self._dtype == other._dtype and self.shape == other.shape and self.blob() == other.blob()

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_unpickle, (self._dtype, self.shape, self.blob()))

    def __repr__(self) -> str:
        return f"Tensor({self._dtype}, {self.shape})"

    def __str__(self) -> str:
        # As redisAI.PyTensor: the str of its flat list.
        return str(self.values())


def _unpickle(dtype: str, shape: tuple[int, ...], blob: bytes) -> Tensor:
    return from_blob(dtype, shape, blob)


def _torch_dtypes(torch: Any) -> frozenset[Any]:
    """The torch dtypes a Tensor can hold (built on first use: torch is imported lazily)."""
    global _TORCH_OK
    if _TORCH_OK is None:
        _TORCH_OK = frozenset(
            (torch.float32, torch.float64, torch.int8, torch.int16, torch.int32, torch.int64,
             torch.uint8, torch.uint16, torch.bool)
        )
    return _TORCH_OK


_TORCH_OK: frozenset[Any] | None = None


# ------------------------------------------------------------------------- helpers
def parse_dtype(token: str | bytes) -> str:
    """The upper-case dtype name of a (case-insensitive) token, or ``ERR invalid data type``."""
    if isinstance(token, str):
        token = token.encode("utf-8", "surrogateescape")
    name = _BY_TOKEN.get(token)
    if name is None:
        name = _BY_TOKEN.get(bytes(token).upper())
        if name is None:
            raise TensorError(_E_DTYPE)
    return name


def check_shape(shape: Iterable[Any]) -> tuple[int, ...]:
    out = tuple(operator.index(d) for d in shape)
    if len(out) > MAX_DIMS:
        raise TensorError(E_TOO_MANY_DIMS)
    for d in out:
        if d < 0:
            raise TensorError(E_SHAPE)
    return out


def element_count(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def to_bytes(data: Any) -> bytes:
    """A bytes copy of any buffer (non-contiguous buffers in C order)."""
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray):
        return data.tobytes()
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TensorError("blob argument must be bytes, byte array or a buffer") from None


def from_blob(name: str, shape: tuple[int, ...], data: bytes) -> Tensor:
    n = element_count(shape)
    if name == "STRING":
        if n == 0:
            if data:
                raise TensorError(_E_NSTRINGS)
            return Tensor._wrap(name, np.empty(shape, dtype=object), b"")
        if not data or data[-1] != 0 or data.count(b"\0") != n:
            raise TensorError(_E_NSTRINGS)
        strings = np.empty(n, dtype=object)
        strings[:] = data[:-1].split(b"\0")
        return Tensor._wrap(name, strings.reshape(shape), data)
    dt = NUMPY_DTYPES[name]
    if len(data) != n * dt.itemsize:
        raise TensorError(_E_LENGTH)
    arr = np.frombuffer(data, dtype=dt).reshape(shape)
    if name == "BOOL" and n and int(arr.max()) > 1:
        raise TensorError(E_BOOL)
    return Tensor._wrap(name, arr, data)


def _token(value: bytes | str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


def _parse_int(token: bytes) -> int:
    if INTEGER_TOKEN.match(token) is None:
        raise TensorError(E_VALUE)
    return int(token)


def _parse_double(token: bytes) -> float:
    """Redis' ``string2d``: strtod over the whole token, no spaces, no NaN, no overflow/underflow to 0."""
    m = _DEC_RE.match(token)
    if m is not None:
        value = float(token)
        if math.isinf(value):
            raise TensorError(E_VALUE)
    else:
        m = _HEX_RE.match(token)
        if m is not None:
            try:
                value = float.fromhex(token.decode("ascii"))
            except (OverflowError, ValueError):
                raise TensorError(E_VALUE) from None
        elif _INF_RE.match(token) is not None:
            return float(token)
        else:
            raise TensorError(E_VALUE)
    if value == 0.0 and any(g and _NONZERO_RE.search(g) for g in m.groups()):
        raise TensorError(E_VALUE)  # underflow to zero (ERANGE)
    return value


def _string_element(value: Any) -> bytes:
    data = _token(value)
    if data.endswith(b"\0"):
        data = data[:-1]
    if b"\0" in data:
        raise TensorError(_E_NUL)
    return data


def from_values(name: str, shape: tuple[int, ...], values: Sequence[bytes | str]) -> Tensor:
    n = element_count(shape)
    if len(values) != n:
        raise TensorError(E_NVALUES)
    if name in FLOAT_DTYPES:
        parsed = [_parse_double(_token(v)) for v in values]
        with np.errstate(over="ignore"):
            arr = np.array(parsed, dtype=NUMPY_DTYPES[name])
    elif name == "STRING":
        arr = np.empty(n, dtype=object)
        arr[:] = [_string_element(v) for v in values]
    else:
        low, high = INT_RANGES[name]
        parsed_ints = [_parse_int(_token(v)) for v in values]
        for v in parsed_ints:
            if v < low or v > high:
                raise TensorError(E_VALUE)
        arr = np.array(parsed_ints, dtype=NUMPY_DTYPES[name])
    return Tensor._wrap(name, arr.reshape(shape))


def zeros_tensor(name: str, shape: tuple[int, ...]) -> Tensor:
    n = element_count(shape)
    if n * (1 if name == "STRING" else NUMPY_DTYPES[name].itemsize) > MAX_ZERO_TENSOR_BYTES:
        raise TensorError(_E_TOO_LARGE)
    if name == "STRING":
        return Tensor._wrap(name, np.full(shape, b"", dtype=object), b"\0" * n)
    return Tensor._wrap(name, np.zeros(shape, dtype=NUMPY_DTYPES[name]))


def _dtype_of_numpy(dt: np.dtype) -> str:
    kind, size = dt.kind, dt.itemsize
    if kind == "f" and size in (4, 8):
        return "FLOAT" if size == 4 else "DOUBLE"
    if kind == "i" and size in (1, 2, 4, 8):
        return ("INT8", "INT16", "INT32", "INT64")[size.bit_length() - 1]
    if kind == "u" and size in (1, 2):
        return "UINT8" if size == 1 else "UINT16"
    if kind == "b":
        return "BOOL"
    if kind in "OSU":
        return "STRING"
    raise TensorError(f"ERR unsupported tensor data type {dt}")


def _string_array(arr: np.ndarray) -> np.ndarray:
    """An object array of NUL-free bytes (str elements UTF-8 encoded), C order, read-only."""
    check_shape(arr.shape)
    flat = arr.ravel().tolist()
    out = np.empty(len(flat), dtype=object)
    items: list[bytes] = []
    for item in flat:
        if isinstance(item, str):
            item = item.encode("utf-8", "surrogateescape")
        elif not isinstance(item, bytes):
            raise TensorError(f"ERR STRING tensor elements must be bytes or str, not {type(item).__name__}")
        if b"\0" in item:
            raise TensorError(_E_NUL)
        items.append(item)
    out[:] = items
    shaped = out.reshape(arr.shape)
    shaped.flags.writeable = False
    return shaped
