"""Guards found in review: inputs that used to pass validation and fail later, studies that
must not mix setups, and throughput that must count only samples that really ran."""

from __future__ import annotations

import pytest
from test_tuner_samplers import LrExecutor

from perftune.backends import TrialRequest
from perftune.devices import Device, select
from perftune.errors import UsageError
from perftune.executor import InProcessExecutor
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, run_sweep


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_out_of_range_is_bad_input(seed):
    with pytest.raises(UsageError, match=r"^--seed"):
        SweepConfig(workload="mlp-digits", seed=seed).validate()


@pytest.mark.parametrize("study", ["a/b", "../x", "has space"])
def test_study_name_must_be_a_plain_name(study):
    with pytest.raises(UsageError, match=r"^--study"):
        SweepConfig(workload="mlp-digits", study=study).validate()


def test_device_index_is_checked():
    cuda = Device("torch", "cuda", "Fake GPU", 2, 2**34, 8)
    assert select([cuda], "cuda:1") is cuda
    for bad in ("cuda:2", "cuda:x"):
        with pytest.raises(UsageError, match=rf"^--device {bad}: no such cuda device"):
            select([cuda], bad)


class OtherMachine(LrExecutor):
    def devices(self):
        return [{"kind": "cpu", "name": "Another CPU", "count": 1, "memory_bytes": 2**34,
                 "cores": 2}]  # fmt: skip


def test_a_study_does_not_mix_devices(tmp_path):
    ws = Workspace.resolve(tmp_path / "ws")
    cfg = SweepConfig(workload="mlp-digits", trials=2, seed=0, confirm_top=1,
                      confirm_repeats=1, track=False)  # fmt: skip
    run_sweep(cfg, ws, executor=LrExecutor())
    with pytest.raises(UsageError, match=r"belongs to device [0-9a-f]{12}, not this one"):
        run_sweep(cfg, ws, executor=OtherMachine())


@pytest.mark.slow
def test_throughput_counts_only_samples_that_ran():
    # 1437 training samples: a batch of 2048 trains 1437 per step, not 2048.
    out = InProcessExecutor("torch").run(TrialRequest(
        "mlp-digits", "torch", "cpu", {"batch_size": 2048, "num_threads": 2},
        measure="throughput", warmup_s=0.0, window_s=0.0, repeats=2))  # fmt: skip
    assert out.status == "ok", out.message
    per_step = out.metrics["throughput_sps"] * out.metrics["step_time_ms"] / 1000
    assert per_step == pytest.approx(1437, rel=1e-6)
