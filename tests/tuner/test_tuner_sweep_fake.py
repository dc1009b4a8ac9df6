"""The sweep loop against a fake executor (no framework, no worker, no MLflow): how outcomes land
in Optuna and the report, and how the grid sampler covers its grid."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from perftune.backends import TrialOutcome, TrialRequest
from perftune.executor import Executor
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, run_sweep

GRID = [16, 32, 64, 128, 256]
BAD = {16: "timeout", 64: "crash", 128: "oom", 256: "diverged"}


class FakeExecutor(Executor):
    """Batch size 32 reaches the target in about 1 s; the others fail as :data:`BAD` says."""

    framework = "torch"

    def __init__(self) -> None:
        self.requests: list[TrialRequest] = []

    def describe(self, workload: str) -> dict[str, Any]:
        return {"name": "fake", "framework": "torch", "target": 0.5, "mode": "max",
                "budget_s": 5.0, "eval_interval_s": 0.1}  # fmt: skip

    def devices(self) -> list[dict[str, Any]]:
        return [{"kind": "cpu", "name": "Fake CPU", "count": 1, "memory_bytes": 2**33,
                 "cores": 2}]  # fmt: skip

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        self.requests.append(request)
        bs = request.config["batch_size"]
        if bs in BAD:
            return TrialOutcome("failed", cause=BAD[bs], message=f"fake {BAD[bs]}", wall_s=0.01)
        seconds = 1.0 + len(self.requests) / 1000  # some noise
        return TrialOutcome("ok", metrics={"reached_target": True, "time_to_target_s": seconds},
                            wall_s=0.01)  # fmt: skip

    def search_batch_sizes(self) -> list[int]:
        """Batch sizes of the search trials (not the confirmation runs), in order."""
        return [r.config["batch_size"] for r in self.requests if "-trial-" in r.log_path]


@pytest.fixture
def space(tmp_path) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(
        textwrap.dedent(f"""
        extends: none
        version: 1
        params:
          batch_size: {{type: categorical, choices: {GRID}, default: 32}}
    """).lstrip()
    )
    return str(path)


def sweep(tmp_path: Path, space: str, **kw):
    ex = FakeExecutor()
    cfg = SweepConfig(**{"workload": "mlp-digits", "space": space, "sampler": "grid",
                         "confirm_top": 1, "confirm_repeats": 1, "track": False, **kw})  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws")
    return ex, ws, run_sweep(cfg, ws, executor=ex)


def _load(ws: Workspace, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=ws.storage)


def test_failures_reach_optuna_and_the_report(tmp_path, space):
    from optuna.trial import TrialState

    ex, ws, report = sweep(tmp_path, space, sampler="random", trials=12, seed=3)
    assert report.trials["complete"] + sum(report.trials.get(c, 0) for c in set(BAD.values())) == 12
    study = _load(ws, report.study_name)
    for t in study.get_trials(deepcopy=False):
        bs = t.params["batch_size"]
        if bs in BAD:
            assert t.state == TrialState.PRUNED and t.user_attrs["infeasible"]  # samplers avoid it
            assert (t.user_attrs["cause"], t.user_attrs["message"]) == (BAD[bs], f"fake {BAD[bs]}")
        else:
            assert t.state == TrialState.COMPLETE and 1.0 < t.value < 1.1
    assert {f["cause"] for f in report.failures} <= set(BAD.values())
    assert report.best["config"] == {"batch_size": 32}
    assert report.speedup == pytest.approx(1.0, abs=0.01)


def test_resume_counts_to_the_total(tmp_path, space):
    ex, ws, first = sweep(tmp_path, space, sampler="random", trials=3, seed=1)
    ex2, _, second = sweep(tmp_path, space, sampler="random", trials=5, seed=1)
    assert len(ex.search_batch_sizes()) == 3 and len(ex2.search_batch_sizes()) == 2
    assert len(_load(ws, second.study_name).trials) == 5


def test_grid_with_as_many_trials_as_points_covers_the_grid(tmp_path, space):
    ex, _, report = sweep(tmp_path, space, trials=len(GRID), seed=0)
    assert sorted(set(ex.search_batch_sizes())) == GRID


def test_grid_sweep_that_exhausts_the_grid(tmp_path, space):
    ex, _, report = sweep(tmp_path, space, trials=len(GRID) + 1, seed=0)
    assert sorted(set(ex.search_batch_sizes())) == GRID


def test_space_error_writes_nothing(tmp_path):
    from perftune.errors import UsageError

    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  batch_size: {type: int, low: 64, high: 32, default: 32}\n")
    with pytest.raises(UsageError, match=r"bad.yaml: params.batch_size.low: must be <= high"):
        sweep(tmp_path, str(bad))
    assert not (tmp_path / "ws").exists()


def test_constraints_that_admit_only_the_defaults(tmp_path):
    """Only the baseline satisfies the constraints. The 50th rejected config used to be recorded
    as ``crash`` and counted, so the rerun "completed" with the baseline alone; now it is
    ``invalid`` like the 49 before it, nothing is counted, and the error names the constraint
    that rejected the most configs."""
    from optuna.trial import TrialState

    from perftune.errors import UsageError
    from perftune.sweep.search import MAX_CONSECUTIVE_INVALID

    only = tmp_path / "only.yaml"
    only.write_text(textwrap.dedent("""
        extends: none
        params:
          batch_size: {type: categorical, choices: [16, 32, 64, 128], default: 32}
          learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, default: 1.0e-3}
        constraints:
          - {expr: "batch_size <= 64", message: small batches}
          - {expr: "learning_rate == 0.001", message: the default rate only}
    """).lstrip())  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws")
    for _ in range(2):  # the rerun fails the same way instead of "completing"
        ex = FakeExecutor()
        cfg = SweepConfig(workload="mlp-digits", space=str(only), sampler="random", seed=0,
                          trials=2, confirm_top=1, confirm_repeats=1, track=False)  # fmt: skip
        with pytest.raises(UsageError, match=r"^search space only.yaml: "
                           f"{MAX_CONSECUTIVE_INVALID} configs in a row were rejected, "
                           f"{MAX_CONSECUTIVE_INVALID} of them by constraint "
                           r"'learning_rate == 0.001: the default rate only'$"):  # fmt: skip
            run_sweep(cfg, ws, executor=ex)
    trials = _load(ws, "fake-torch-cpu-time-to-target").trials
    assert [t.user_attrs.get("cause") for t in trials if not t.user_attrs.get("baseline")] == \
        ["invalid"] * 2 * MAX_CONSECUTIVE_INVALID  # fmt: skip
    assert all(t.state == TrialState.PRUNED for t in trials if t.user_attrs.get("cause") == "invalid")
    assert [t.state for t in trials if t.user_attrs.get("baseline")] == [TrialState.COMPLETE]


class DefaultWinsExecutor(FakeExecutor):
    """The default (batch size 32) is the fastest, 64 is 1.25x slower, the others 2x; each
    confirmation round's seed scales all of them alike (paired rounds)."""

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        self.requests.append(request)
        luck = 1.0 + (request.seed % 7) / 20
        seconds = {32: 1.0, 64: 1.25}.get(request.config["batch_size"], 2.0) * luck
        return TrialOutcome("ok", metrics={"reached_target": True, "time_to_target_s": seconds},
                            wall_s=0.01)  # fmt: skip


def test_a_kept_default_reports_the_closest_candidate_and_its_interval(tmp_path, space, capsys, monkeypatch):
    """When no candidate beats the default, the report (and the stored sweep row, and the CLI)
    says by how much the closest one lost and how sure that is, not a bare 1.00x."""
    from perftune import cli

    ex = DefaultWinsExecutor()
    cfg = SweepConfig(workload="mlp-digits", space=space, sampler="grid", trials=5, confirm_top=2,
                      confirm_repeats=3, track=False)  # fmt: skip
    ws = Workspace.resolve(tmp_path / "ws")
    report = run_sweep(cfg, ws, executor=ex)
    assert report.best["label"] == "baseline" and report.speedup == 1.0 and report.speedup_interval is None
    ch = report.challenger
    assert ch["config"] == {"batch_size": 64} and ch["trial_number"] is not None
    assert ch["speedup"] == pytest.approx(0.8) and ch["values"] == [1.25 * v for v in report.baseline["values"]]
    iv = ch["speedup_interval"]
    assert iv["low"] <= 0.8 <= iv["high"] and iv["n"] == report.confirm_rounds == 3
    rerun = run_sweep(cfg, ws, executor=DefaultWinsExecutor())  # nothing left: the stored report
    assert rerun.already_complete and rerun.challenger == ch
    monkeypatch.setenv("COLUMNS", "200")
    cli._print_report(report, ws)
    out = capsys.readouterr().out
    assert "speedup over the default: 1.00x\n" in out
    assert (f"no candidate beat the default: the closest, trial {ch['trial_number']}, ran at 0.80x "
            f"(95% CI {iv['low']:.2f}-{iv['high']:.2f}x, 3 paired rounds)") in out




def test_the_busy_machine_warning_counts_the_confirmation_runs_too(tmp_path, space, monkeypatch):
    """Every run this process measures records the machine's load; the report warns when a
    quarter or more ran busy, counting the confirmation's repeats, not only the search trials."""
    import perftune.sweep.context as context

    def confirming(request: TrialRequest) -> bool:
        return "-trial-" not in request.log_path

    ex = FakeExecutor()  # below: the load over the run just measured, busy while confirming
    monkeypatch.setattr(context, "measure_load", lambda _: {"load_avg_1m": 9.0 if confirming(ex.requests[-1]) else 0.1})
    cfg = SweepConfig(workload="mlp-digits", space=space, sampler="grid", trials=5, confirm_repeats=3, track=False)
    ws = Workspace.resolve(tmp_path / "ws")
    report = run_sweep(cfg, ws, executor=ex)
    confirmed = sum(map(confirming, ex.requests))
    assert 0 < confirmed < len(ex.requests)
    assert f"busy during {confirmed} of {len(ex.requests)} measured trials" in " ".join(report.warnings)
    study = _load(ws, report.study_name)
    assert {t.user_attrs["metrics"]["load_avg_1m"] for t in study.get_trials(deepcopy=False)} == {0.1}


SIZES = [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384]


class CrashAbove96(FakeExecutor):
    """Batch sizes from 128 on crash (a third of the choices); 32 is the fastest of the rest."""

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        self.requests.append(request)
        bs = request.config["batch_size"]
        if bs >= 128:
            return TrialOutcome("failed", cause="crash", message="fake crash", wall_s=0.01)
        seconds = 1.0 + 0.3 * abs(SIZES.index(bs) - SIZES.index(32)) / 4
        return TrialOutcome("ok", metrics={"reached_target": True, "time_to_target_s": seconds}, wall_s=0.01)


def _late_crashes(tmp_path: Path, sampler: str, seed: int) -> tuple[int, int]:
    """Crashing configs among a 30-trial sweep's trials after its tenth, and their count."""
    space = tmp_path / f"{sampler}{seed}.yaml"
    space.write_text(f"extends: none\nversion: 1\nparams:\n  batch_size: {{type: categorical, choices: {SIZES}, default: 32}}\n")
    ex = CrashAbove96()
    cfg = SweepConfig(workload="mlp-digits", space=str(space), sampler=sampler, trials=30, seed=seed,
                      confirm_top=1, confirm_repeats=1, track=False)  # fmt: skip
    run_sweep(cfg, Workspace.resolve(tmp_path / f"ws-{sampler}{seed}"), executor=ex)
    late = ex.search_batch_sizes()[10:]
    return sum(bs >= 128 for bs in late), len(late)


def test_tpe_learns_to_avoid_a_region_that_crashes(tmp_path):
    """A crashed trial is PRUNED with a violated constraint, not a FAIL the samplers ignore: once
    past its startup trials, TPE proposes the crashing third of the space far less often than
    random search does (seeded: the same counts every run)."""
    tpe = [_late_crashes(tmp_path, "tpe", seed) for seed in range(3)]
    rnd = [_late_crashes(tmp_path, "random", seed) for seed in range(3)]
    tpe_crashes, late = sum(c for c, _ in tpe), sum(n for _, n in tpe)
    assert late == 60 and tpe_crashes <= 0.25 * late
    assert tpe_crashes < sum(c for c, _ in rnd)  # random: about a third
