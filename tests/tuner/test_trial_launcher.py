"""A launched command as a trial (tuner/trial/launcher.py): real scripts in subprocesses, their
reports relayed to a fake pruner, each way a script can end classified."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from perftune.backends import TrialRequest
from perftune.errors import NothingMeasured, TrialError
from perftune.executor import _perftune_path
from perftune.trial.launcher import run_command

PREAMBLE = """
import sys, time
import perftune
"""

REPORTING = """
trial = perftune.Trial.connect()
assert trial.config["batch_size"] == int(sys.argv[2]), (trial.config, sys.argv)
acc = 0.0
while not trial.should_stop():
    time.sleep(0.002)
    trial.step(samples=int(sys.argv[2]), loss=1.0)
    if trial.eval_due():
        acc += 0.2
        trial.evaluate(lambda: acc)
print("script done")
"""


class Pruner:
    def __init__(self, prune_at=None) -> None:
        self.reports = []
        self.prune_at = prune_at

    def report(self, step, value):
        self.reports.append((step, value))
        return self.prune_at is not None and step >= self.prune_at


@pytest.fixture
def launch(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", _perftune_path())

    def run(source: str, *, pruner=None, measure="converge", config=None):
        script = tmp_path / "script.py"
        script.write_text(PREAMBLE + textwrap.dedent(source))
        request = TrialRequest(
            workload="-", framework="torch", device="cpu", measure=measure,
            config=config or {"batch_size": 8, "learning_rate": 0.01, "num_threads": 1},
            command=[sys.executable, str(script), "--bs", "{batch_size}"],
            description={"name": "script", "target": 0.9, "mode": "max", "budget_s": 30,
                         "eval_interval_s": 0.02},
            log_path=str(tmp_path / "trial.log"), warmup_s=0.05, window_s=0.05, repeats=3,
        )  # fmt: skip
        return run_command(request, pruner or Pruner())

    return run


def log_text(tmp_path) -> str:
    return (tmp_path / "trial.log").read_text()


def test_a_script_reports_and_reaches_the_target(launch, tmp_path):
    pruner = Pruner()
    out = launch(REPORTING, pruner=pruner)
    metrics = out["metrics"]
    assert metrics["reached_target"] and metrics["evals"] == 5 and metrics["final_metric"] >= 0.9
    assert metrics["samples"] == 8 * metrics["steps"] and metrics["setup_s"] >= 0
    assert [round(v, 1) for _, v in pruner.reports] == [0.7, 0.5, 0.3, 0.1]  # gaps to 0.9
    assert "batch_size" in out["knobs_read"] and "num_threads" in out["knobs_read"]
    assert "script done" in log_text(tmp_path)  # its output goes to the trial log


def test_the_pruner_stops_a_script(launch):
    out = launch(REPORTING, pruner=Pruner(prune_at=2))
    assert out["pruned"] and out["metrics"]["evals"] == 2 and not out["metrics"]["reached_target"]


def test_a_script_measures_throughput(launch):
    out = launch(REPORTING, measure="throughput")
    assert out["metrics"]["windows"] == 3 and out["metrics"]["throughput_sps"] > 0


def test_a_loop_that_never_asks_is_ended_cleanly(launch):
    out = launch("""
        trial = perftune.Trial.connect()
        for i in range(100000):
            time.sleep(0.002)
            trial.step(samples=1)
            if trial.eval_due():
                trial.report(0.95)
        raise AssertionError("never stopped")
    """)
    assert out["metrics"]["reached_target"] and out["metrics"]["stopped_by"] == "target"


def test_a_script_that_never_connects_is_a_workload_error(launch):
    with pytest.raises(NothingMeasured, match=r"exited 0 without reporting to perftune: call perftune.Trial.connect\(\)"):
        launch("print('training, but not telling anyone')\n")


def test_a_script_that_connects_but_never_steps(launch):
    with pytest.raises(NothingMeasured, match="without calling trial.step"):
        launch("perftune.Trial.connect()\n")


def test_a_crash_is_a_crash_with_its_error(launch):
    with pytest.raises(TrialError, match="RuntimeError: boom") as info:
        launch("""
            trial = perftune.Trial.connect()
            trial.step(samples=1)
            raise RuntimeError("boom")
        """)
    assert info.value.cause == "crash"


def test_out_of_memory_is_read_from_the_log(launch):
    with pytest.raises(TrialError) as info:
        launch("import sys\nprint('RuntimeError: CUDA out of memory. Tried to allocate 2 GiB', file=sys.stderr)\nsys.exit(1)\n")
    assert info.value.cause == "oom" and "status 1" in str(info.value)


def test_a_diverged_metric_is_diverged(launch):
    with pytest.raises(TrialError) as info:
        launch("""
            trial = perftune.Trial.connect()
            while True:
                time.sleep(0.002)
                trial.step(samples=1)
                if trial.eval_due():
                    trial.report(float("nan"))
        """)
    assert info.value.cause == "diverged"


def test_outside_perftune_the_script_runs_as_it_is(tmp_path):
    script = tmp_path / "alone.py"
    script.write_text(PREAMBLE + textwrap.dedent("""
        trial = perftune.Trial.connect()
        print(trial.measure, trial.source, trial.config["batch_size"], trial.config["optimizer"])
        for _ in range(200):  # 0.4 s at least: evaluations come due every 0.25 s
            time.sleep(0.002)
            trial.step(samples=4)
            if trial.eval_due():
                trial.report(0.99)
        assert not trial.should_stop()
        print("evals", trial.result()["metrics"]["evals"])
    """))
    env = {k: v for k, v in os.environ.items() if k != "PERFTUNE_TRIAL"}
    env["PYTHONPATH"] = _perftune_path()
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "free defaults 32 adam"  # the framework's defaults, nothing stops it
    assert lines[1].startswith("evals ") and int(lines[1].split()[1]) >= 1


def test_the_batch_size_probe_launches_the_script_per_size(launch):
    """Each size a short launch (a few steps); out of memory (as the script's log says it)
    means "does not fit": here batches over 48 do not."""
    pruner = Pruner()
    out = launch("""
        trial = perftune.Trial.connect()
        if trial.config["batch_size"] > 48:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        while True:
            trial.step(samples=trial.config["batch_size"])
    """, pruner=pruner, measure="probe", config={"batch_size": 16, "probe_max": 256, "probe_margin": 0.0})
    m = out["metrics"]
    assert m["largest_fit"] == 48 and m["limited_by"] == "memory" and 48 < m["first_oom"] <= 64
    assert (32, 1.0) in pruner.reports and (64, 0.0) in pruner.reports
