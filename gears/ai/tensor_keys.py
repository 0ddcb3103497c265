"""How a tensor is stored in a key: the value layout, encoding and validation.

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
"""

from __future__ import annotations

import struct

import numpy as np

from gears.ai.tensors import DTYPES, MAX_DIMS, NUMPY_DTYPES, Tensor, TensorError, WrongTypeError, element_count, from_blob

__all__ = ["DTYPE_CODES", "HEADER_SIZE", "MAGIC", "decode_key_value", "encode_key_value", "is_tensor_value"]

#: The key format's dtype codes: FLOAT=1 ... STRING=10.
DTYPE_CODES: dict[str, int] = {name: i + 1 for i, name in enumerate(DTYPES)}
_CODE_NAMES: dict[int, str] = {code: name for name, code in DTYPE_CODES.items()}

#: First 8 bytes of every stored tensor value.
MAGIC = b"\x00GFTENS1"
_HEADER = struct.Struct("<8sBBHI")
HEADER_SIZE = _HEADER.size  # 16


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
            return from_blob(name, shape, data[offset:])
        except TensorError:
            raise WrongTypeError() from None
    dt = NUMPY_DTYPES[name]
    n = element_count(shape)
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
