"""TensorFlow inference: capabilities and the inference search space (no TensorFlow), and config
validation. The real fit and serving trials, one per runtime/quantization, are the TensorFlow
sweep's in tests/e2e/test_e2e_inference.py."""

from __future__ import annotations

import optuna
import pytest
from optuna.samplers import RandomSampler

from perftune.backends import TensorFlowBackend
from perftune.backends._tf_infer import validate_config
from perftune.errors import InvalidConfig
from perftune.search_spaces import Capabilities, load_space

RESOURCES = {"cores": 2, "device_count": 1, "memory_gib": 16.0}


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


# Real fit and serving trials of every runtime and quantization: tests/e2e/test_e2e_inference.py's
# TensorFlow sweep walks them all (a grid), through the CLI.
