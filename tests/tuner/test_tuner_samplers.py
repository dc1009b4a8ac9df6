"""Every --sampler runs a study over the built-in CPU space (conditionals, constraints, log
floats, powers of two) through the real sweep loop and Optuna storage, with a fake executor."""

from __future__ import annotations

import math
from typing import Any

import pytest

from perftune.backends import TrialOutcome, TrialRequest
from perftune.executor import Executor
from perftune.settings import Workspace
from perftune.sweep import SAMPLERS, SweepConfig, run_sweep


class LrExecutor(Executor):
    """Time to target is smallest at lr = 3e-3 and grows with batch size: a shape to find."""

    framework = "torch"

    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []

    def describe(self, workload: str) -> dict[str, Any]:
        return {"name": "fake", "framework": "torch", "target": 0.5, "mode": "max",
                "budget_s": 50.0, "eval_interval_s": 0.1}  # fmt: skip

    def devices(self) -> list[dict[str, Any]]:
        return [{"kind": "cpu", "name": "Fake CPU", "count": 1, "memory_bytes": 2**33,
                 "cores": 2}]  # fmt: skip

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        cfg = request.config
        self.configs.append(cfg)
        t = 1 + (math.log10(cfg["learning_rate"]) - math.log10(3e-3)) ** 2 + cfg["batch_size"] / 512
        return TrialOutcome("ok", metrics={"reached_target": True, "time_to_target_s": t},
                            wall_s=0.0)  # fmt: skip


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_the_cpu_space(tmp_path, sampler):
    if sampler == "gp":
        pytest.importorskip("torch")  # Optuna's GPSampler needs torch in the sweep process
    ex = LrExecutor()
    cfg = SweepConfig(workload="mlp-digits", trials=8, seed=0, sampler=sampler, search="joint",
                      confirm_top=1, confirm_repeats=1, track=False)  # fmt: skip
    report = run_sweep(cfg, Workspace.resolve(tmp_path / "ws"), executor=ex)
    searched = ex.configs[: report.trials.get("complete", 0)]
    assert report.trials.get("complete", 0) == 8
    assert searched[0]["batch_size"] == 32 and searched[0]["optimizer"] == "adam"  # baseline
    for c in searched:
        assert c["world_size"] * c["num_threads"] <= 2  # constraints hold in what ran
        assert ("momentum" in c) == (c["optimizer"] in ("sgd", "rmsprop"))
        assert 1e-4 <= c["learning_rate"] <= 3e-2
    assert report.best is not None and report.speedup is not None and report.speedup >= 1.0
