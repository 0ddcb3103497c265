"""Small TorchScript models the AI tests share."""

from __future__ import annotations

import io

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
