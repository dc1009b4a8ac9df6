"""Trials that hang, crash, run out of memory or diverge: each is classified, the worker survives
it, and a real sweep through the CLI records the causes in Optuna and MLflow.

The workload (``workloads/faulty.py``) misbehaves by training batch size: 16 hangs, 64 dies of
SIGSEGV, 128 asks the allocator for 4 PiB, 256 produces a NaN loss; 32 trains normally.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from perftune.backends import TrialRequest
from perftune.executor import ProcessExecutor
from perftune.sweep.search import INFEASIBLE

pytest.importorskip("torch")
pytestmark = pytest.mark.slow

FAULTY = f"{Path(__file__).resolve().parent / 'workloads' / 'faulty.py'}:faulty"
GOOD = 32
BAD = {16: "timeout", 64: "crash", 128: "oom", 256: "diverged"}
STUDY = "faulty-digits-torch-cpu-time-to-target"


@pytest.fixture(scope="module")
def worker():
    with ProcessExecutor("torch") as ex:
        ex.devices()  # started: the tests compare its pid before and after a fault
        yield ex


def _request(batch_size: int, log: Path, timeout_s: float = 60.0) -> TrialRequest:
    return TrialRequest(workload=FAULTY, framework="torch", device="cpu",
                        config={"batch_size": batch_size, "num_threads": 1}, budget_s=20,
                        timeout_s=timeout_s, log_path=str(log))  # fmt: skip


def _check_good(worker, tmp_path: Path) -> None:
    out = worker.run(_request(GOOD, tmp_path / "good.log"))
    assert out.status == "ok", (out.cause, out.message)
    assert out.metrics["reached_target"] is True and out.metrics["time_to_target_s"] > 0


@pytest.mark.parametrize(("batch_size", "cause"), list(BAD.items()), ids=list(BAD.values()))
def test_fault_is_classified_and_the_worker_survives(worker, tmp_path, batch_size, cause):
    pid = worker.proc.pid  # the good trial after each fault shows the worker serves trials still
    log = tmp_path / "bad.log"
    timeout_s = 5.0 if cause == "timeout" else 60.0
    out = worker.run(_request(batch_size, log, timeout_s=timeout_s))
    assert (out.status, out.cause) == ("failed", cause), out.message
    assert out.metrics == {}
    assert out.log_path == str(log)
    text = log.read_text() if log.exists() else ""
    if cause == "timeout":
        assert out.message == "exceeded the trial timeout of 5.0 s"
        assert 5.0 <= out.wall_s < 30
        # faulthandler's dump, taken before the kill: where the trial hung.
        assert "most recent call first" in text
        assert "faulty.py" in text and "in forward" in text
    elif cause == "crash":
        assert out.message == "killed by SIGSEGV"
    elif cause == "oom":
        assert "can't allocate memory" in out.message
        assert out.message.startswith("RuntimeError: ")
        assert "RuntimeError" in text  # the traceback went to the trial log
    elif cause == "diverged":
        assert out.message.startswith("Diverged: training loss became nan")
    # The same worker process, still serving trials.
    assert worker.proc.pid == pid and worker.proc.poll() is None
    _check_good(worker, tmp_path)
    assert worker.proc.pid == pid


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_worker_death_ends_its_trial(worker, tmp_path):
    import psutil

    _check_good(worker, tmp_path)
    worker_pid = worker.proc.pid
    children: list[int] = []

    def kill_worker_mid_trial() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not children:
            children.extend(c.pid for c in psutil.Process(worker_pid).children())
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(worker_pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_worker_mid_trial, daemon=True)
    killer.start()
    try:
        out = worker.run(_request(16, tmp_path / "hang.log", timeout_s=120))  # hangs
        killer.join()
        assert (out.status, out.cause, out.message) == ("failed", "crash", "the trial worker died")
        assert children, "the trial child was never seen"
        _check_good(worker, tmp_path)  # a fresh worker
        assert worker.proc.pid != worker_pid
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in children), "the trial outlived its worker"
    finally:
        for pid in children:  # the orphan this test made, if the bug left it running
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _grid_seed() -> int:
    """A seed for which Optuna's GridSampler puts batch size 32 first in its shuffled grid.

    The sweep enqueues the baseline (batch size 32) as trial 0, which the GridSampler does not
    count as a grid point (see test_tuner_sweep_fake.py); trial n then takes grid point n, so
    with 32 first, trials 1-4 are exactly the four bad batch sizes.
    """
    import optuna

    for seed in range(200):
        sampler = optuna.samplers.GridSampler({"batch_size": [16, 32, 64, 128, 256]}, seed=seed)
        if sampler._all_grids[0] == (GOOD,):
            return seed
    raise AssertionError("no seed puts 32 first")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One real sweep through the CLI over the five batch sizes (grid sampler)."""
    work = tmp_path_factory.mktemp("faults")
    (work / "space.yaml").write_text(
        textwrap.dedent("""
        extends: none
        version: 1
        description: batch sizes that break the faulty workload, and one that works
        params:
          batch_size: {type: categorical, choices: [16, 32, 64, 128, 256], default: 32}
    """).lstrip()
    )
    home = work / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFTUNE_")}
    env["PERFTUNE_NO_PROGRESS"] = "1"
    cmd = [sys.executable, "-m", "perftune.cli", "sweep", "--workload", FAULTY,
           "--space", "space.yaml", "--sampler", "grid", "--trials", "5",
           "--seed", str(_grid_seed()), "--trial-timeout", "8", "--budget", "10",
           "--confirm-top", "1", "--confirm-repeats", "1", "--home", str(home), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return home, json.loads(proc.stdout)


def test_sweep_report(swept):
    home, report = swept
    assert report["study_name"] == STUDY
    assert report["trials"] == {"complete": 1, "crash": 1, "diverged": 1, "oom": 1, "timeout": 1}
    assert sorted(f["cause"] for f in report["failures"]) == sorted(BAD.values())
    assert {f["config"]["batch_size"]: f["cause"] for f in report["failures"]} == BAD
    assert report["best"]["config"] == {"batch_size": GOOD}
    assert report["stored"] is True


def test_sweep_optuna_trials(swept):
    import optuna
    from optuna.trial import TrialState

    home, _ = swept
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home / 'optuna.db'}")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 5
    by_bs = {t.params["batch_size"]: t for t in trials}
    assert set(by_bs) == {GOOD, *BAD}
    good = by_bs[GOOD]
    assert good.state == TrialState.COMPLETE and good.value > 0
    assert good.user_attrs.get("baseline") is True
    assert "cause" not in good.user_attrs
    for bs, cause in BAD.items():
        t = by_bs[bs]
        # Out of memory, a crash, a timeout, a divergence: an infeasible point for the
        # sampler, PRUNED with the constraint it violates (a FAIL the samplers ignore).
        assert t.state == TrialState.PRUNED and t.constraints == {INFEASIBLE[cause]: 1.0}, bs
        assert t.user_attrs["infeasible"] is True
        assert t.user_attrs["cause"] == cause, bs
        assert t.user_attrs["message"], bs
        assert t.user_attrs["config"] == {"batch_size": bs}
    assert by_bs[16].user_attrs["message"] == "exceeded the trial timeout of 8.0 s"


def test_sweep_mlflow_runs(swept):
    from mlflow import MlflowClient

    home, report = swept
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("faulty-digits")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    trials = [r for r in runs if r.data.tags.get("phase") == "search"]
    assert len(trials) == 5
    assert all(r.data.tags["mlflow.parentRunId"] == report["mlflow_run_id"] for r in trials)
    causes = {}
    for r in trials:
        number = int(r.data.tags["optuna_trial_number"])
        causes[number] = r.data.tags.get("failure_cause")
        if causes[number]:
            assert r.info.status == "FAILED" and r.data.tags["trial_state"] == "FAIL"
            assert r.data.tags["failure_message"]
        else:
            assert r.info.status == "FINISHED" and r.data.tags["trial_state"] == "COMPLETE"
            assert r.data.metrics["objective"] > 0
    assert sorted(c for c in causes.values() if c) == sorted(BAD.values())
    assert list(causes.values()).count(None) == 1


def test_sweep_timeout_log_has_a_stack_dump(swept):
    home, report = swept
    (number,) = [f["trial"] for f in report["failures"] if f["cause"] == "timeout"]
    text = (home / "logs" / f"{STUDY}-trial-{number}.log").read_text()
    assert "most recent call first" in text and "faulty.py" in text and "in forward" in text
