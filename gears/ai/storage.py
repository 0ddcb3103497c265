"""Models and scripts as keys of the server node.

A model (or script) key is an ordinary hash, so Redis persists, replicates and migrates it:

=====================  ==========================================================
field                  value
=====================  ==========================================================
``__gears_ai__``       ``model`` or ``script`` (what the key holds)
``meta``               JSON: backend, device, tag, batch settings, inputs,
                       outputs, ``version`` (random hex), ``chunks`` (count)
``blob:<version>:<i>`` chunk ``i`` of the model blob (at most ``CHUNK_SIZE`` bytes)
``source``             a script's TorchScript source
=====================  ==========================================================

Chunks are written as separate commands, so a model larger than ``proto-max-bulk-len``
(and than the client query buffer) is stored with no server configuration change. The
chunks of a new version are written first and ``meta`` is switched last, so readers see
the old model or the new one, never a mix; the old version's chunks are then deleted.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "MARKER_FIELD",
    "CHUNK_SIZE",
    "CHUNK_FIELD_PREFIX",
    "ModelMeta",
    "ScriptMeta",
    "chunk_fields",
    "split_chunks",
    "new_version",
]

MARKER_FIELD = "__gears_ai__"
#: Largest chunk written in one command (well under the default 512 MB bulk limit).
CHUNK_SIZE = 64 * 1024 * 1024
#: What every chunk field's name starts with.
CHUNK_FIELD_PREFIX = "blob:"


def new_version() -> str:
    """A fresh version id for a stored model."""
    return secrets.token_hex(8)


@dataclass
class ModelMeta:
    """What ``AI.MODELSTORE`` recorded about a model."""

    backend: str
    device: str
    tag: str = ""
    batchsize: int = 0
    minbatchsize: int = 0
    minbatchtimeout: int = 0
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    version: str = ""
    chunks: int = 0
    size: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "ModelMeta":
        return cls(**json.loads(text))


@dataclass
class ScriptMeta:
    """What ``AI.SCRIPTSTORE`` recorded about a script."""

    device: str
    tag: str = ""
    entry_points: list[str] = field(default_factory=list)
    version: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> "ScriptMeta":
        return cls(**json.loads(text))


def chunk_fields(version: str, count: int) -> list[str]:
    """The hash fields holding a model version's chunks, in order."""
    return [f"{CHUNK_FIELD_PREFIX}{version}:{i}" for i in range(count)]


def split_chunks(parts: list[bytes], size: int = CHUNK_SIZE) -> list[bytes]:
    """Re-cut the BLOB arguments of ``AI.MODELSTORE`` into chunks of at most ``size`` bytes."""
    chunks: list[bytes] = []
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(view), size):
            chunks.append(bytes(view[start : start + size]))
    return chunks or [b""]


def meta_of(fields: dict[Any, Any]) -> tuple[str, str] | None:
    """``(kind, meta json)`` of a hash's fields, or ``None`` when it is no AI key."""
    kind = fields.get(MARKER_FIELD) or fields.get(MARKER_FIELD.encode())
    meta = fields.get("meta") or fields.get(b"meta")
    if kind is None or meta is None:
        return None
    return (kind.decode() if isinstance(kind, bytes) else kind), (meta.decode() if isinstance(meta, bytes) else meta)
