"""A real sweep on a CUDA GPU: the batch-size probe, bf16, MFU against the peak table, energy
through NVML. Marked ``gpu``: skipped on machines without one (this project's CI machines)."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, run_cli, run_json, warnings_besides_load

from perftune.executor import _perftune_path

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("workload", ["gpt-tiny", "cnn-digits"])
def test_gpu_sweep(tmp_path, workload):
    report = run_json("sweep", "--workload", workload, "--device", "cuda", "--objective", "throughput",
                      "--trials", "8", "--seed", "0", "--home", str(tmp_path))  # fmt: skip
    assert report["device"]["kind"] == "cuda"
    probe = report["batch_probe"]
    assert probe and probe["max_batch_size"] >= 32
    best = report["best"]
    assert best["config"]["batch_size"] <= probe["max_batch_size"]
    m = best["metrics"]
    assert 0 < m["mfu"] < 1 and m["mfu_peak_source"].startswith(("table:", "measured"))
    assert m["peak_device_memory_mb"] > 0
    if m["energy_source"] == "nvml":
        assert m["joules_per_sample"] > 0 and 10 < m["avg_power_w"] < 2000
    else:
        assert m["energy_source"] == "unavailable"
    assert report["speedup"] >= 1.0


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_training_function_and_its_best(tmp_path):
    """The user's own training function (examples/hf_style.py) tuned on the GPU: the batch-size
    probe runs the function a few steps per size, trial.prepare puts the model on the GPU in
    the config's precision; then the stored best runs outside the sweep on the GPU."""
    import os
    import subprocess
    import sys

    report = run_json("sweep", "--workload", "examples/hf_style.py:train", "--device", "cuda",
                      "--objective", "throughput", "--trials", "6", "--seed", "0",
                      "--confirm-top", "1", "--confirm-repeats", "2", "--home", str(tmp_path))  # fmt: skip
    assert report["device"]["kind"] == "cuda" and report["best"] is not None
    assert report["batch_probe"]["max_batch_size"] >= 32
    assert report["best"]["metrics"]["peak_device_memory_mb"] > 0 and warnings_besides_load(report) == []
    code = ("import json, runpy, perftune; ns = runpy.run_path('examples/hf_style.py'); "
            "t = perftune.Trial.from_best('hf-style', device='cuda', objective='throughput', target=0.95); "
            "r = t.run(ns['train']); print(json.dumps([t.source, str(t.device), r['metrics']['reached_target']]))")  # fmt: skip
    env = {**os.environ, "PERFTUNE_HOME": str(tmp_path), "PYTHONPATH": _perftune_path()}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    source, device, reached = json.loads(proc.stdout.splitlines()[-1])
    assert source == "stored" and device.startswith("cuda") and reached


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_gpu_launched_script(tmp_path):
    import sys

    proc = run_cli("sweep", "--name", "script-gpu", "--device", "cuda", "--objective", "throughput",
                   "--trials", "3", "--seed", "0", "--space", "examples/script/space.yaml",
                   "--confirm-top", "1", "--confirm-repeats", "1", "--home", str(tmp_path), "--json",
                   "--", sys.executable, "examples/script/train.py", "--batch-size", "{batch_size}",
                   "--lr", "{learning_rate}", "--epochs", "200")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["device"]["kind"] == "cuda" and report["best"]["metrics"]["throughput_sps"] > 0
