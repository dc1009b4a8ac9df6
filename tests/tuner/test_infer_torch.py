"""PyTorch inference trials on real torch, in this process: the model trained once (``fit``),
then served under each kind of config (``infer``). A small Workload keeps it to seconds."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from perftune import Workload  # noqa: E402
from perftune.backends import NullChannel, TorchBackend, TrialRequest  # noqa: E402
from perftune.errors import InvalidConfig, UsageError  # noqa: E402

RNG = np.random.default_rng(0)
X = RNG.normal(size=(1200, 16)).astype("float32")
Y = (X[:, :4].sum(1) > 0).astype("int64")
BASE = {"batch_size": 1, "quantization": "none", "precision": "fp32", "inference_mode": False,
        "channels_last": False, "compile": "none", "replicas": 1, "num_threads": 1}  # fmt: skip
TRAINING_DEFAULTS = {"batch_size": 32, "learning_rate": 3e-3, "optimizer": "adam",
                     "parallel_strategy": "single", "world_size": 1, "num_threads": 1}  # fmt: skip


def model():
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))


def workload(**kw) -> Workload:
    return Workload(name="tiny-serve", model=model, data=lambda: (X[:900], Y[:900], X[900:], Y[900:]),
                    target=0.85, budget_s=30, eval_interval_s=0.05, **kw)  # fmt: skip


def request(config: dict, measure: str, path) -> TrialRequest:
    return TrialRequest(workload="-", framework="torch", device="cpu", config=config, measure=measure,
                        model_path=str(path), warmup_s=0.05, window_s=0.05, repeats=2)  # fmt: skip


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("serve") / "tiny.pt"
    out = TorchBackend().run_trial(workload(), request(TRAINING_DEFAULTS, "fit", path), NullChannel())
    assert out["metrics"]["fit_metric"] >= 0.85
    return path


def infer(config: dict, weights) -> dict:
    return TorchBackend().run_trial(workload(), request({**BASE, **config}, "infer", weights),
                                    NullChannel())["metrics"]  # fmt: skip


def test_fit_saves_weights_that_load(weights):
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(model().state_dict())


@pytest.mark.parametrize("config", [{}, {"batch_size": 16, "replicas": 2}, {"quantization": "dynamic_int8"},
                                    {"precision": "bf16", "inference_mode": True}], ids=["baseline", "batched",
                                    "int8", "bf16"])  # fmt: skip
def test_a_served_config_reports_latency_throughput_and_quality(config, weights):
    m = infer(config, weights)
    assert 0 < m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"]
    assert m["throughput_sps"] > 0 and m["requests"] >= 200 and m["windows"] == 2
    assert m["batch_size"] == config.get("batch_size", 1)
    assert 0.85 <= m["quality_reference"] <= 1  # the trained model reached its target
    assert 0 <= m["quality"] <= 1
    assert m["quality_drop"] == pytest.approx(m["quality_reference"] - m["quality"])
    assert m["peak_rss_mb"] > 0 and "energy_source" in m


def test_fp32_serving_loses_no_quality(weights):
    assert infer({"batch_size": 8}, weights)["quality_drop"] == pytest.approx(0.0, abs=1e-9)


def test_quantization_with_low_precision_is_an_invalid_config(weights):
    with pytest.raises(InvalidConfig, match="fp32 only"):
        infer({"quantization": "dynamic_int8", "precision": "bf16"}, weights)


def test_a_batch_larger_than_the_validation_set_is_invalid(weights):
    with pytest.raises(InvalidConfig, match="larger than the validation set"):
        infer({"batch_size": 512}, weights)


def test_missing_or_foreign_weights_are_one_line(tmp_path, weights):
    with pytest.raises(UsageError, match="no trained weights"):
        TorchBackend().run_trial(workload(), request(BASE, "infer", tmp_path / "none.pt"), NullChannel())
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(UsageError, match="cannot load the weights"):
        TorchBackend().run_trial(workload(weights=str(other)), request(BASE, "infer", weights), NullChannel())


def test_a_training_function_cannot_be_served(weights):
    import perftune

    fn = perftune.trainable(lambda trial: None, name="f", target=0.5)
    with pytest.raises(UsageError, match="must be a perftune.Workload"):
        TorchBackend().run_trial(fn, request(BASE, "infer", weights), NullChannel())


@pytest.mark.parametrize("config", [{}, {"quantization": "dynamic_int8", "inference_mode": True},
                                    {"precision": "bf16", "num_threads": 1}], ids=["fp32", "int8", "bf16"])  # fmt: skip
def test_serving_applies_a_tuned_config_to_the_users_model(config, weights):
    """perftune.serving: the stored config on the user's own model, outside any trial."""
    import perftune

    trained = model()
    trained.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.as_tensor(X[900:])
    predict = perftune.serving(trained, {**BASE, **config})
    with torch.no_grad():
        want = trained(x).argmax(1)
    got = predict(x).float().argmax(1)
    assert (got == want).float().mean() >= 0.95  # quantized / bf16: the same answers, nearly
    if not config:
        assert torch.equal(predict(x), trained(x).detach())
    assert trained.training is False and next(trained.parameters()).dtype == torch.float32  # left as it was


def test_a_language_model_is_served_by_generating_tokens(tmp_path):
    """A small GPT (gpt-tiny's code, smaller): requests are prompts continued token by token;
    throughput counts generated tokens, latencies are per token, the request's p99 besides."""
    from perftune.workloads.torch_gpt import make_gpt_workload

    gpt = make_gpt_workload(d_model=32, n_layer=1, n_head=2, n_train=256, n_val=32, target=4.0,
                            budget_s=30, name="gpt-serve")  # fmt: skip
    path = tmp_path / "gpt.pt"
    TorchBackend().run_trial(gpt, request(TRAINING_DEFAULTS, "fit", path), NullChannel())
    m = TorchBackend().run_trial(gpt, request({**BASE, "batch_size": 4}, "infer", path), NullChannel())["metrics"]
    gen = gpt.extra["generate"]
    assert gen["prompt"] + gen["new_tokens"] == gpt.extra["seq_len"] and m["new_tokens"] == gen["new_tokens"]
    assert 0 < m["p50_ms"] <= m["p99_ms"] <= m["max_ms"]
    assert m["request_p99_ms"] > m["p50_ms"]  # a request is several decoding steps
    assert m["throughput_sps"] > 0 and m["quality_drop"] == pytest.approx(0.0, abs=1e-6)
