"""``AI.TENSORSET`` / ``AI.TENSORGET``: argument parsing and replies (spec §1.1, §1.2)."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

from gears.ai.tensors import (
    E_NVALUES, E_SHAPE, E_TOO_MANY_DIMS, FLOAT_DTYPES, INTEGER_TOKEN, MAX_DIMS, Tensor, TensorError, from_blob,
    from_values, parse_dtype, to_bytes, zeros_tensor,
)

__all__ = ["FMT_BLOB", "FMT_META", "FMT_VALUES", "format_double", "parse_tensorget", "parse_tensorset", "tensorget_reply"]

#: ``AI.TENSORGET`` format bits.
FMT_META = 1
FMT_BLOB = 2
FMT_VALUES = 4

_E_BLOB_ARG = "ERR a single binary string should come after the BLOB argument in 'AI.TENSORSET' command"
_E_SET_ARITY = "ERR wrong number of arguments for 'AI.TENSORSET' command"
_E_GET_ARITY = "ERR wrong number of arguments for 'AI.TENSORGET' command"
_E_FORMAT = "ERR unsupported data format"
_E_BOTH = "ERR both BLOB and VALUES specified"


def _parse_dim(token: bytes) -> int:
    if INTEGER_TOKEN.match(token) is None:
        raise TensorError(E_SHAPE)
    value = int(token)
    if value <= 0 or value >= 1 << 63:
        raise TensorError(E_SHAPE)
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
                raise TensorError(E_NVALUES)
            fmt = FMT_VALUES
            pos += 1
            break
        dim = _parse_dim(token)
        shape.append(dim)
        if len(shape) > MAX_DIMS:
            raise TensorError(E_TOO_MANY_DIMS)
        n *= dim
        pos += 1
    dims_ = tuple(shape)
    if fmt == FMT_BLOB:
        data = args[pos]
        if type(data) is not bytes:
            data = to_bytes(data)
        return args[1], from_blob(name, dims_, data)
    if fmt == FMT_VALUES:
        return args[1], from_values(name, dims_, args[pos:])
    return args[1], zeros_tensor(name, dims_)


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
    if tensor.dtype in FLOAT_DTYPES:
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
