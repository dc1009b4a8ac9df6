"""Interrupting a sweep (Ctrl-C or SIGTERM) mid-trial leaves nothing RUNNING, records why, and
the same command resumes the study.

The workload's trials take two seconds each (``workloads/sleepy.py``): the signal lands inside
one, and the resumed sweep costs seconds (how a sweep stops does not depend on what it trains;
real training is test_e2e_sweep's)."""

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


def _running_trials(home) -> int:
    import optuna

    try:
        study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home}/optuna.db")
    except Exception:  # noqa: BLE001 - not created yet
        return 0
    return sum(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_then_resume(tmp_path, sig):
    import optuna
    from mlflow import MlflowClient

    home = tmp_path / "ws"
    args = ["sweep", "--workload", WORKLOAD, "--seed", "0",
            "--confirm-top", "1", "--confirm-repeats", "1", "--home", str(home)]  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "perftune.cli", *args, "--trials", "3"],
                            cwd=ROOT, env={**os.environ, "PERFTUNE_NO_PROGRESS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a shell's background job inherits SIGINT ignored: not the user's case
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 120
    trial_log = home / "logs" / f"{STUDY}-trial-0.log"  # the trial process opens it
    while not trial_log.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "no trial started"
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the first trial (its model factory sleeps 2 s)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err

    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home}/optuna.db")
    assert _running_trials(home) == 0
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["cause"] == "interrupted"

    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    exp = client.get_experiment_by_name("sleepy")
    parents = [r for r in client.search_runs([exp.experiment_id])
               if r.data.tags.get("perftune_role") == "sweep"]  # fmt: skip
    assert [r.info.status for r in parents] == ["KILLED"]

    from perftune.storage import open_store

    with open_store(f"sqlite:///{home}/perftune.db") as store:
        assert store.get_sweep(1)["state"] == "interrupted"

    # The worker and its trial are gone with the sweep.
    out = subprocess.run(["pgrep", "-f", f"perftune._worker.*{home}"], capture_output=True)
    assert out.stdout == b""

    if sig != signal.SIGINT:
        return  # resuming does not depend on which signal stopped the sweep: once is enough
    report = run_json(*args, "--trials", "2")  # the same command resumes the study
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home}/optuna.db")
    done = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL
            and t.user_attrs.get("cause") != "invalid"]  # configs the constraints rejected do not count  # fmt: skip
    assert len(done) == 2 and report["best"] is not None
