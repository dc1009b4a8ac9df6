"""Inference sweeps and Pareto fronts through the real sweep (Optuna, the SQLite store,
MLflow), against a fake executor whose serving figures are known: latency grows with the batch
size, throughput with it; int8 is fast but loses quality. The real trials are
tests/tuner/test_infer_torch.py's and the e2e tests'."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from perftune.backends import TrialOutcome, TrialRequest
from perftune.executor import Executor
from perftune.settings import Workspace
from perftune.storage import open_store
from perftune.sweep import SweepConfig, run_sweep


class FakeServer(Executor):
    """p99 = 1 ms + 0.1 ms per sample of the batch (int8: half); throughput = batch / p50;
    int8 loses 0.02 of accuracy. ``fit`` writes the weights file."""

    framework = "torch"

    def __init__(self) -> None:
        self.requests: list[TrialRequest] = []

    def describe(self, workload: str) -> dict[str, Any]:
        return {"name": "served", "framework": "torch", "kind": "workload", "target": 0.9, "mode": "max",
                "budget_s": 60.0, "eval_interval_s": 0.1}  # fmt: skip

    def devices(self) -> list[dict[str, Any]]:
        return [{"kind": "cpu", "name": "Fake CPU", "count": 1, "memory_bytes": 2**33, "cores": 4}]

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        self.requests.append(request)
        if request.measure == "fit":
            with open(request.model_path, "w") as f:
                f.write("weights")
            return TrialOutcome("ok", metrics={"fit_metric": 0.95, "fit_time_s": 1.0}, wall_s=0.01)
        c = request.config
        int8 = c["quantization"] == "dynamic_int8"
        p50 = (1.0 + 0.1 * c["batch_size"]) * (0.5 if int8 else 1.0)
        drop = 0.02 if int8 else 0.0
        return TrialOutcome("ok", metrics={
            "p50_ms": p50, "p90_ms": 1.2 * p50, "p99_ms": 1.5 * p50, "max_ms": 2 * p50,
            "throughput_sps": 1000 * c["batch_size"] / p50, "quality": 0.95 - drop, "quality_reference": 0.95,
            "quality_drop": drop, "peak_rss_mb": 100.0 + c["batch_size"]}, wall_s=0.01)  # fmt: skip


@pytest.fixture
def space(tmp_path) -> str:
    path = tmp_path / "serve.yaml"
    path.write_text(textwrap.dedent("""
        extends: none
        version: 1
        params:
          batch_size: {type: int, choices_pow2: [1, 64], default: 1}
          quantization: {type: categorical, choices: [none, dynamic_int8], default: none}
    """).lstrip())  # fmt: skip
    return str(path)


def sweep(ws: Workspace, space: str, ex: FakeServer | None = None, **kw):
    ex = ex or FakeServer()
    cfg = SweepConfig(**{"workload": "mlp-digits", "task": "inference", "space": space, "trials": 14,
                         "seed": 0, "sampler": "random", "confirm_top": 2, "confirm_repeats": 2, **kw})  # fmt: skip
    cfg.validate()
    return ex, run_sweep(cfg, ws, executor=ex)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.resolve(tmp_path / "ws")


def test_the_best_within_the_slo_is_stored_and_the_others_are_infeasible(ws, space):
    import optuna

    ex, report = sweep(ws, space, slo_p99_ms=5.0)
    # p99 = 1.5 (1 + 0.1 bs) <= 5 ms: batch <= 16 (fp32 quality only: int8 breaks the 0.01 drop)
    assert report.best["config"] == {"batch_size": 16, "quantization": "none"}
    assert report.stored and report.best["metrics"]["p99_ms"] <= 5.0
    assert report.baseline["config"] == {"batch_size": 1, "quantization": "none"}
    assert report.trials.get("over_slo", 0) + report.trials.get("quality_drop", 0) > 0
    study = optuna.load_study(study_name=report.study_name, storage=ws.storage)
    for t in study.trials:
        cause = t.user_attrs.get("cause")
        if cause in ("over_slo", "quality_drop"):
            assert t.state.name == "PRUNED" and t.user_attrs["infeasible"] is True
            assert ("over the 5 ms target" in t.user_attrs["message"]) == (cause == "over_slo")
    assert sum(r.measure == "fit" for r in ex.requests) == 1
    assert {r.model_path for r in ex.requests} == {report.inference["model_path"]}
    with open_store(ws.db) as s:
        (rec,) = s.get_best(workload="served", objective="throughput-at-slo")
    assert rec.objective == "throughput-at-slo@p99<=5ms,drop<=0.01" and rec.metrics["p99_ms"] <= 5.0


def test_a_looser_quality_limit_admits_int8_and_keeps_its_own_best(ws, space):
    _, strict = sweep(ws, space, slo_p99_ms=5.0)
    ex, loose = sweep(ws, space, slo_p99_ms=5.0, max_quality_drop=0.05)
    assert loose.best["config"]["quantization"] == "dynamic_int8"  # twice as fast, 0.02 lost
    assert not any(r.measure == "fit" for r in ex.requests)  # the cached weights
    with open_store(ws.db) as s:
        keys = {r.objective for r in s.get_best(workload="served", objective="throughput-at-slo")}
    assert keys == {"throughput-at-slo@p99<=5ms,drop<=0.01", "throughput-at-slo@p99<=5ms,drop<=0.05"}


def test_no_config_under_the_slo_stores_nothing_and_names_the_closest(ws, space):
    import optuna

    _, report = sweep(ws, space, slo_p99_ms=0.5, trials=4)
    assert report.best is None and not report.stored and report.best_config_id is None
    closest = report.inference["closest"]
    trials = optuna.load_study(study_name=report.study_name, storage=ws.storage).trials
    assert closest["p99_ms"] == min(t.user_attrs["metrics"]["p99_ms"] for t in trials)
    assert report.trials == {"over_slo": 4}
    assert "over the 0.5 ms target" in closest["missed"]
    assert any(w.startswith("no config met the limits") for w in report.warnings)
    with open_store(ws.db) as s:
        assert s.get_best(workload="served") == []


def test_latency_is_measured_one_sample_per_request(ws, space):
    ex, report = sweep(ws, space, objective="latency", request_rate=200.0, trials=4)
    served = [r for r in ex.requests if r.measure == "infer"]
    assert {r.config["batch_size"] for r in served} == {1} and {r.request_rate for r in served} == {200.0}
    assert report.objective == "latency@rate=200/s,drop<=0.01" and report.unit == "ms"
    assert report.best["config"]["quantization"] == "none"  # int8 is faster but loses quality


def test_two_objectives_keep_a_front_and_a_pick_chooses_from_it(ws, space):
    from perftune.service import pareto_fronts

    _, report = sweep(ws, space, objective="throughput-at-slo,peak-memory", slo_p99_ms=100.0,
                      max_quality_drop=0.05, trials=10)  # fmt: skip
    front = report.front
    assert front["objectives"] == ["throughput-at-slo", "peak-memory"] and report.front_id is not None
    values = [p["values"] for p in front["points"]]
    assert len(values) >= 2  # throughput and memory both grow with the batch: a real trade-off
    assert all(p["rounds"] == 2 for p in front["points"])
    (stored,) = pareto_fronts(ws, "served", pick="smallest")
    assert stored["picked"]["values"][1] == min(v[1] for v in values)
    (fastest,) = pareto_fronts(ws, "served", pick="fastest")
    assert fastest["picked"]["values"][0] == max(v[0] for v in values)


@pytest.fixture
def cli_on_fake(monkeypatch, capsys):
    """``perftune ARGS`` in this process, its sweeps run on a FakeServer."""
    import dataclasses

    from perftune import cli, service

    monkeypatch.setenv("PERFTUNE_NO_PROGRESS", "1")
    monkeypatch.setattr(service, "sweep", lambda cfg, ws, progress=None: run_sweep(
        dataclasses.replace(cfg, track=False), ws, progress, executor=FakeServer()))  # fmt: skip

    def run(*argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def test_the_cli_says_no_config_met_the_limits(tmp_path, space, cli_on_fake):
    code, out, err = cli_on_fake("sweep", "--task", "inference", "--workload", "mlp-digits", "--space", space,
                                 "--slo-p99-ms", "0.5", "--trials", "2", "--home", str(tmp_path / "ws"))  # fmt: skip
    assert code == 1 and "Traceback" not in out + err
    assert "no config met the limits (p99 <= 0.5 ms, quality drop <= 0.01): nothing stored" in " ".join(out.split())
    assert err.strip() == "perftune: error: no config met the limits: nothing stored (see the closest config above)"


def test_the_cli_prints_the_front(tmp_path, space, cli_on_fake, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = cli_on_fake("sweep", "--task", "inference", "--workload", "mlp-digits", "--space", space,
                                 "--objective", "throughput-at-slo,peak-memory", "--slo-p99-ms", "100",
                                 "--trials", "6", "--seed", "0", "--home", str(tmp_path / "ws"))  # fmt: skip
    assert code == 0, err
    assert "Pareto front: served / torch / cpu / throughput-at-slo,peak-memory@p99<=100ms,drop<=0.01" in out
    assert "throughput-at-slo (samples/s)" in out and "peak-memory (MiB)" in out
    assert "--pick fastest|efficient|smallest|balanced" in out
    code, out, err = cli_on_fake("best", "--workload", "served", "--pick", "smallest", "--home", str(tmp_path / "ws"))
    assert code == 0 and "→" in out and "picked config: batch_size=1" in out
