"""Small TorchScript models and helpers the AI tests share."""

from __future__ import annotations

import io
import uuid

import redis
import torch


class Affine(torch.nn.Module):
    """``x @ W`` with a fixed 4x3 weight."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.arange(12, dtype=torch.float32).reshape(4, 3) / 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def torchscript(module: torch.nn.Module) -> bytes:
    """The ``torch.jit.save`` bytes of a scripted module."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buffer)
    return buffer.getvalue()


def tag() -> str:
    """A fresh hashtag, so tests never share keys."""
    return uuid.uuid4().hex[:6]


def owner(gc, key: str) -> redis.Redis:
    """A client on the front door of the shard that owns ``key``."""
    cluster = gc.cluster_client()
    port = cluster.get_node_from_key(key).port
    cluster.close()
    return redis.Redis(port=port)
