"""The sweep's device-aware parts against a fake executor (no framework, no MLflow): configs
rejected before dispatch, OOM as an infeasible point, the batch-size probe, MFU, and
``--device all`` with its cross-device table."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from perftune.backends import TrialOutcome, TrialRequest
from perftune.backends._flops import PEAK_FLOPS
from perftune.executor import Executor
from perftune.service import sweep_all_devices
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, run_sweep

CPU = {"kind": "cpu", "name": "Fake CPU", "count": 1, "memory_bytes": 2**33, "cores": 2, "bf16": True}
H100 = {"kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 1, "memory_bytes": 80 * 2**30,
        "cores": 2, "bf16": True, "tf32": True}  # fmt: skip
L4 = {**H100, "name": "NVIDIA L4", "memory_bytes": 24 * 2**30, "indices": [1]}
FLOPS = 1e9  # per sample


class FakeExecutor(Executor):
    """Time to target falls with the batch size; batches above ``fits`` run out of memory."""

    framework = "torch"

    def __init__(self, devices=(CPU,), fits: dict[str, int] | None = None, probe_dies: bool = False):
        self._devices = list(devices)
        self.fits = fits or {}
        self.probe_dies = probe_dies
        self.requests: list[TrialRequest] = []

    def describe(self, workload: str) -> dict[str, Any]:
        return {"name": "fake", "framework": "torch", "target": 0.5, "mode": "max",
                "budget_s": 50.0, "eval_interval_s": 0.1, "flops_per_sample": FLOPS}  # fmt: skip

    def devices(self) -> list[dict[str, Any]]:
        return self._devices

    def limit(self, request: TrialRequest) -> int:
        return self.fits.get(request.device, 10**9)

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        self.requests.append(request)
        if request.measure == "peak":
            return TrialOutcome("ok", metrics={"peak_flops": 1e12})
        if request.measure == "probe":
            limit, high, bs = self.limit(request), request.config["probe_max"], 32
            while bs <= high:
                on_report(bs, float(bs <= limit))
                if bs > limit:
                    break
                bs *= 2
            if self.probe_dies:
                return TrialOutcome("failed", cause="oom", message="killed by SIGKILL")
            bound = min(high, max(b for b in (32, 64, 128, 256, 512, 1024, 2048, 4096) if b <= limit))
            return TrialOutcome("ok", metrics={"max_batch_size": bound})
        bs = request.config["batch_size"]
        if bs > self.limit(request):
            return TrialOutcome("failed", cause="oom", message="CUDA out of memory (fake)")
        speed = 2.0 if request.device.startswith("cuda") else 1.0
        seconds = 64.0 / bs / speed + len(self.requests) / 1e4
        return TrialOutcome("ok", metrics={"reached_target": True, "time_to_target_s": seconds,
                                           "throughput_sps": bs * 100.0 * speed}, wall_s=0.01)  # fmt: skip

    def search(self, measure: str = "converge") -> list[TrialRequest]:
        return [r for r in self.requests if r.measure == measure and "-trial-" in (r.log_path or "")]


def space_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "space.yaml"
    path.write_text("extends: none\nversion: 1\nparams:\n" + textwrap.indent(body, "  "))
    return str(path)


POW2 = "batch_size: {type: int, choices_pow2: [8, 4096], default: 32}\n"


def sweep(tmp_path: Path, ex: FakeExecutor, **kw):
    cfg = SweepConfig(**{"workload": "mlp-digits", "confirm_top": 1, "confirm_repeats": 1,
                         "track": False, "seed": 0, **kw})  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws")
    return ws, run_sweep(cfg, ws, executor=ex)


def _study(ws: Workspace, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=ws.storage)


def test_impossible_layouts_never_reach_a_worker(tmp_path):
    space = space_file(tmp_path, POW2
                       + "parallel_strategy: {type: categorical, choices: [single, ddp, fsdp], default: single}\n"
                       + "world_size: {type: int, low: 1, high: 4, default: 1}\n")  # fmt: skip
    ex = FakeExecutor()
    ws, report = sweep(tmp_path, ex, space=space, trials=6, sampler="random")
    sent = [r.config for r in ex.search()]
    # Only layouts that can run on 2 cores reach the executor: single on 1, ddp/fsdp on 2.
    assert len(sent) == 6
    assert all((c["parallel_strategy"] == "single") == (c["world_size"] == 1) and c["world_size"] <= 2
               for c in sent)  # fmt: skip
    assert report.trials["invalid"] >= 1  # rejected by the layout, never counted as trials
    assert report.trials.get("fail", 0) == 0
    rejected = [t for t in _study(ws, report.study_name).trials if t.user_attrs.get("cause") == "invalid"]
    assert rejected and all("world_size" in t.user_attrs["message"] for t in rejected)


def test_oom_is_an_infeasible_point_the_sampler_learns_from(tmp_path):
    from optuna.trial import TrialState

    ex = FakeExecutor(devices=[CPU], fits={"cpu": 256})
    ws, report = sweep(tmp_path, ex, space=space_file(tmp_path, POW2), trials=24, sampler="tpe")
    trials = _study(ws, report.study_name).trials
    ooms = [t for t in trials if t.user_attrs.get("cause") == "oom"]
    assert ooms and all(t.state == TrialState.PRUNED and t.constraints == {"fits_in_memory": 1.0}
                        for t in ooms)  # fmt: skip
    assert report.trials["oom"] == len(ooms) and {f["cause"] for f in report.failures} == {"oom"}
    first, last = trials[:12], trials[12:]
    assert sum(t in ooms for t in last) < sum(t in ooms for t in first)
    assert report.best["config"]["batch_size"] == 256


def test_probe_bounds_the_batch_size_once_per_study(tmp_path):
    ex = FakeExecutor(devices=[CPU], fits={"cpu": 200})
    ws, report = sweep(tmp_path, ex, space=space_file(tmp_path, POW2), trials=6, batch_probe="on",
                       sampler="random")  # fmt: skip
    probes = [r for r in ex.requests if r.measure == "probe"]
    assert len(probes) == 1 and probes[0].config["probe_max"] == 4096
    assert report.batch_probe["max_batch_size"] == 128
    assert report.batch_probe["tried"] == [(32, True), (64, True), (128, True), (256, False)]
    assert max(r.config["batch_size"] for r in ex.search()) <= 128
    assert all(r.device_info["name"] == "Fake CPU" for r in ex.requests if r.measure == "converge")
    assert _study(ws, report.study_name).user_attrs["max_batch_size"] == 128
    # Resuming keeps the bound without probing again.
    ex2 = FakeExecutor(devices=[CPU], fits={"cpu": 200})
    sweep(tmp_path, ex2, space=space_file(tmp_path, POW2), trials=8, batch_probe="on", sampler="random")
    assert not [r for r in ex2.requests if r.measure == "probe"]
    assert max(r.config["batch_size"] for r in ex2.search()) <= 128


def test_probe_killed_midway_keeps_what_it_reported(tmp_path):
    ex = FakeExecutor(devices=[CPU], fits={"cpu": 100}, probe_dies=True)
    _, report = sweep(tmp_path, ex, space=space_file(tmp_path, POW2), trials=2, batch_probe="on")
    assert report.batch_probe["max_batch_size"] == 64 and report.batch_probe["failure"] == "oom"


def test_probe_is_off_on_the_cpu_by_default(tmp_path):
    ex = FakeExecutor()
    _, report = sweep(tmp_path, ex, space=space_file(tmp_path, POW2), trials=2)
    assert not [r for r in ex.requests if r.measure == "probe"] and report.batch_probe is None


def test_mfu_from_the_peak_table_and_from_a_measured_matmul(tmp_path):
    ex = FakeExecutor(devices=[CPU])
    ws, report = sweep(tmp_path, ex, space=space_file(tmp_path, POW2), trials=3, objective="throughput")
    peaks = [r for r in ex.requests if r.measure == "peak"]
    assert len(peaks) == 1 and peaks[0].config == {"precision": "fp32"}  # measured once, then cached
    metrics = report.best["metrics"]
    assert metrics["mfu"] == pytest.approx(metrics["throughput_sps"] * FLOPS / 1e12)
    assert metrics["mfu_peak_source"] == "measured matmul"
    trial = _study(ws, report.study_name).trials[0]
    assert trial.user_attrs["metrics"]["mfu"] == pytest.approx(trial.user_attrs["metrics"]["achieved_tflops"])

    ex = FakeExecutor(devices=[H100])
    _, report = sweep(tmp_path / "gpu", ex, space=space_file(tmp_path, POW2), trials=3,
                      objective="throughput", device="cuda")  # fmt: skip
    assert not [r for r in ex.requests if r.measure == "peak"]  # the H100 is in the table
    m = report.best["metrics"]
    assert m["mfu_peak_source"] == "table:H100 SXM"
    # The trials ran in fp32 (the space has no precision): the fp32 row, not the bf16 one.
    assert m["mfu"] == pytest.approx(m["throughput_sps"] * FLOPS / PEAK_FLOPS["H100 SXM"]["fp32"])


def test_device_all_runs_one_study_per_device_and_names_the_winner(tmp_path):
    ex = FakeExecutor(devices=[CPU, {**H100, "indices": [0]}, L4], fits={"cpu": 256, "cuda:0": 1024, "cuda:1": 256})
    cfg = SweepConfig(workload="mlp-digits", device="all", space=space_file(tmp_path, POW2), trials=5,
                      confirm_top=1, confirm_repeats=1, track=False, seed=0)  # fmt: skip
    result = sweep_all_devices(cfg, Workspace.resolve(tmp_path / "ws"), executor=ex)
    rows = {r["device"]: r for r in result["devices"]}
    assert set(rows) == {"cpu", "cuda:0", "cuda:1"}
    assert rows["cuda:1"]["name"] == "NVIDIA L4" and rows["cuda:1"]["max_batch_size"] == 256
    assert rows["cuda:0"]["max_batch_size"] == 1024 and rows["cpu"]["max_batch_size"] is None
    assert {r["study"] for r in rows.values()} == {"fake-torch-cpu-time-to-target",
                                                   "fake-torch-cuda0-time-to-target",
                                                   "fake-torch-cuda1-time-to-target"}  # fmt: skip
    best = min(rows.values(), key=lambda r: r["value"])
    assert result["winner"] == best["device"] and best["winner"] and best["device"].startswith("cuda")
    assert sum(r["winner"] for r in rows.values()) == 1
    by_device = {}
    for r in ex.requests:
        by_device.setdefault(r.device, set()).add(r.config.get("batch_size"))
    assert max(b for b in by_device["cuda:1"] if b) <= 256



def test_probe_that_dies_before_any_report_leaves_the_space_alone(tmp_path):
    class DiesAtOnce(FakeExecutor):
        def run(self, request, on_report=None):
            if request.measure == "probe":
                self.requests.append(request)
                return TrialOutcome("failed", cause="crash", message="killed by SIGSEGV")
            return super().run(request, on_report)

    ex = DiesAtOnce()
    _, report = sweep(tmp_path, ex, space=space_file(tmp_path, POW2), trials=2, batch_probe="on")
    assert report.batch_probe["max_batch_size"] is None and report.batch_probe["failure"] == "crash"
    assert report.best is not None and max(r.config["batch_size"] for r in ex.search()) <= 4096
