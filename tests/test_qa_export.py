"""Device portability of the QA export (``gears_pipelines.qa.export_model``): one export
runs on the CPU and on a GPU, in this process and served through ``AI.MODELEXECUTE``.

Only torch and transformers are needed (the GPU tests use a small BERT with random
weights from a config), so ``scripts/gpu-figures.sh`` runs this module on a CUDA machine
that lacks the NLP pipeline's packages. The GPU tests skip without CUDA."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import redis

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from gears_pipelines import qa  # noqa: E402

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def small_qa_model(layers: int = 2) -> Any:
    """A ``BertForQuestionAnswering`` of a small config, seeded random weights (nothing downloaded)."""
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=128)
    return BertForQuestionAnswering(config).eval()


def qa_inputs(length: int = 32) -> dict[str, Any]:
    ids = torch.randint(1000, 20000, (1, length), generator=torch.Generator().manual_seed(1), dtype=torch.int64)
    return {"ids": ids, "mask": torch.ones_like(ids), "types": torch.zeros_like(ids)}


def test_the_torchscript_export_pins_no_device_and_matches_the_model():
    """Tracing records the example's device in constants (transformers' masking code);
    the export replaces them, so one export runs on the CPU and on a GPU."""
    model = qa.demo_model()
    traced = torch.jit.load(io.BytesIO(qa.export_model(model, "TORCH")))
    assert qa.pinned_devices(traced) == []
    ids = torch.full((2, 24), 1012, dtype=torch.int64)
    mask = torch.ones((2, 24), dtype=torch.int64)
    mask[1, 15:] = 0
    types = torch.zeros((2, 24), dtype=torch.int64)
    with torch.inference_mode():
        start, end = traced(ids, mask, types)
        reference = model(input_ids=ids, attention_mask=mask, token_type_ids=types)
    assert torch.allclose(start, reference.start_logits, atol=1e-5)
    assert torch.allclose(end, reference.end_logits, atol=1e-5)


def test_a_plain_trace_does_pin_the_device():
    """What the test above guards against: without unpinning, a device constant is left."""
    model = small_qa_model(layers=1)
    example = (torch.ones((2, 8), dtype=torch.int64), torch.ones((2, 8), dtype=torch.int64), torch.zeros((2, 8), dtype=torch.int64))
    with torch.inference_mode():
        traced = torch.jit.trace(model, example, check_trace=False, strict=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    assert qa.pinned_devices(torch.jit.load(io.BytesIO(buffer.getvalue())))


@needs_cuda
def test_the_export_runs_on_a_gpu_like_on_the_cpu():
    blob = qa.export_model(small_qa_model(), "TORCH")
    cpu = torch.jit.load(io.BytesIO(blob))
    gpu = torch.jit.load(io.BytesIO(blob), map_location="cuda")
    inputs = list(qa_inputs().values())
    with torch.inference_mode():
        on_cpu = cpu(*inputs)
        on_gpu = gpu(*[t.cuda() for t in inputs])
    assert all(torch.allclose(a, b.cpu(), atol=1e-3) for a, b in zip(on_cpu, on_gpu))


@pytest.mark.parametrize("device", ["CPU", pytest.param("GPU", marks=needs_cuda)])
def test_the_export_served_for_a_device_answers_like_in_process(cluster1, device):
    """The one export, stored for ``device`` with AI.MODELSTORE, answers AI.MODELEXECUTE
    with the logits of the model run in this process on the CPU."""
    blob = qa.export_model(small_qa_model(), "TORCH")
    inputs = qa_inputs()
    with torch.inference_mode():
        expected = torch.jit.load(io.BytesIO(blob))(*inputs.values())
    client = redis.Redis(port=cluster1.ports[0])
    client.execute_command("AI.MODELSTORE", "qa{dev}", "TORCH", device, "BLOB", blob)
    for name, tensor in inputs.items():
        client.execute_command("AI.TENSORSET", f"{name}{{dev}}", "INT64", *tensor.shape, "BLOB", tensor.numpy().tobytes())
    assert client.execute_command("AI.MODELEXECUTE", "qa{dev}", "INPUTS", 3, "ids{dev}", "mask{dev}", "types{dev}",
                                  "OUTPUTS", 2, "start{dev}", "end{dev}") == b"OK"
    for key, want in zip(("start{dev}", "end{dev}"), expected):
        got = np.frombuffer(client.execute_command("AI.TENSORGET", key, "BLOB"), "<f4").reshape(tuple(want.shape))
        assert np.allclose(got, want.numpy(), atol=1e-3)
    assert client.execute_command("AI.INFO", "qa{dev}")[7] == device.encode()
