"""The user-workload example end to end: a real sweep of ``examples/my_workload.py`` through the
CLI, the stored best read back with ``perftune best``, and ``examples/train_with_best.py``
training with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = "examples/my_workload.py:make_workload"
NAME = "synthetic-regression"  # make_workload().name

pytestmark = pytest.mark.slow


def _run(args: list[str], home: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PERFTUNE_NO_PROGRESS": "1"}
    for var in ("PERFTUNE_HOME", "PERFTUNE_STORAGE", "PERFTUNE_TRACKING_URI", "PERFTUNE_DB"):
        env.pop(var, None)  # everything in the test's workspace
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _json(proc: subprocess.CompletedProcess) -> Any:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"stdout is not one JSON document:\n{proc.stdout}\nstderr:\n{proc.stderr}")


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """One real sweep (3 trials, 1 candidate confirmed once) into a fresh workspace."""
    home = tmp_path_factory.mktemp("user-workload-ws")
    proc = _run(["-m", "perftune.cli", "sweep", "--workload", SPEC, "--trials", "3",
                 "--confirm-top", "1", "--confirm-repeats", "1", "--seed", "0",
                 "--home", str(home), "--json"], home)  # fmt: skip
    return home, _json(proc)


def test_sweep_reports_baseline_and_best(swept):
    home, report = swept
    assert report["workload"] == NAME
    assert report["framework"] == "torch" and report["device"]["kind"] == "cpu"
    assert report["objective"] == "time-to-target" and report["direction"] == "minimize"
    assert report["study_name"] == f"{NAME}-torch-cpu-time-to-target"
    assert sum(report["trials"].values()) >= 3
    baseline, best = report["baseline"], report["best"]
    assert baseline is not None and baseline["label"] == "baseline"
    assert best is not None and best["config"] and best["stats"]["median"] > 0
    assert best["values"] and not best["failures"]
    assert report["stored"] is True and report["best_config_id"] is not None
    assert report["mlflow_run_id"]
    assert (home / "optuna.db").exists() and (home / "mlflow.db").exists()


def test_best_command_returns_the_stored_config(swept):
    home, report = swept
    proc = _run(["-m", "perftune.cli", "best", "--workload", NAME, "--json", "--home", str(home)],
                home)  # fmt: skip
    records = _json(proc)
    assert len(records) == 1
    rec = records[0]
    assert rec["workload"] == NAME and rec["framework"] == "torch"
    assert rec["device_kind"] == "cpu" and rec["objective"] == "time-to-target"
    assert rec["id"] == report["best_config_id"]
    assert rec["config"] == report["best"]["config"]
    assert rec["value"] == pytest.approx(report["best"]["stats"]["median"])


def test_train_with_best_uses_the_stored_config(swept):
    home, report = swept
    proc = _run(["examples/train_with_best.py", "--workload", SPEC, "--home", str(home), "--json"], home)
    out = _json(proc)
    assert out["source"] == "stored"
    assert out["config"] == report["best"]["config"]
    assert out["workload"] == NAME
    assert out["reached_target"] is True and out["metric"] >= out["target"]
    # the speedup it prints is the one the sweep measured, with the runs behind it
    if report["speedup"] is not None:
        assert out["stored_speedup"]["value"] == pytest.approx(report["speedup"])
        assert out["stored_speedup"]["runs_each"] == len(report["best"]["values"])


def test_train_with_best_falls_back_to_the_defaults(tmp_path):
    """No sweep ever ran in this workspace: the script trains with the framework defaults."""
    proc = _run(["examples/train_with_best.py", "--workload", SPEC, "--home", str(tmp_path), "--json"], tmp_path)
    out = _json(proc)
    assert out["source"] == "defaults" and "stored_speedup" not in out
    assert out["config"]["batch_size"] == 32 and out["config"]["optimizer"] == "adam"
    assert out["reached_target"] is True
