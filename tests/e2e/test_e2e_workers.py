"""Many workers on one study, for real: PostgreSQL holds the Optuna study, the MLflow runs and
perftune's store (each in its own schema of ``test``); ``--workers N`` and ``perftune worker``
share the trials; a worker killed mid-trial has its trial failed after the grace period and
retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, pg_schemas, run_json

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NOOP = f"{ROOT / 'benchmarks' / 'noop_workload.py'}:make_workload"


@pytest.fixture
def pg(tmp_path):
    """Three fresh schemas (Optuna, MLflow, perftune) and the CLI flags naming them."""
    with pg_schemas("perftune_w") as urls:
        yield urls, ["--storage", urls["optuna"], "--tracking-uri", urls["mlflow"], "--db", urls["store"],
                     "--home", str(tmp_path / "ws")]  # fmt: skip


def _trials(url: str, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_workers_share_one_study(pg):
    import mlflow
    from optuna.trial import TrialState

    urls, flags = pg
    report = run_json("sweep", "--workload", NOOP, "--workers", "3", "--trials", "30", "--seed", "0",
                      "--confirm-top", "1", "--confirm-repeats", "1", *flags)  # fmt: skip
    trials = _trials(urls["optuna"], report["study_name"])
    # Exactly --trials count: configs the constraints rejected and trials given back by a worker
    # that asked at the same moment as another (surplus) do not.
    counted = [t for t in trials if t.user_attrs.get("cause") not in ("invalid", "surplus")]
    assert len(counted) == 30 and all(t.state == TrialState.COMPLETE for t in counted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) >= 2, workers  # the trials really were shared
    assert report["failures"] == [] and report["stored"] is True
    mlflow.set_tracking_uri(urls["mlflow"])
    runs = mlflow.search_runs(experiment_names=["noop"], output_format="list")
    nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == report["mlflow_run_id"]
              and r.data.tags.get("phase") == "search"]  # fmt: skip
    assert len(nested) == len(counted)  # every worker's trials under the one sweep run


def test_workers_share_both_stages_of_the_factored_search(pg):
    """``--search factored --workers 2``: both workers take stage 1's throughput trials, no
    stage-2 trial starts before the last stage-1 trial ended (in either worker), and every
    stage-2 trial runs on the systems config that stage 1's whole table picks for its batch size."""
    import optuna
    from optuna.trial import TrialState

    from perftune.sweep.factored import TRAINING, Throughputs

    urls, flags = pg
    report = run_json("sweep", "--workload", NOOP, "--workers", "2", "--trials", "20", "--seed", "0",
                      "--search", "factored", "--confirm-top", "1", "--confirm-repeats", "1", *flags)  # fmt: skip
    stages = report["search"]["stages"]
    assert report["search"]["search"] == "factored" and report["stored"] is True, report
    assert (stages["throughput"]["trials"], stages["convergence"]["trials"]) == (8, 12)
    fast = _trials(urls["optuna"], stages["throughput"]["study"])
    slow = _trials(urls["optuna"], report["study_name"])
    for trials, total in ((fast, 8), (slow, 12)):
        counted = [t for t in trials if t.user_attrs.get("cause") not in ("invalid", "surplus")]
        assert len(counted) == total and not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(bool(t.user_attrs.get("baseline")) for t in fast) == 1  # enqueued once, not per worker
    assert len({t.user_attrs["worker"] for t in fast}) == 2  # stage 1 was shared
    assert min(t.datetime_start for t in slow) >= max(t.datetime_complete for t in fast)
    systems = [k for k in fast[0].user_attrs["config"] if k not in TRAINING and k != "batch_size"]
    # the whole table, pruned throughput trials included (as every worker builds it)
    table = Throughputs.from_study(optuna.load_study(study_name=stages["throughput"]["study"],
                                                     storage=urls["optuna"]), systems)  # fmt: skip
    sampled = [t for t in slow if "lr_multiplier" in t.params]
    assert sampled
    for t in sampled:
        config = t.user_attrs["config"]
        assert {k: config[k] for k in systems} == table.systems_for(config["batch_size"])


def test_external_worker_joins_and_a_killed_worker_is_retried(pg, tmp_path):
    """``perftune worker --study`` joins a running sweep; SIGKILL it mid-trial: after the grace
    period its trial is failed (cause: lost) and retried, and the sweep still ends with its total."""
    from optuna.trial import TrialState

    urls, flags = pg
    env = {**os.environ, "PERFTUNE_NO_PROGRESS": "1"}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "perftune.cli", "sweep", "--workload", "mlp-digits", "--trials", "6",
         "--objective", "throughput", "--seed", "0", "--confirm-top", "1", "--confirm-repeats", "1",
         "--heartbeat", "1", "--grace-period", "3", "--json", *flags],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    study = "mlp-digits-torch-cpu-throughput"
    worker_flags = list(flags)  # the same databases, another workspace (as on another machine)
    worker_flags[worker_flags.index("--home") + 1] = str(tmp_path / "ws2")
    deadline = time.time() + 120
    worker = None
    while time.time() < deadline and worker is None:
        try:
            if any(t.state == TrialState.RUNNING for t in _trials(urls["optuna"], study)):
                worker = subprocess.Popen([sys.executable, "-m", "perftune.cli", "worker", "--study", study,
                                           "--quiet", *worker_flags], cwd=ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        except KeyError:
            pass
        time.sleep(0.3)
    assert worker is not None, "the sweep never started a trial"
    # Wait until the worker runs a trial of its own, then kill it without warning.
    deadline = time.time() + 120
    mine = []
    while time.time() < deadline and not mine:
        mine = [t for t in _trials(urls["optuna"], study) if t.state == TrialState.RUNNING
                and t.user_attrs.get("worker", "").endswith(f":{worker.pid}")]  # fmt: skip
        time.sleep(0.5)
        # still running half a second later: a trial, not a config the constraints reject at once
        mine = [t for t in mine if _trials(urls["optuna"], study)[t.number].state == TrialState.RUNNING]
    assert mine, "the external worker never took a trial"
    import psutil

    below = [c.pid for c in psutil.Process(worker.pid).children(recursive=True)]  # its fork server, trial
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                                         for p in below):  # fmt: skip
        time.sleep(0.2)
    assert below and not [p for p in below if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-3000:]
    import json

    report = json.loads(out)
    trials = _trials(urls["optuna"], study)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    killed = next(t for t in trials if t.number == mine[0].number)
    assert killed.state == TrialState.FAIL and "cause" not in killed.user_attrs
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state.is_finished() and retries[0].state != TrialState.FAIL
    assert retries[0].params == killed.params
    assert report["trials"]["lost"] == 1
    counted = [t for t in trials if t.state.is_finished() and t.number != killed.number
               and t.user_attrs.get("cause") not in ("invalid", "surplus")]  # fmt: skip
    assert len(counted) == 6 and report["best"] is not None
    assert Path(tmp_path / "ws2").exists()
