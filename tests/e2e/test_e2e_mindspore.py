"""End to end: the CLI runs a real MindSpore sweep on the CPU (trials in the MindSpore
virtualenv's fork server), then the report, the Optuna study and ``perftune best`` are checked.

The objective is throughput: every trial costs the same few seconds, where time to target in
PyNative (12-16 s for the default, up to the budget for a bad config) made this the suite's
slowest test and failed it on a loaded machine. Time to target through the MindSpore trainer is
tested in tests/tuner/test_backend_mindspore.py, and through the sweep loop by the PyTorch e2e
tests (the objective is framework-independent there)."""

from __future__ import annotations

import pytest
from conftest import has_module, run_json

from perftune.executor import python_for

pytestmark = [pytest.mark.slow, pytest.mark.mindspore]

STUDY = "mlp-digits-mindspore-cpu-throughput"


def _has_mindspore() -> bool:
    return has_module(python_for("mindspore"), "mindspore")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    if not _has_mindspore():
        pytest.skip("no interpreter with mindspore installed")
    home = tmp_path_factory.mktemp("ms")
    report = run_json("sweep", "--workload", "mlp-digits", "--framework", "mindspore",
                      "--device", "cpu", "--objective", "throughput", "--trials", "3", "--seed", "0",
                      "--confirm-top", "1", "--confirm-repeats", "1", "--home", str(home))  # fmt: skip
    return home, report


def test_report(swept):
    _, report = swept
    assert report["study_name"] == STUDY
    assert report["framework"] == "mindspore" and report["device"]["kind"] == "cpu"
    base = report["baseline"]["config"]
    assert base["batch_size"] == 32 and base["optimizer"] == "adam"
    assert base["learning_rate"] == pytest.approx(1e-3)
    assert base["parallel_strategy"] == "single" and base["exec_mode"] == "pynative"
    assert base["precision"] == "fp32" and base["amp_level"] == "O0"
    assert report["best"]["stats"]["median"] > 0 and report["stored"] is True
    assert report["direction"] == "maximize" and report["unit"] == "samples/s"


def test_optuna_study(swept):
    import optuna

    home, _ = swept
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home}/optuna.db")
    finished = [t for t in study.trials if t.state.is_finished()
                and t.user_attrs.get("cause") != "invalid"]  # fmt: skip
    assert len(finished) == 3
    first = study.trials[0]
    assert first.user_attrs.get("baseline") is True and first.params["exec_mode"] == "pynative"
    assert first.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in finished)
    assert study.user_attrs["workload"] == "mlp-digits"


def test_best_for_the_framework(swept):
    home, report = swept
    found = run_json("best", "--workload", "mlp-digits", "--framework", "mindspore",
                     "--objective", "throughput", "--home", str(home))  # fmt: skip
    assert len(found) == 1
    assert found[0]["config"] == report["best"]["config"]
    assert found[0]["value"] == pytest.approx(report["best"]["stats"]["median"])
