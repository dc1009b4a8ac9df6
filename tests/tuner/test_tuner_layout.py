"""Parallel layouts, the batch-size probe and config checks: validated without any hardware."""

from __future__ import annotations

import pytest

from perftune.backends._layout import ParallelLayout
from perftune.backends._probe import NothingFits, find_max_batch_size
from perftune.backends._torch import TorchBackend, validate_config
from perftune.errors import InvalidConfig

CPU = {"kind": "cpu", "count": 1, "cores": 2, "bf16": True}
H100x2 = {"kind": "cuda", "count": 2, "cores": 16, "bf16": True, "tf32": True, "nccl": True}
H100 = {**H100x2, "count": 1}
T4 = {"kind": "cuda", "count": 1, "cores": 8, "bf16": False, "tf32": False}
MPS = {"kind": "mps", "count": 1, "cores": 8, "bf16": True}
NPU8 = {"kind": "npu", "count": 8, "cores": 64, "bf16": True, "dist_backend": "hccl"}
TPU4 = {"kind": "tpu", "count": 4, "cores": 96, "bf16": True, "dist_backend": "xla"}


@pytest.mark.parametrize(("config", "device", "fragment"), [
    ({"parallel_strategy": "ddp", "world_size": 1}, H100, "needs world_size >= 2"),
    ({"parallel_strategy": "ddp", "world_size": 2}, H100, "only 1 cuda device(s) present"),
    ({"parallel_strategy": "fsdp", "world_size": 4}, H100x2, "only 2 cuda device(s) present"),
    ({"parallel_strategy": "fsdp", "world_size": 2}, {**MPS, "count": 2}, "mps has none"),
    ({"parallel_strategy": "ddp", "world_size": 3}, CPU, "more CPU ranks than the 2 usable cores"),
    ({"parallel_strategy": "dp", "world_size": 2}, CPU, "needs CUDA GPUs, not cpu"),
    ({"parallel_strategy": "fsdp", "world_size": 2}, TPU4, "torch_xla's own FSDP"),
    ({"parallel_strategy": "single", "world_size": 2}, H100x2, "single uses one device"),
    ({"parallel_strategy": "pipeline"}, H100, "unknown"),
    ({"precision": "bf16"}, T4, "does not support bfloat16"),
    ({"precision": "tf32"}, T4, "compute capability 8.0+"),
    ({"precision": "fp16"}, CPU, "not supported on cpu"),
    ({"precision": "fp8"}, H100, "unknown"),
    ({"world_size": 1.5, "parallel_strategy": "ddp"}, H100x2, "must be an integer"),
])  # fmt: skip
def test_impossible_layouts_are_rejected_before_running(config, device, fragment):
    with pytest.raises(InvalidConfig, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        ParallelLayout.from_config(config, device)


@pytest.mark.parametrize(("config", "device", "processes", "devices_used", "backend"), [
    ({}, CPU, 1, 1, "gloo"),
    ({"parallel_strategy": "ddp", "world_size": 2}, CPU, 2, 1, "gloo"),
    ({"parallel_strategy": "fsdp", "world_size": 2, "precision": "bf16"}, CPU, 2, 1, "gloo"),
    ({"parallel_strategy": "dp", "world_size": 2, "precision": "tf32"}, H100x2, 1, 2, "nccl"),
    ({"parallel_strategy": "fsdp", "world_size": 2, "precision": "fp16"}, H100x2, 2, 2, "nccl"),
    ({"parallel_strategy": "ddp", "world_size": 2}, {**H100x2, "nccl": False}, 2, 2, "gloo"),
    ({"parallel_strategy": "ddp", "world_size": 8, "precision": "bf16"}, NPU8, 8, 8, "hccl"),
    ({"parallel_strategy": "ddp", "world_size": 4}, TPU4, 4, 4, "xla"),
    ({"precision": "fp16"}, MPS, 1, 1, None),
])  # fmt: skip
def test_valid_layouts(config, device, processes, devices_used, backend):
    layout = ParallelLayout.from_config(config, device)
    assert (layout.processes, layout.devices_used, layout.dist_backend) == (processes, devices_used, backend)


@pytest.mark.parametrize(("config", "fragment"), [
    ({"dataloader_workers": -1}, "dataloader_workers"),
    ({"pin_memory": True, "dataloader_workers": 2}, "only meaningful when training on an accelerator"),
    ({"compile": "reduce-overhead-ish"}, "not a torch.compile mode"),
    ({"parallel_strategy": "fsdp", "world_size": 2, "compile": "default"}, "compile with parallel_strategy fsdp"),
    ({"num_threads": 0}, "num_threads"),
    ({"optimizer": "lamb"}, "optimizer"),
])  # fmt: skip
def test_torch_config_checks(config, fragment):
    with pytest.raises(InvalidConfig, match=fragment):
        TorchBackend.check_config(config, CPU)


def test_pin_memory_needs_a_dataloader_on_a_gpu():
    with pytest.raises(InvalidConfig, match="pin_memory needs dataloader_workers"):
        validate_config({"pin_memory": True}, H100)
    layout = validate_config({"pin_memory": True, "dataloader_workers": 2}, H100)
    assert layout.strategy == "single"


def test_capabilities_match_the_layout_rules():
    caps = {k: TorchBackend.capabilities(k)["choices"] for k in TorchBackend.device_classes}
    assert caps["mps"]["parallel_strategy"] == ["single"]
    assert "fsdp" in caps["cpu"]["parallel_strategy"] and "dp" not in caps["cpu"]["parallel_strategy"]
    assert "fsdp" not in caps["tpu"]["parallel_strategy"]
    assert caps["cpu"]["precision"] == ["fp32", "bf16"]


# ------------------------------------------------------------------ the batch-size probe
def probe(limit: int | None, **kw):
    calls: list[int] = []

    def fits(bs: int) -> bool:
        calls.append(bs)
        return limit is None or bs <= limit

    return find_max_batch_size(fits, **kw), calls


def test_probe_doubles_then_bisects_and_keeps_a_margin():
    result, calls = probe(300, start=32, max_val=4096, margin=0.1)
    assert calls[:5] == [32, 64, 128, 256, 512]  # doubling until the first OOM
    assert result.first_oom is not None and result.first_oom - result.largest_fit <= max(1, 300 // 20)
    assert 285 <= result.largest_fit <= 300
    assert result.max_batch_size == int(result.largest_fit * 0.9)
    assert result.limited_by == "memory" and len(calls) < 15


def test_probe_stops_at_max_val_without_margin():
    result, calls = probe(None, start=32, max_val=512)
    assert calls == [32, 64, 128, 256, 512]
    assert (result.max_batch_size, result.limited_by, result.first_oom) == (512, "max_val", None)


def test_probe_halves_when_the_start_does_not_fit():
    result, calls = probe(40, start=256, max_val=4096, margin=0.0)
    assert calls[:3] == [256, 128, 64] and calls[3] == 32
    assert result.largest_fit == 40 and result.max_batch_size == 40
    assert 256 not in calls[1:]  # never retried a size known not to fit


def test_probe_nothing_fits():
    with pytest.raises(NothingFits):
        probe(0, start=8, max_val=64)


def test_probe_bounds_its_parameters():
    with pytest.raises(ValueError, match="margin"):
        probe(10, start=8, max_val=64, margin=1.0)
    result, calls = probe(1000, start=1, max_val=10**6, max_trials=6)
    assert len(calls) == 6 and result.largest_fit == 32 and result.limited_by == "max_trials"
