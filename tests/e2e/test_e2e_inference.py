"""End to end, inference: the CLI tunes how mlp-digits is served with PyTorch on the CPU (the
model trained once, then configs measured under a p99 latency target), stores the confirmed best
with its latency distribution and quality, and ``perftune best`` shows it; the same in
TensorFlow over every runtime and quantization. (The latency objective, a target no config
meets and a looser quality limit run through the same sweep on a fake server:
tests/tuner/test_sweep_inference.py.)"""

from __future__ import annotations

import json

import pytest
from conftest import has_module, run_cli, run_json

from perftune.executor import python_for

pytestmark = pytest.mark.slow

SLO = 200.0  # ms: met by every sane config even on a loaded machine (the test is of the flow)
#: torch.compile costs 10-30 s per trial on this CPU: held out of the search here (its code path
#: is tests/tuner/test_infer_torch.py's).
NO_COMPILE = "params:\n  compile: null\n"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("serve-ws")


def sweep(home, *args: str, rounds: int = 1, framework: str = "torch"):
    space = home / "no-compile.yaml"
    space.write_text(NO_COMPILE)
    return run_cli("sweep", "--task", "inference", "--workload", "mlp-digits", "--framework", framework,
                   "--seed", "0", "--confirm-top", "1", "--confirm-repeats", str(rounds),
                   "--confirm-max-repeats", str(rounds), "--home", str(home), "--json", *args,
                   *(["--space", str(space)] if framework == "torch" and "--space" not in args else []))  # fmt: skip


@pytest.fixture(scope="module")
def swept(home):
    proc = sweep(home, "--slo-p99-ms", str(SLO), "--trials", "3", rounds=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), (home / "models").glob("*.pt")


def test_the_model_is_trained_once_and_cached(swept, home):
    report, _ = swept
    assert report["inference"]["model_path"].startswith(str(home / "models"))
    assert len(list((home / "models").glob("mlp-digits-torch-*.pt"))) == 1


def test_report_of_a_throughput_at_slo_sweep(swept):
    report, _ = swept
    assert report["objective"] == "throughput-at-slo@p99<=200ms,drop<=0.01"
    assert report["unit"] == "samples/s" and report["direction"] == "maximize"
    base = report["baseline"]["config"]
    assert (base["batch_size"], base["precision"], base["quantization"]) == (1, "fp32", "none")
    assert base["replicas"] == 1 and base["num_threads"] >= 1
    assert sum(v for k, v in report["trials"].items() if k not in ("invalid",)) == 3
    best = report["best"]
    assert report["stored"] is True and best is not None
    m = best["metrics"]
    assert m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"]
    assert m["quality_reference"] >= 0.96  # the workload's target, reached by the fit
    assert m["quality_drop"] <= 0.01
    assert report["speedup"] is not None and report["cost"] is None  # no training hours to pay back
    assert report["inference"]["slo_p99_ms"] == SLO and "closest" not in report["inference"]


def test_best_shows_the_latency_distribution(swept, home):
    records = run_json("best", "--workload", "mlp-digits", "--objective", "throughput-at-slo", "--home", str(home))
    assert len(records) == 1
    rec = records[0]
    assert rec["objective"] == "throughput-at-slo@p99<=200ms,drop<=0.01"
    assert rec["metrics"]["p99_ms"] <= SLO and len(rec["metrics"]["repeats"]) == 2
    assert rec["config"]["batch_size"] >= 1 and "compile" not in rec["config"]
    text = run_cli("best", "--workload", "mlp-digits", "--home", str(home)).stdout
    assert "latency p50" in text and "quality" in text and "p99<=200ms" in text


#: Every TensorFlow runtime and quantization once: a grid over them, one sample per request.
TF_GRID = """params:
  batch_size: {type: categorical, choices: [1], default: 1}
  jit_compile: null
  replicas: null
  intra_op_threads: null
  inter_op_threads: null
"""


@pytest.mark.tensorflow
def test_tensorflow_serving_sweep(tmp_path):
    """The flow in TensorFlow's own interpreter: the Keras model trained once, then served by
    Keras and by TFLite unquantized, dynamic-range and float16 quantized (a grid: each once),
    the best stored with its latencies and every quality drop measured."""
    import optuna

    if not has_module(python_for("tensorflow"), "tensorflow"):
        pytest.skip("no interpreter with tensorflow")
    space = tmp_path / "grid.yaml"
    space.write_text(TF_GRID)
    proc = sweep(tmp_path, "--slo-p99-ms", str(SLO), "--trials", "4", "--sampler", "grid", "--space", str(space),
                 framework="tensorflow")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["framework"] == "tensorflow" and report["stored"] is True
    assert report["baseline"]["config"] == {"batch_size": 1, "runtime": "keras", "quantization": "none"}
    assert list((tmp_path / "models").glob("mlp-digits-tensorflow-*.weights.h5"))
    m = report["best"]["metrics"]
    assert m["p99_ms"] <= SLO and m["quality_reference"] >= 0.96 and m["quality_drop"] <= 0.01
    study = optuna.load_study(study_name=report["study_name"], storage=f"sqlite:///{tmp_path}/optuna.db")
    served = {(t.user_attrs["config"]["runtime"], t.user_attrs["config"]["quantization"]): t.user_attrs["metrics"]
              for t in study.trials}  # fmt: skip
    assert set(served) == {("keras", "none"), ("tflite", "none"), ("tflite", "dynamic_range"), ("tflite", "float16")}
    for (runtime, _), tm in served.items():
        assert 0 < tm["p50_ms"] <= tm["p99_ms"] <= tm["max_ms"] and tm["throughput_sps"] > 0
        assert tm["quality_drop"] == pytest.approx(tm["quality_reference"] - tm["quality"])
        assert ("model_bytes" in tm) is (runtime == "tflite")
