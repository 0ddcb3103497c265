"""Tensors: the value model, their key format, and the ``AI.TENSORSET``/``AI.TENSORGET`` logic.

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

Key format
==========

A tensor is stored as an ordinary Redis **string** value, so ``GET`` returns it and Redis
persists, replicates and migrates it like any other string. All integers little-endian:

=======  ===========  =========================================================
offset   size         field
=======  ===========  =========================================================
0        8            magic :data:`MAGIC` = ``b"\\x00GFTENS1"`` (the leading NUL keeps
                      it apart from user text; ``1`` is the format version)
8        1            dtype code (:data:`DTYPE_CODES`: FLOAT=1 ... STRING=10)
9        1            reserved, 0
10       2            ndim (uint16)
12       4            reserved, 0
16       8 * ndim     dims (int64 each, ``>= 0``)
16+8n    rest         the blob (:meth:`Tensor.blob`): raw little-endian data, or
                      for STRING the NUL-terminated elements
=======  ===========  =========================================================

The first 8 bytes are the same for every tensor, so a server-side script can tell a tensor
key from other strings with ``GETRANGE key 0 7``. :func:`decode_key_value` validates the
whole layout (magic, dtype, reserved bytes, dims, exact data length, STRING element count,
BOOL values) and raises :class:`WrongTypeError` (``WRONGTYPE Operation against a key
holding the wrong kind of value``) for anything else; it never returns garbage.

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
import struct
from decimal import Decimal
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import CommandError

__all__ = [
    "Tensor",
    "TensorError",
    "WrongTypeError",
    "DTYPES",
    "DTYPE_CODES",
    "MAGIC",
    "HEADER_SIZE",
    "MAX_DIMS",
    "MAX_ZERO_TENSOR_BYTES",
    "WRONGTYPE",
    "FMT_META",
    "FMT_BLOB",
    "FMT_VALUES",
    "parse_dtype",
    "encode_key_value",
    "decode_key_value",
    "is_tensor_value",
    "parse_tensorset",
    "parse_tensorget",
    "tensorget_reply",
    "format_double",
    "batch_dim",
    "concat_batch",
    "split_batch",
    "create_from_values",
    "create_from_blob",
    "to_flat_list",
    "data_as_blob",
    "dims",
]


class TensorError(CommandError):
    """A tensor error; ``str(err)`` is the full reply text (``ERR ...``), ``code`` is empty."""


class WrongTypeError(TensorError):
    """The value is not a tensor (``WRONGTYPE ...``)."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or WRONGTYPE)


# ------------------------------------------------------------------------- constants
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"

#: Dtype names in code order; the key format's dtype code is the index + 1.
DTYPES: tuple[str, ...] = ("FLOAT", "DOUBLE", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "BOOL", "STRING")
DTYPE_CODES: dict[str, int] = {name: i + 1 for i, name in enumerate(DTYPES)}
_CODE_NAMES: dict[int, str] = {code: name for name, code in DTYPE_CODES.items()}

_NP: dict[str, np.dtype] = {
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
_FLOATS = frozenset(("FLOAT", "DOUBLE"))
#: Integer dtypes and their inclusive value ranges (BOOL included).
_INT_RANGE: dict[str, tuple[int, int]] = {
    "INT8": (-(1 << 7), (1 << 7) - 1),
    "INT16": (-(1 << 15), (1 << 15) - 1),
    "INT32": (-(1 << 31), (1 << 31) - 1),
    "INT64": (-(1 << 63), (1 << 63) - 1),
    "UINT8": (0, (1 << 8) - 1),
    "UINT16": (0, (1 << 16) - 1),
    "BOOL": (0, 1),
}

#: First 8 bytes of every stored tensor value.
MAGIC = b"\x00GFTENS1"
_HEADER = struct.Struct("<8sBBHI")
HEADER_SIZE = _HEADER.size  # 16
#: numpy's (and so this implementation's) limit on the number of dims.
MAX_DIMS = 64
#: Largest zero-filled tensor ``AI.TENSORSET`` creates (a Redis string holds 512 MB).
MAX_ZERO_TENSOR_BYTES = 512 * 1024 * 1024

#: ``AI.TENSORGET`` format bits.
FMT_META = 1
FMT_BLOB = 2
FMT_VALUES = 4

_E_DTYPE = "ERR invalid data type"
_E_SHAPE = "ERR invalid or negative value found in tensor shape"
_E_LENGTH = "ERR data length does not match tensor shape and type"
_E_BOOL = "ERR BOOL tensor elements must be 0 or 1"
_E_NVALUES = "ERR wrong number of values was given in 'AI.TENSORSET' command"
_E_VALUE = "ERR invalid value"
_E_NSTRINGS = "ERR Number of string elements in data blob does not match tensor length"
_E_NUL = "ERR C-string value contains null character"
_E_BLOB_ARG = "ERR a single binary string should come after the BLOB argument in 'AI.TENSORSET' command"
_E_SET_ARITY = "ERR wrong number of arguments for 'AI.TENSORSET' command"
_E_GET_ARITY = "ERR wrong number of arguments for 'AI.TENSORGET' command"
_E_FORMAT = "ERR unsupported data format"
_E_BOTH = "ERR both BLOB and VALUES specified"
_E_TOO_MANY_DIMS = f"ERR tensor shape has more than {MAX_DIMS} dimensions"
_E_TOO_LARGE = "ERR tensor is too large"
_E_BATCH = "ERR Model did not generate the expected batch size"
_E_STRING_TORCH = "ERR STRING tensors cannot be converted to torch tensors"
_E_FLAT_LIST = "Failed converting tensor to flat list"
_E_API_DTYPE = "Failed creating tensor, make sure you put the right data type."

# Redis' string2ll: no sign but '-', no leading zeros, no spaces, "-0" rejected.
_INT_RE = re.compile(rb"(?:0|-?[1-9][0-9]*)\Z")
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
                raise TensorError(_E_BOOL)
            arr = np.array(source, dtype=_NP[name], order="C", copy=True)
            if name == "BOOL" and arr.size and int(arr.max()) > 1:
                raise TensorError(_E_BOOL)
        _check_shape(arr.shape)
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
        return self._array.ravel().tolist()

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_blob(cls, dtype: str | bytes, shape: Sequence[int], data: Any) -> "Tensor":
        """A tensor from raw data (``bytes``, ``bytearray`` or any buffer); data is copied
        unless it is ``bytes``. Non-STRING: ``len == prod(shape) * itemsize``; STRING:
        NUL-terminated elements, their count ``== prod(shape)``."""
        name = parse_dtype(dtype)
        shape = _check_shape(shape)
        if type(data) is not bytes:
            data = _to_bytes(data)
        return _from_blob(name, shape, data)

    @classmethod
    def from_values(cls, dtype: str | bytes, shape: Sequence[int], values: Sequence[bytes | str]) -> "Tensor":
        """A tensor from ``VALUES`` tokens (bytes or str), parsed as ``AI.TENSORSET`` does."""
        name = parse_dtype(dtype)
        shape = _check_shape(shape)
        return _from_values(name, shape, values)

    @classmethod
    def zeros(cls, dtype: str | bytes, shape: Sequence[int]) -> "Tensor":
        """A zero-filled tensor (STRING: empty strings); refused past :data:`MAX_ZERO_TENSOR_BYTES`."""
        name = parse_dtype(dtype)
        shape = _check_shape(shape)
        return _zeros(name, shape)

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
        _check_shape(arr.shape)
        target = np.dtype(np.bool_) if name == "BOOL" else _NP[name]
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
    return _from_blob(dtype, shape, blob)


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


def _check_shape(shape: Iterable[Any]) -> tuple[int, ...]:
    out = tuple(operator.index(d) for d in shape)
    if len(out) > MAX_DIMS:
        raise TensorError(_E_TOO_MANY_DIMS)
    for d in out:
        if d < 0:
            raise TensorError(_E_SHAPE)
    return out


def _prod(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _to_bytes(data: Any) -> bytes:
    """A bytes copy of any buffer (non-contiguous buffers in C order)."""
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray):
        return data.tobytes()
    try:
        return memoryview(data).tobytes()
    except TypeError:
        raise TensorError("blob argument must be bytes, byte array or a buffer") from None


def _from_blob(name: str, shape: tuple[int, ...], data: bytes) -> Tensor:
    n = _prod(shape)
    if name == "STRING":
        if n == 0:
            if data:
                raise TensorError(_E_NSTRINGS)
            return Tensor._wrap(name, np.empty(shape, dtype=object), b"")
        if not data or data[-1] != 0 or data.count(b"\0") != n:
            raise TensorError(_E_NSTRINGS)
        arr = np.empty(n, dtype=object)
        arr[:] = data[:-1].split(b"\0")
        return Tensor._wrap(name, arr.reshape(shape), data)
    dt = _NP[name]
    if len(data) != n * dt.itemsize:
        raise TensorError(_E_LENGTH)
    arr = np.frombuffer(data, dtype=dt).reshape(shape)
    if name == "BOOL" and n and int(arr.max()) > 1:
        raise TensorError(_E_BOOL)
    return Tensor._wrap(name, arr, data)


def _token(value: bytes | str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


def _parse_int(token: bytes) -> int:
    if _INT_RE.match(token) is None:
        raise TensorError(_E_VALUE)
    return int(token)


def _parse_double(token: bytes) -> float:
    """Redis' ``string2d``: strtod over the whole token, no spaces, no NaN, no overflow/underflow to 0."""
    m = _DEC_RE.match(token)
    if m is not None:
        value = float(token)
        if math.isinf(value):
            raise TensorError(_E_VALUE)
    else:
        m = _HEX_RE.match(token)
        if m is not None:
            try:
                value = float.fromhex(token.decode("ascii"))
            except (OverflowError, ValueError):
                raise TensorError(_E_VALUE) from None
        elif _INF_RE.match(token) is not None:
            return float(token)
        else:
            raise TensorError(_E_VALUE)
    if value == 0.0 and any(g and _NONZERO_RE.search(g) for g in m.groups()):
        raise TensorError(_E_VALUE)  # underflow to zero (ERANGE)
    return value


def _string_element(value: Any) -> bytes:
    data = _token(value)
    if data.endswith(b"\0"):
        data = data[:-1]
    if b"\0" in data:
        raise TensorError(_E_NUL)
    return data


def _from_values(name: str, shape: tuple[int, ...], values: Sequence[bytes | str]) -> Tensor:
    n = _prod(shape)
    if len(values) != n:
        raise TensorError(_E_NVALUES)
    if name in _FLOATS:
        parsed = [_parse_double(_token(v)) for v in values]
        with np.errstate(over="ignore"):
            arr = np.array(parsed, dtype=_NP[name])
    elif name == "STRING":
        arr = np.empty(n, dtype=object)
        arr[:] = [_string_element(v) for v in values]
    else:
        low, high = _INT_RANGE[name]
        parsed_ints = [_parse_int(_token(v)) for v in values]
        for v in parsed_ints:
            if v < low or v > high:
                raise TensorError(_E_VALUE)
        arr = np.array(parsed_ints, dtype=_NP[name])
    return Tensor._wrap(name, arr.reshape(shape))


def _zeros(name: str, shape: tuple[int, ...]) -> Tensor:
    n = _prod(shape)
    if n * (1 if name == "STRING" else _NP[name].itemsize) > MAX_ZERO_TENSOR_BYTES:
        raise TensorError(_E_TOO_LARGE)
    if name == "STRING":
        return Tensor._wrap(name, np.full(shape, b"", dtype=object), b"\0" * n)
    return Tensor._wrap(name, np.zeros(shape, dtype=_NP[name]))


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
    _check_shape(arr.shape)
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
    out = out.reshape(arr.shape)
    out.flags.writeable = False
    return out


# ----------------------------------------------------------------------- key format
def encode_key_value(tensor: Tensor) -> bytes:
    """The Redis string value storing ``tensor`` (see the module docstring's layout)."""
    shape = tensor.shape
    ndim = len(shape)
    head = _HEADER.pack(MAGIC, DTYPE_CODES[tensor.dtype], 0, ndim, 0)
    if ndim:
        head += struct.pack(f"<{ndim}q", *shape)
    return head + tensor.blob()


def _parse_header(data: bytes) -> tuple[str, tuple[int, ...], int] | None:
    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        return None
    _, code, reserved, ndim, reserved2 = _HEADER.unpack_from(data)
    name = _CODE_NAMES.get(code)
    if name is None or reserved or reserved2 or ndim > MAX_DIMS:
        return None
    end = HEADER_SIZE + 8 * ndim
    if len(data) < end:
        return None
    shape = struct.unpack_from(f"<{ndim}q", data, HEADER_SIZE) if ndim else ()
    for d in shape:
        if d < 0:
            return None
    return name, shape, end


def decode_key_value(data: bytes) -> Tensor:
    """The tensor stored in a key's string value; :class:`WrongTypeError` for anything else."""
    if type(data) is not bytes:
        data = bytes(data)
    header = _parse_header(data)
    if header is None:
        raise WrongTypeError()
    name, shape, offset = header
    if name == "STRING":
        try:
            return _from_blob(name, shape, data[offset:])
        except TensorError:
            raise WrongTypeError() from None
    dt = _NP[name]
    n = _prod(shape)
    if len(data) - offset != n * dt.itemsize:
        raise WrongTypeError()
    arr = np.frombuffer(data, dtype=dt, count=n, offset=offset).reshape(shape)
    if name == "BOOL" and n and int(arr.max()) > 1:
        raise WrongTypeError()
    return Tensor._wrap(name, arr)


def is_tensor_value(data: bytes) -> bool:
    """Whether a string value is a valid stored tensor (the checks of :func:`decode_key_value`)."""
    try:
        decode_key_value(data)
    except WrongTypeError:
        return False
    return True


# ------------------------------------------------------------------------- commands
def _parse_dim(token: bytes) -> int:
    if _INT_RE.match(token) is None:
        raise TensorError(_E_SHAPE)
    value = int(token)
    if value <= 0 or value >= 1 << 63:
        raise TensorError(_E_SHAPE)
    return value


def parse_tensorset(args: list[bytes]) -> tuple[bytes, Tensor]:
    """``AI.TENSORSET key type [shape ...] [BLOB data | VALUES v ...]`` → ``(key, tensor)`` (spec §1.1)."""
    argc = len(args)
    if argc < 4:
        raise TensorError(_E_SET_ARITY)
    name = parse_dtype(args[2])
    shape: list[int] = []
    n = 1
    pos = 3
    fmt = 0
    while pos < argc:
        token = args[pos]
        word = token.upper() if len(token) in (4, 6) else b""
        if word == b"BLOB":
            if argc - 1 - pos != 1:
                raise TensorError(_E_BLOB_ARG)
            fmt = FMT_BLOB
            pos += 1
            break
        if word == b"VALUES":
            if argc - 1 - pos != n:
                raise TensorError(_E_NVALUES)
            fmt = FMT_VALUES
            pos += 1
            break
        dim = _parse_dim(token)
        shape.append(dim)
        if len(shape) > MAX_DIMS:
            raise TensorError(_E_TOO_MANY_DIMS)
        n *= dim
        pos += 1
    dims_ = tuple(shape)
    if fmt == FMT_BLOB:
        data = args[pos]
        if type(data) is not bytes:
            data = _to_bytes(data)
        return args[1], _from_blob(name, dims_, data)
    if fmt == FMT_VALUES:
        return args[1], _from_values(name, dims_, args[pos:])
    return args[1], _zeros(name, dims_)


_FORMATS = {b"META": FMT_META, b"BLOB": FMT_BLOB, b"VALUES": FMT_VALUES}


def parse_tensorget(args: list[bytes]) -> tuple[bytes, int]:
    """``AI.TENSORGET key [META] [BLOB | VALUES]`` → ``(key, fmt)``; ``fmt`` is a mask of
    :data:`FMT_META`, :data:`FMT_BLOB`, :data:`FMT_VALUES` (spec §1.2)."""
    argc = len(args)
    if argc < 2 or argc > 4:
        raise TensorError(_E_GET_ARITY)
    if argc == 2:
        return args[1], FMT_META | FMT_BLOB
    fmt = 0
    for token in args[2:]:
        bit = _FORMATS.get(bytes(token).upper())
        if bit is None:
            raise TensorError(_E_FORMAT)
        fmt |= bit
    if fmt & FMT_BLOB and fmt & FMT_VALUES:
        raise TensorError(_E_BOTH)
    return args[1], fmt


def format_double(value: float) -> bytes:
    """A double as Redis (>= 7.2) replies it in RESP2: shortest round-trip digits in
    ``%.17g`` layout (``b"1"``, ``b"0.5"``, ``b"1e+17"``, ``b"inf"``)."""
    if value != value:
        return b"nan"
    if math.isinf(value):
        return b"inf" if value > 0 else b"-inf"
    text = repr(value)
    if "e" in text:
        exponent = int(text[text.index("e") + 1 :])
        if -4 <= exponent < 17:
            text = format(Decimal(text), "f")
    elif text.endswith(".0"):
        text = text[:-2]
    return text.encode()


def _reply_values(tensor: Tensor) -> list[Any]:
    values = tensor.values()
    if tensor.dtype in _FLOATS:
        return [format_double(v) for v in values]
    return values


def tensorget_reply(tensor: Tensor, fmt: int) -> Any:
    """The ``AI.TENSORGET`` reply value for ``fmt`` (from :func:`parse_tensorget`)."""
    if not fmt & FMT_META:
        return tensor.blob() if fmt & FMT_BLOB else _reply_values(tensor)
    reply: list[Any] = ["dtype", tensor.dtype, "shape", list(tensor.shape)]
    if fmt & FMT_BLOB:
        reply += ["blob", tensor.blob()]
    elif fmt & FMT_VALUES:
        reply += ["values", _reply_values(tensor)]
    return reply


# -------------------------------------------------------------------------- batching
def batch_dim(tensor: Tensor) -> int:
    """dim 0 (the batch size), or 0 for a scalar (not batchable)."""
    shape = tensor.shape
    return shape[0] if shape else 0


def concat_batch(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate along dim 0. All must have the same dtype, ndim >= 1 and dims[1:]."""
    if not tensors:
        raise TensorError("ERR no tensors to concatenate")
    first = tensors[0]
    if len(tensors) == 1:
        return first
    for t in tensors:
        if t.dtype != first.dtype or t.ndim == 0 or t.shape[1:] != first.shape[1:]:
            raise TensorError("ERR tensors in a batch must have the same data type and dims after dim 0")
    arr = np.concatenate([t.array for t in tensors], axis=0)
    blob = None
    if first.dtype == "STRING":
        blob = b"".join(t.blob() for t in tensors)  # elements stay NUL-terminated
    return Tensor._wrap(first.dtype, arr, blob)


def split_batch(tensor: Tensor, sizes: Sequence[int]) -> list[Tensor]:
    """Slice dim 0 into consecutive parts of ``sizes``; their sum must equal dim 0
    (else ``ERR Model did not generate the expected batch size``). Parts share memory."""
    if tensor.ndim == 0 or sum(sizes) != tensor.shape[0]:
        raise TensorError(_E_BATCH)
    arr = tensor.array
    out: list[Tensor] = []
    start = 0
    for size in sizes:
        if size < 0:
            raise TensorError(_E_BATCH)
        out.append(Tensor._wrap(tensor.dtype, arr[start : start + size]))
        start += size
    return out


# ------------------------------------------------------------ redisAI module (spec §4)
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
    return _check_shape(out)


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
    if len(items) != _prod(dims_):
        raise TensorError("ERR wrong number of values for the tensor shape")
    if name in _FLOATS:
        with np.errstate(over="ignore"):
            arr = np.array(items, dtype=_NP[name])
    else:
        low, high = _INT_RANGE[name]
        ints: list[int] = []
        for v in items:
            if not math.isfinite(v):
                raise TensorError(_E_VALUE)
            i = int(v)
            if name == "BOOL" and v not in (0.0, 1.0):
                raise TensorError(_E_BOOL)
            if i < low or i > high:
                raise TensorError(_E_VALUE)
            ints.append(i)
        arr = np.array(ints, dtype=_NP[name])
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
    data = blob if type(blob) is bytes else _to_bytes(blob)
    return _from_blob(name, dims_, data)


def to_flat_list(t: Tensor) -> list[Any]:
    """``redisAI.tensorToFlatList(t)``: floats or ints, row-major; STRING is unsupported."""
    t = _check_tensor(t)
    if t.dtype == "STRING":
        raise TensorError(_E_FLAT_LIST)
    return t.values()


def data_as_blob(t: Tensor) -> bytearray:
    """``redisAI.tensorGetDataAsBlob(t)``: the raw data as a new bytearray."""
    return bytearray(_check_tensor(t).blob())


def dims(t: Tensor) -> tuple[int, ...]:
    """``redisAI.tensorGetDims(t)``: the dims as a tuple of ints."""
    return tuple(_check_tensor(t).shape)
