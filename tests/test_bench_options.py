"""``scripts/bench.py ai`` options for other models and devices (the suite itself is a benchmark, not a test)."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCH = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("gears_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_help_names_the_model_and_device_options():
    done = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--model {minilm,bert-base}" in done.stdout and "--device DEVICE" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_gpu_without_cuda_is_a_one_line_error():
    done = subprocess.run([sys.executable, str(BENCH), "ai", "--device", "GPU"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "bench ai --device GPU: this machine has no CUDA device"


def test_bert_base_is_built_from_a_config_and_exported_for_any_device():
    from pipelines.qa import pinned_devices

    model = load_bench()._bench_model("bert-base")
    assert list(model.inputs) == ["ids", "mask", "types"] and model.outputs == 2
    assert all(tuple(t.shape) == (1, 128) and t.dtype == torch.int64 for t in model.inputs.values())
    module = torch.jit.load(io.BytesIO(model.blob))
    assert pinned_devices(module) == []
    assert sum(p.numel() for p in module.parameters()) > 100_000_000  # bert-base's size
    with torch.inference_mode():
        start, end = module(*model.inputs.values())
    assert start.shape == end.shape == (1, 128)
