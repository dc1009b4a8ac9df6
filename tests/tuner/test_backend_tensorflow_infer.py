"""TensorFlow inference: capabilities and the inference search space (no TensorFlow), config
validation, and real fit + serving trials of mlp-digits through the trial worker, one per
runtime/quantization."""

from __future__ import annotations

import subprocess

import optuna
import pytest
from optuna.samplers import RandomSampler

from perftune.backends import TensorFlowBackend, TrialRequest
from perftune.backends._tf_infer import validate_config
from perftune.errors import InvalidConfig
from perftune.executor import ProcessExecutor, python_for
from perftune.search_spaces import Capabilities, load_space

RESOURCES = {"cores": 2, "device_count": 1, "memory_gib": 16.0}
SERVE = {"warmup_s": 0.1, "window_s": 0.1, "repeats": 2}


def _has_tensorflow() -> bool:
    """Whether the TensorFlow trial interpreter finds tensorflow (found, not imported)."""
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is None)"
    try:
        return subprocess.run([python_for("tensorflow"), "-c", code], capture_output=True,
                              timeout=60).returncode == 0  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return False


def _space(resources=None):
    caps = TensorFlowBackend.inference_capabilities("cpu")
    return load_space("tensorflow", "cpu", resources=resources or RESOURCES, task="inference",
                      supported=Capabilities(caps["params"], caps["choices"], "tensorflow"))  # fmt: skip


# ----------------------------------------------------------------- sweep side (no TensorFlow)
def test_serves_on_the_cpu_only_and_handles_the_measures():
    assert TensorFlowBackend.inference_capabilities("cuda") is None
    assert TensorFlowBackend.inference_capabilities("tpu") is None
    assert {"infer", "fit", "converge", "throughput"} <= set(TensorFlowBackend.measures)


@pytest.mark.parametrize("cores", [2, 8])
def test_space_defaults_are_the_baseline(cores):
    # load_space rejects a parameter or choice the backend does not honour
    space = _space({**RESOURCES, "cores": cores})
    assert space.defaults() == {"batch_size": 1, "runtime": "keras", "quantization": "none",
                                "jit_compile": False, "replicas": 1, "intra_op_threads": cores,
                                "inter_op_threads": cores}  # fmt: skip
    validate_config(space.defaults())
    assert not space.violations(space.defaults())
    # replicas x intra-op threads never oversubscribe the cores
    assert space.violations({**space.defaults(), "replicas": 2, "intra_op_threads": cores})
    assert not space.violations({**space.defaults(), "replicas": 2, "intra_op_threads": cores // 2})


def test_tflite_knobs_are_not_proposed_for_the_keras_runtime():
    space = _space()
    study = optuna.create_study(sampler=RandomSampler(seed=0))
    seen = set()
    for _ in range(150):
        trial = study.ask()
        config = space.sample(trial)
        study.tell(trial, 0.0)
        validate_config(config)  # every proposal is a config the trial accepts
        seen.add((config["runtime"], config["quantization"], config["jit_compile"]))
        if config["runtime"] == "keras":
            assert config["quantization"] == "none" and "quantization" not in trial.params
        else:
            assert config["jit_compile"] is False and "jit_compile" not in trial.params
    assert {("tflite", "dynamic_range", False), ("tflite", "float16", False),
            ("keras", "none", True)} <= seen  # fmt: skip


@pytest.mark.parametrize("config, words", [
    ({"runtime": "onnx"}, "runtime"),
    ({"runtime": "keras", "quantization": "float16"}, "needs runtime tflite"),
    ({"runtime": "tflite", "jit_compile": True}, "keras only"),
    ({"quantization": "int4", "runtime": "tflite"}, "quantization"),
    ({"batch_size": 0}, "batch_size"),
    ({"replicas": True}, "replicas"),
])  # fmt: skip
def test_invalid_configs_are_rejected(config, words):
    with pytest.raises(InvalidConfig, match=words):
        validate_config(config)


# ----------------------------------------------------------------- real trials through the worker
@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A worker and the mlp-digits weights its fit request trained (once for the module)."""
    if not _has_tensorflow():
        pytest.skip("no interpreter with tensorflow")
    home = tmp_path_factory.mktemp("tfinfer")
    path = str(home / "mlp-digits.weights.h5")
    training = load_space("tensorflow", "cpu", resources=RESOURCES).defaults()
    with ProcessExecutor("tensorflow") as ex:
        out = ex.run(TrialRequest(workload="mlp-digits", framework="tensorflow", device="cpu",
                                  config=training, measure="fit", model_path=path, timeout_s=240.0,
                                  log_path=str(home / "fit.log")))  # fmt: skip
        assert out.status == "ok", (out.cause, out.message)
        assert out.metrics["fit_time_s"] > 0 and 0.96 <= out.metrics["fit_metric"] <= 1.0
        yield ex, path, home


@pytest.mark.tensorflow
@pytest.mark.parametrize("config", [
    {},  # the baseline: Keras, fp32, one sample per request
    {"runtime": "tflite", "batch_size": 8},
    {"runtime": "tflite", "quantization": "dynamic_range", "replicas": 2, "intra_op_threads": 1},
    {"runtime": "tflite", "quantization": "float16", "batch_size": 256},
], ids=["keras-fp32", "tflite-none", "tflite-dynamic-range", "tflite-float16"])  # fmt: skip
def test_infer_trial(served, config):
    ex, path, home = served
    out = ex.run(TrialRequest(workload="mlp-digits", framework="tensorflow", device="cpu",
                              config=config, measure="infer", model_path=path, timeout_s=240.0,
                              log_path=str(home / "infer.log"), **SERVE))  # fmt: skip
    assert out.status == "ok", (out.cause, out.message)
    m = out.metrics
    assert 0 < m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"]
    assert m["throughput_sps"] > 0 and m["windows"] == SERVE["repeats"] and m["requests"] > 0
    assert m["batch_size"] == config.get("batch_size", 1)
    assert 0.0 <= m["quality"] <= 1.0 and 0.9 <= m["quality_reference"] <= 1.0
    # accuracy (mode max): the drop is reference - quality
    assert m["quality_drop"] == pytest.approx(m["quality_reference"] - m["quality"])
    assert m["quality_drop"] < 0.05  # these quantizations barely move a digits MLP
    assert m["peak_rss_mb"] > 0 and "energy_source" in m
    assert ("model_bytes" in m) is (config.get("runtime") == "tflite")
