"""End to end through the real parts: the CLI runs a real PyTorch sweep on the CPU, then the
Optuna study, the MLflow runs and the config store are checked with their own APIs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import run_json

pytestmark = pytest.mark.slow

STUDY = "mlp-digits-torch-cpu-time-to-target"
BASE = ["sweep", "--workload", "mlp-digits", "--seed", "0", "--confirm-top", "1"]
SWEEP = [*BASE, "--budget", "60"]  # twice mlp-digits' own: the baseline's curve must reach the target


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    home = tmp_path_factory.mktemp("ws")
    report = run_json(*SWEEP, "--confirm-repeats", "2", "--trials", "3", "--home", str(home))
    return home, report


def test_report_has_baseline_best_and_speedup(swept):
    _, report = swept
    assert report["study_name"] == STUDY
    assert report["workload"] == "mlp-digits" and report["framework"] == "torch"
    assert report["device"]["kind"] == "cpu" and len(report["device"]["fingerprint"]) == 64
    base, best = report["baseline"], report["best"]
    assert base["config"]["batch_size"] == 32 and base["config"]["optimizer"] == "adam"
    assert base["config"]["learning_rate"] == pytest.approx(1e-3)
    assert len(base["values"]) == 2 and base["stats"]["median"] > 0
    assert best["stats"]["median"] <= base["stats"]["median"]
    # Two paired rounds: the speedup is the geometric mean of the rounds' ratios, with its
    # 95% interval (Student's t on the log ratios; with two rounds a wide one, and it says so).
    # The default kept (no candidate beat it): 1x, and no interval of the default against itself.
    ratios = [b / w for b, w in zip(base["values"], best["values"], strict=True)]
    assert report["speedup"] == pytest.approx(math.sqrt(ratios[0] * ratios[1]))
    iv = report["speedup_interval"]
    assert report["confirm_rounds"] == 2
    if best["label"] == "baseline":
        assert report["speedup"] == 1.0 and iv is None
    else:
        assert iv["n"] == 2 and iv["level"] == 0.95
        assert report["speedup"] == pytest.approx(iv["estimate"])
        assert iv["low"] <= report["speedup"] <= iv["high"]
    assert best["interval"]["low"] <= best["stats"]["median"] <= best["interval"]["high"]
    assert report["stored"] is True and report["best_config_id"] is not None


def test_optuna_study(swept):
    import optuna

    home, report = swept
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home}/optuna.db")
    finished = [t for t in study.trials if t.state.is_finished()
                and t.user_attrs.get("cause") != "invalid"]  # fmt: skip
    assert len(finished) == 3
    first = study.trials[0]
    assert first.user_attrs.get("baseline") is True
    assert first.params["batch_size"] == 32 and first.params["optimizer"] == "adam"
    # The default normally reaches the target well inside the budget; on a loaded machine it may
    # not, and is then recorded as pruned (not reaching the target), never as failed.
    assert first.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert study.user_attrs["workload"] == "mlp-digits"
    assert study.user_attrs["device"] == report["device"]["fingerprint"]
    assert study.direction == optuna.study.StudyDirection.MINIMIZE


def test_mlflow_runs(swept):
    import mlflow
    from mlflow import MlflowClient

    home, report = swept
    uri = f"sqlite:///{home}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["mlp-digits"], output_format="list")
    parent = [r for r in runs if r.info.run_id == report["mlflow_run_id"]]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.metrics["speedup"] == pytest.approx(report["speedup"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == report["mlflow_run_id"]]
    trials = [r for r in children if r.data.tags.get("phase") == "search"]
    confirms = [r for r in children if r.data.tags.get("phase") == "confirmation"]
    assert len(trials) == 3 and len(confirms) == 2
    for run in trials:
        assert {"batch_size", "learning_rate", "optimizer", "num_threads"} <= set(run.data.params)
        assert run.data.tags["framework"] == "torch"
        assert run.data.tags["device_fingerprint"] == report["device"]["fingerprint"]
        assert run.data.tags["trial_state"] in ("COMPLETE", "PRUNED", "FAIL")
        assert "peak_rss_mb" in run.data.metrics
    baseline_run = next(r for r in trials if r.data.tags["optuna_trial_number"] == "0")
    assert baseline_run.data.metrics["objective"] > 0
    # MFU against a matmul measured on this CPU (it is in no peak table); no energy counter is
    # readable here, and the run says so rather than inventing one.
    m = baseline_run.data.metrics
    assert 0 < m["mfu"] < 1.5 and m["achieved_tflops"] > 0
    assert m["mfu"] == pytest.approx(m["achieved_tflops"] / m["peak_tflops"])
    assert baseline_run.data.tags["mfu_peak_source"] == "measured matmul"
    assert baseline_run.data.tags["energy_source"] == "unavailable"
    client = MlflowClient(uri)
    curve = client.get_metric_history(baseline_run.info.run_id, "val_metric")
    assert len(curve) >= 2 and [m.step for m in curve] == sorted(m.step for m in curve)
    assert curve[-1].value >= 0.96  # the baseline reached mlp-digits' target
    artifacts = {a.path for a in client.list_artifacts(report["mlflow_run_id"])}
    assert {"best_config.yaml", "search_space.json", "plots"} <= artifacts
    plots = {a.path for a in client.list_artifacts(report["mlflow_run_id"], "plots")}
    assert "plots/optimization_history.html" in plots


def test_best_from_cli_and_python(swept, cli_here):
    home, report = swept
    found = run_json("best", "--workload", "mlp-digits", "--framework", "torch",
                     "--device", "cpu", "--home", str(home))  # fmt: skip
    assert len(found) == 1
    rec = found[0]
    assert rec["config"] == report["best"]["config"]
    assert rec["value"] == pytest.approx(report["best"]["stats"]["median"])
    assert rec["baseline_value"] == pytest.approx(report["baseline"]["stats"]["median"])
    assert rec["speedup"] == pytest.approx(report["speedup"])
    iv = report["speedup_interval"]
    assert rec["speedup_interval"] == (pytest.approx([iv["low"], iv["high"]]) if iv else None)
    assert rec["mlflow_run_id"] == report["mlflow_run_id"]
    assert rec["device_fingerprint"] == report["device"]["fingerprint"]
    code = (f"import json, perftune; r = perftune.best_config('mlp-digits', home={str(home)!r}); "
            "print(json.dumps(r.config))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == report["best"]["config"]
    table = cli_here("best", "--workload", "mlp-digits", "--home", str(home))
    assert table.returncode == 0 and "time-to-target" in table.stdout


def test_resume_continues_the_same_study(swept, cli_here):
    import optuna

    home, _ = swept
    # One confirmation run per candidate is enough here (repeats are checked above).
    report = run_json(*SWEEP, "--confirm-repeats", "1", "--trials", "4", "--home", str(home))
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home}/optuna.db")
    finished = [t for t in study.trials if t.state.is_finished()
                and t.user_attrs.get("cause") != "invalid"]  # fmt: skip
    assert len(finished) == 4  # one more trial, not four more
    assert sum(1 for t in study.trials if t.user_attrs.get("baseline")) == 1
    assert report["best_config_id"] is not None
    found = json.loads(cli_here("best", "--workload", "mlp-digits", "--home", str(home), "--json").stdout)
    assert len(found) == 1  # the same key: replaced or kept, with history
    assert len(found[0]["history"]) >= 1


def test_best_unknown_workload_is_exit_1(swept, cli_here):
    home, _ = swept
    proc = cli_here("best", "--workload", "nope", "--home", str(home))
    assert proc.returncode == 1 and "no best config stored" in proc.stderr


def test_devices_json():
    found = run_json("devices", "--framework", "all")
    assert [d["framework"] for d in found if d["kind"] == "cpu" or d.get("error")] == [
        "torch", "tensorflow", "mindspore"]  # one CPU row (or why not) per framework, in order
    cpus = {d["framework"]: d for d in found if d["kind"] == "cpu"}
    if os.environ.get("PERFTUNE_REQUIRE_FRAMEWORKS") == "1":
        assert set(cpus) == {"torch", "tensorflow", "mindspore"}, found
    assert len({d["name"] for d in cpus.values()}) == 1  # the same CPU, seen by each framework
    assert len({d["fingerprint"] for d in cpus.values()}) == len(cpus)  # keyed per framework
    assert all(d["cores"] >= 1 and d["memory_bytes"] > 0 for d in cpus.values())
    again = run_json("devices", "--framework", "torch")
    assert again[0]["fingerprint"] == cpus["torch"]["fingerprint"]  # stable across runs



def test_factored_search_for_real(tmp_path):
    """The factored search on real PyTorch training: stage 1's throughput trials in a study of
    their own, stage 2's convergence trials on stage 1's systems config for their batch size,
    each stage's MLflow runs tagged, and the confirmation's verdict with its interval."""
    import optuna
    from mlflow import MlflowClient

    # mlp-digits' own budget: a stage-2 config that does not converge costs at most that
    report = run_json(*BASE, "--budget", "30", "--search", "factored", "--confirm-repeats", "1",
                      "--trials", "6", "--home", str(tmp_path))  # fmt: skip
    stages = report["search"]["stages"]
    assert report["search"]["search"] == "factored"
    assert stages["throughput"]["trials"] == 3 and stages["convergence"]["trials"] == 3
    storage = f"sqlite:///{tmp_path}/optuna.db"
    fast = optuna.load_study(study_name=f"{STUDY}.throughput", storage=storage)
    assert fast.direction == optuna.study.StudyDirection.MAXIMIZE and len(fast.trials) == 3
    measured = [t for t in fast.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert measured and all(t.value > 0 for t in measured)
    assert {t.user_attrs["config"]["learning_rate"] for t in fast.trials} == {1e-3}  # held at default
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(study.trials) == 3 and study.trials[0].user_attrs["baseline"] is True
    for t in study.trials[1:]:
        assert "lr_multiplier" in t.params and t.user_attrs["lr_rule"] in ("linear", "sqrt")
        assert "num_threads" not in t.params  # the systems knobs came from stage 1
    # stage 2's pruner steps are predicted training ms (samples seen / stage 1's throughput), not
    # evaluation numbers: the first evaluation comes after 0.25 s of training
    reported = [sorted(t.intermediate_values) for t in study.trials if t.intermediate_values]
    assert reported and all(steps[0] > 10 for steps in reported), reported
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([report["mlflow_experiment_id"]], max_results=100)
    names = {(r.data.tags.get("stage"), int(r.data.tags["optuna_trial_number"])): r.info.run_name for r in runs
             if r.data.tags.get("phase") == "search"}  # fmt: skip
    assert sorted(names) == [("convergence", i) for i in range(3)] + [("throughput", i) for i in range(3)]
    for (stage, i), name in names.items():  # e.g. "throughput trial 2 complete 1,234 samples/s"
        assert name.startswith(f"{'throughput trial' if stage == 'throughput' else 'trial'} {i} "), name
    assert report["confirm_rounds"] == 1 and report["best"] is not None
