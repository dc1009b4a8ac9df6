"""The built-in inference spaces (search_spaces/inference/): defaults are the serving baseline,
bounds keep replicas x threads within the cores, and what the backend cannot run is refused."""

from __future__ import annotations

import pytest

from perftune.search_spaces import (
    Capabilities,
    SpaceError,
    builtin_space_path,
    builtin_spaces,
    load_space,
)

BASELINE = {"batch_size": 1, "quantization": "none", "precision": "fp32", "inference_mode": False,
            "channels_last": False, "compile": "none", "replicas": 1, "num_threads": 4}  # fmt: skip


def torch_caps(device: str = "cpu") -> Capabilities:
    from perftune.backends import TorchBackend

    caps = TorchBackend.inference_capabilities(device)
    return Capabilities(params=frozenset(caps["params"]),
                        choices={k: frozenset(v) for k, v in caps["choices"].items()}, framework="torch")  # fmt: skip


def test_inference_spaces_live_apart_from_training_ones():
    assert ("torch", "cpu") in builtin_spaces("inference")
    assert builtin_space_path("torch", "cpu", "inference").parent.name == "inference"
    assert builtin_space_path("torch", "cpu").parent.name != "inference"
    with pytest.raises(SpaceError, match="no built-in inference search space"):
        builtin_space_path("torch", "tpu", "inference")
    with pytest.raises(SpaceError, match="unknown task"):
        builtin_spaces("serving")


def test_defaults_are_the_serving_baseline():
    space = load_space("torch", "cpu", resources={"cores": 4}, supported=torch_caps(), task="inference")
    assert space.defaults() == BASELINE
    assert space.name == "torch/cpu/inference"
    assert "learning_rate" not in space.params  # nothing of training's


def test_replicas_times_threads_never_exceed_the_cores():
    space = load_space("torch", "cpu", resources={"cores": 4}, task="inference")
    assert space.bounds("num_threads", {**BASELINE, "replicas": 3}) == (1, 1)
    assert space.bounds("num_threads", {**BASELINE, "replicas": 2}) == (1, 2)
    assert space.violations({**BASELINE, "replicas": 2, "num_threads": 3})


def test_quantized_models_are_fp32_only():
    import optuna

    space = load_space("torch", "cpu", resources={"cores": 2}, task="inference")
    config = {**BASELINE, "num_threads": 2, "quantization": "dynamic_int8"}
    assert "precision" not in space.active_params(config)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        sampled = space.sample(study.ask())
        if sampled["quantization"] != "none":
            assert sampled["precision"] == "fp32"  # inactive: its otherwise value


def test_a_quantization_this_torch_lacks_is_refused_before_trials(tmp_path):
    import importlib.util

    if importlib.util.find_spec("torchao") is not None:
        pytest.skip("torchao is installed here: weight-only int8 is supported")
    override = tmp_path / "woq.yaml"
    override.write_text("params:\n  quantization: {type: categorical, choices: [none, weight_only_int8], default: none}\n")
    with pytest.raises(SpaceError, match="weight_only_int8"):
        load_space("torch", "cpu", resources={"cores": 2}, override=override, supported=torch_caps(),
                   task="inference")  # fmt: skip


def test_accelerators_offer_no_cpu_quantization():
    from perftune.backends import TorchBackend

    assert TorchBackend.inference_capabilities("cuda")["choices"]["quantization"] == ["none"]
    assert "fp16" in TorchBackend.inference_capabilities("cuda")["choices"]["precision"]
