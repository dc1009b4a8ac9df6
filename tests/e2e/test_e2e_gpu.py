"""A real sweep on a CUDA GPU: the batch-size probe, bf16, MFU against the peak table, energy
through NVML. Marked ``gpu``: skipped on machines without one (this project's CI machines)."""

from __future__ import annotations

import pytest
from conftest import run_json

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
