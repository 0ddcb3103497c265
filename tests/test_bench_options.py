"""``scripts/bench.py ai`` options for other models and devices (the suite itself is a benchmark, not a test)."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
BENCH = SCRIPTS / "bench.py"


def load_ai_suite(monkeypatch):
    """``scripts/benchmarks/ai.py`` imported the way ``python scripts/bench.py`` imports it
    (with ``scripts/`` on ``sys.path``)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    return importlib.import_module("benchmarks.ai")


def test_help_names_the_model_and_device_options():
    done = subprocess.run([sys.executable, str(BENCH), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert "--model {minilm,bert-base}" in done.stdout and "--device DEVICE" in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_gpu_without_cuda_is_a_one_line_error():
    done = subprocess.run([sys.executable, str(BENCH), "ai", "--device", "GPU"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "bench ai --device GPU: this machine has no CUDA device"


def test_bert_base_is_built_from_a_config_and_exported_for_any_device(monkeypatch):
    from gears_pipelines.qa import pinned_devices

    model = load_ai_suite(monkeypatch).bench_model("bert-base")
    assert list(model.inputs) == ["ids", "mask", "types"] and model.outputs == 2
    assert all(tuple(t.shape) == (1, 128) and t.dtype == torch.int64 for t in model.inputs.values())
    module = torch.jit.load(io.BytesIO(model.blob))
    assert pinned_devices(module) == []
    assert sum(p.numel() for p in module.parameters()) > 100_000_000  # bert-base's size
    with torch.inference_mode():
        start, end = module(*model.inputs.values())
    assert start.shape == end.shape == (1, 128)
