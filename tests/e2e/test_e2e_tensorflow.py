"""End to end with TensorFlow: the CLI runs a real (short) TensorFlow sweep on the CPU in the
framework's own interpreter, then the report, the Optuna study and ``perftune best`` are
checked."""

from __future__ import annotations

import subprocess

import pytest
from conftest import ROOT, has_module, run_json, warnings_besides_load

from perftune.executor import _perftune_path, python_for

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

STUDY = "mlp-digits-tensorflow-cpu-throughput"
COMMON = ("batch_size", "learning_rate", "optimizer", "parallel_strategy", "precision")
TF_KNOBS = ("jit_compile", "prefetch", "intra_op_threads", "inter_op_threads")


def _has_tensorflow() -> bool:
    return has_module(python_for("tensorflow"), "tensorflow")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    if not _has_tensorflow():
        pytest.skip("no interpreter with tensorflow")
    home = tmp_path_factory.mktemp("tf-ws")
    # Throughput: a fixed cost per trial (time to target in TensorFlow is the Keras test's).
    report = run_json("sweep", "--workload", "mlp-digits", "--framework", "tensorflow",
                      "--device", "cpu", "--objective", "throughput", "--trials", "2", "--seed", "0",
                      "--confirm-top", "1", "--confirm-repeats", "1", "--home", str(home))  # fmt: skip
    return home, report


def test_report(swept):
    _, report = swept
    assert report["study_name"] == STUDY
    assert report["framework"] == "tensorflow" and report["workload"] == "mlp-digits"
    assert report["device"]["kind"] == "cpu" and "tensorflow" in report["device"]["versions"]
    base = report["baseline"]
    assert base["config"]["batch_size"] == 32 and base["config"]["optimizer"] == "adam"
    assert base["config"]["learning_rate"] == pytest.approx(1e-3)
    assert base["config"]["parallel_strategy"] == "single" and base["config"]["precision"] == "fp32"
    assert base["config"]["jit_compile"] is False and base["config"]["prefetch"] == "autotune"
    assert report["best"] is not None and report["best"]["stats"]["median"] > 0
    assert report["stored"] is True and report["best_config_id"] is not None


def test_optuna_study(swept):
    import optuna

    home, report = swept
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{home}/optuna.db")
    finished = [t for t in study.trials if t.state.is_finished()
                and t.user_attrs.get("cause") != "invalid"]  # fmt: skip
    assert len(finished) == 2
    first = study.trials[0]
    assert first.user_attrs.get("baseline") is True
    assert first.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert set(COMMON) | set(TF_KNOBS) <= set(first.params)
    # no trial crashed: every sampled config either ran or was rejected up front as invalid
    causes = {t.user_attrs.get("cause") for t in study.trials}
    assert causes <= {None, "invalid"}, causes
    assert study.user_attrs["device"] == report["device"]["fingerprint"]


def test_best(swept, cli_here):
    home, report = swept
    found = run_json("best", "--workload", "mlp-digits", "--framework", "tensorflow",
                     "--device", "cpu", "--objective", "throughput", "--home", str(home))  # fmt: skip
    assert len(found) == 1
    rec = found[0]
    assert rec["config"] == report["best"]["config"]
    assert rec["value"] == pytest.approx(report["best"]["stats"]["median"])
    assert rec["device_fingerprint"] == report["device"]["fingerprint"]
    other = cli_here("best", "--workload", "mlp-digits", "--framework", "torch",
                     "--home", str(home))  # fmt: skip
    assert other.returncode == 1  # stored under tensorflow only


def test_a_keras_fit_script_is_tuned_and_run_with_its_best(tmp_path):
    """``model.fit`` with ``trial.keras_callback()`` (examples/keras_fit.py): the framework read
    from the decorator (no --framework), then the script's own ``__main__`` trains with the
    stored config through ``Trial.from_best`` under the TensorFlow interpreter."""
    import json
    import os

    if not _has_tensorflow():
        pytest.skip("no interpreter with tensorflow")
    home = tmp_path / "ws"
    report = run_json("sweep", "--workload", "examples/keras_fit.py:train", "--trials", "2",
                      "--seed", "0", "--budget", "30", "--confirm-top", "1", "--confirm-repeats", "1",
                      "--home", str(home))  # fmt: skip
    assert report["framework"] == "tensorflow" and report["workload"] == "keras-digits"
    assert report["best"] is not None and warnings_besides_load(report) == []
    env = {**os.environ, "PERFTUNE_HOME": str(home), "PYTHONPATH": _perftune_path()}
    code = ("import json, runpy, perftune; ns = runpy.run_path('examples/keras_fit.py'); "
            "t = perftune.Trial.from_best('keras-digits', framework='tensorflow', target=0.95); "
            "r = t.run(ns['train']); print(json.dumps([t.source, t.config.to_dict(), r['metrics']['reached_target']]))")  # fmt: skip
    proc = subprocess.run([python_for("tensorflow"), "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    source, config, reached = json.loads(proc.stdout.splitlines()[-1])
    assert source == "stored" and config == report["best"]["config"] and reached
