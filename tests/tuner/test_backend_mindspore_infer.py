"""MindSpore inference trials (perftune.backends._ms_infer): capabilities and the inference
space (here, without MindSpore), and real fit + serve trials in the MindSpore virtualenv's
fork server (skipped when that interpreter is missing)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from perftune.backends import MindSporeBackend, TrialRequest, _ms_infer
from perftune.errors import InvalidConfig
from perftune.executor import ProcessExecutor, python_for
from perftune.search_spaces import Capabilities, load_space

RES = {"cores": 2, "device_count": 1, "memory_gib": 23.0}


def _ms_python() -> str | None:
    py = python_for("mindspore")
    code = "import importlib.util, sys; sys.exit(importlib.util.find_spec('mindspore') is None)"
    return py if subprocess.run([py, "-c", code], capture_output=True, timeout=60).returncode == 0 else None


MS_PY = _ms_python()
needs_ms = pytest.mark.skipif(MS_PY is None, reason="no interpreter with mindspore installed")


def inference_caps(kind: str = "cpu") -> Capabilities:
    c = MindSporeBackend.inference_capabilities(kind)
    return Capabilities(params=frozenset(c["params"]), framework="mindspore",
                        choices={k: frozenset(v) for k, v in c["choices"].items()})  # fmt: skip


# ---------------------------------------------------------------- capabilities and the space
def test_inference_space_loads_with_the_baseline_as_defaults():
    space = load_space("mindspore", "cpu", resources=RES, task="inference", supported=inference_caps())
    assert space.defaults() == {"batch_size": 1, "precision": "fp32", "exec_mode": "pynative"}
    params = space.to_dict()["params"]
    assert params["precision"]["choices"] == ["fp32", "fp16"]


def test_capabilities_offer_only_what_the_cpu_backend_runs():
    caps = MindSporeBackend.inference_capabilities("cpu")
    assert set(caps["params"]) == {"batch_size", "precision", "exec_mode"}
    assert "bf16" not in caps["choices"]["precision"]  # no CPU MatMul kernel
    for absent in ("quantization", "replicas", "num_threads"):
        assert absent not in caps["params"]
    assert MindSporeBackend.inference_capabilities("cuda") is None
    assert MindSporeBackend.inference_capabilities("npu") is None
    assert {"infer", "fit"} <= set(MindSporeBackend.measures)


@pytest.mark.parametrize("cfg, device, fragment", [
    ({"precision": "bf16"}, "cpu", "precision 'bf16'"),
    ({"exec_mode": "eager"}, "cpu", "exec_mode"),
    ({"replicas": 2}, "cpu", "several threads"),
    ({}, "cuda:0", "CPU only"),
])  # fmt: skip
def test_invalid_inference_configs_are_rejected(cfg, device, fragment):
    with pytest.raises(InvalidConfig, match=fragment):
        _ms_infer.validate(cfg, device)


# ---------------------------------------------------------------- in the MindSpore venv
@pytest.fixture(scope="module")
def worker():
    with ProcessExecutor("mindspore") as ex:
        yield ex


def req(config: dict, tmp_path: Path, **kw) -> TrialRequest:
    args = {"workload": "mlp-digits", "framework": "mindspore", "device": "cpu",
            "timeout_s": 180.0, "log_path": str(tmp_path / "trial.log"),
            "warmup_s": 0.1, "window_s": 0.1, "repeats": 2}  # fmt: skip
    return TrialRequest(config=config, **{**args, **kw})


@pytest.fixture(scope="module")
def fitted(worker, tmp_path_factory):
    """The served checkpoint, trained once (graph mode and a larger step: seconds, not the
    framework default's tens of seconds)."""
    tmp = tmp_path_factory.mktemp("msfit")
    path = str(tmp / "mlp-digits-mindspore.ckpt")
    cfg = {"batch_size": 64, "learning_rate": 2e-3, "exec_mode": "graph"}
    out = worker.run(req(cfg, tmp, measure="fit", model_path=path, budget_s=30.0))
    assert out.status == "ok", (out.cause, out.message)
    assert out.metrics["fit_metric"] >= 0.96 and out.metrics["fit_time_s"] > 0
    assert Path(path).is_file() and not list(tmp.glob("*.tmp*"))
    return path


@needs_ms
@pytest.mark.mindspore
@pytest.mark.parametrize("cfg", [
    {"batch_size": 4, "precision": "fp32", "exec_mode": "graph"},
    {"batch_size": 32, "precision": "fp16", "exec_mode": "pynative"},
])  # fmt: skip
def test_fit_then_serve(worker, fitted, tmp_path, cfg):
    out = worker.run(req(cfg, tmp_path, measure="infer", model_path=fitted))
    assert out.status == "ok", (out.cause, out.message)
    m = out.metrics
    assert 0 < m["p50_ms"] <= m["p90_ms"] <= m["p99_ms"] <= m["max_ms"]
    assert m["throughput_sps"] > 0 and m["windows"] == 2 and m["requests"] > 0
    assert 0.0 <= m["quality"] <= 1.0 and m["quality_reference"] >= 0.96
    assert m["quality_drop"] == pytest.approx(m["quality_reference"] - m["quality"])
    assert abs(m["quality_drop"]) < 0.05  # fp16 or compiled, the same model
    assert m["batch_size"] == cfg["batch_size"] and m["peak_rss_mb"] > 0
    assert "energy_source" in m


@needs_ms
@pytest.mark.mindspore
def test_serving_without_weights_or_missing_target_is_a_usage_error(worker, tmp_path):
    out = worker.run(req({}, tmp_path, measure="infer", model_path=str(tmp_path / "none.ckpt")))
    assert out.status == "failed" and out.usage and "no trained weights" in out.message
    path = str(tmp_path / "short.ckpt")
    out = worker.run(req({"batch_size": 32}, tmp_path, measure="fit", model_path=path, budget_s=0.3))
    assert out.status == "failed" and out.usage and "did not reach its target" in out.message
    assert "\n" not in out.message and not Path(path).exists()
