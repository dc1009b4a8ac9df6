"""SIGKILL a sweep in the middle of a trial, run the same command again: it resumes at once (no
grace period), keeps every completed trial, fails the killed one and runs its config again
exactly once, and leaves nothing RUNNING in Optuna, MLflow or perftune's store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run_json

pytestmark = pytest.mark.slow

WORKLOAD = str(ROOT / "tests" / "e2e" / "workloads" / "sleepy.py") + ":two_seconds"
STUDY = "sleepy-torch-cpu-time-to-target"
TRIALS = 4


def _trials(home):
    import optuna

    try:
        return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home}/optuna.db").trials
    except Exception:  # noqa: BLE001 - not created yet
        return []


def test_sigkill_mid_trial_then_rerun_resumes_at_once(tmp_path):
    import psutil
    from mlflow import MlflowClient
    from optuna.trial import TrialState

    from perftune.storage import open_store

    home = tmp_path / "ws"
    args = ["sweep", "--workload", WORKLOAD, "--trials", str(TRIALS), "--seed", "0",
            "--confirm-top", "1", "--confirm-repeats", "1", "--home", str(home)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "perftune.cli", *args], cwd=ROOT,
                            env={**os.environ, "PERFTUNE_NO_PROGRESS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline, running = time.time() + 120, None
    while running is None:
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "no trial ran"
        trials = _trials(home)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        now = [t for t in trials if t.state == TrialState.RUNNING and "config" in t.user_attrs]
        if len(complete) >= 2 and now:
            running = now[0]
        time.sleep(0.1)
    time.sleep(0.2)  # inside the trial's 2 s (long enough for a loaded machine's polling)
    below = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]  # fork server, trial
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    before = {t.number: t for t in _trials(home)}
    assert before[running.number].state == TrialState.RUNNING  # killed mid-trial
    deadline = time.time() + 10
    alive = below
    while alive and time.time() < deadline:  # PDEATHSIG: they die with the sweep
        alive = [p for p in below if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        time.sleep(0.1)
    assert below and not alive

    t0 = time.monotonic()
    report = run_json(*args)  # the same command: resumes
    took = time.monotonic() - t0
    assert took < 60, f"the rerun took {took:.0f} s: it waited for the grace period (120 s)"

    trials = {t.number: t for t in _trials(home)}
    for n, t in before.items():  # completed trials kept, unchanged
        if t.state == TrialState.COMPLETE:
            assert trials[n].state == TrialState.COMPLETE and trials[n].value == t.value
    killed = trials[running.number]
    assert killed.state == TrialState.FAIL and "cause" not in killed.user_attrs  # lost
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state == TrialState.COMPLETE
    assert report["trials"].get("lost") == 1
    counted = [t for t in trials.values() if t.state.is_finished() and t.number != killed.number
               and t.user_attrs.get("cause") not in ("invalid", "surplus")]  # fmt: skip
    assert len(counted) == TRIALS
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    assert report["stored"] is True and report["best"] is not None

    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    exp = client.get_experiment_by_name("sleepy")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    parents = sorted((r for r in runs if r.data.tags.get("perftune_role") == "sweep"),
                     key=lambda r: r.info.start_time)  # fmt: skip
    assert [r.info.status for r in parents] == ["KILLED", "FINISHED"]

    with open_store(f"sqlite:///{home}/perftune.db") as store:
        assert store.get_sweep(1)["state"] == "interrupted"
        assert store.get_sweep(2)["state"] == "completed"
        assert store.get_best(workload="sleepy", framework="torch", objective="time-to-target")
