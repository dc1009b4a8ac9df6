"""The MindSpore backend: capabilities and search spaces, config validation, discovery at its
boundary, the msrun result handling, OOM classification (here, without MindSpore), and real
trials in the MindSpore virtualenv's fork server (skipped when that interpreter is missing)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from perftune.backends import MindSporeBackend, TrialRequest, classify_exception
from perftune.backends import _mindspore as msb
from perftune.errors import InvalidConfig, TrialError
from perftune.executor import ProcessExecutor, _perftune_path, python_for
from perftune.search_spaces import Capabilities, load_space

ROOT = Path(__file__).resolve().parents[2]
RES = {"cpu": {"cores": 2, "device_count": 1, "memory_gib": 23.0},
       "cuda": {"cores": 16, "device_count": 4, "memory_gib": 80.0},
       "npu": {"cores": 16, "device_count": 8, "memory_gib": 64.0}}  # fmt: skip


def has_module(python: str, module: str) -> bool:
    """Whether ``python`` can find ``module`` (found, not imported: the framework's import costs
    seconds, at every collection of this module; tests/conftest.py's helper, which ``from conftest
    import`` may not find from here)."""
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0


def _ms_python() -> str | None:
    py = python_for("mindspore")
    return py if has_module(py, "mindspore") else None


MS_PY = _ms_python()
needs_ms = pytest.mark.skipif(MS_PY is None, reason="no interpreter with mindspore installed")


def caps(kind: str) -> Capabilities:
    c = MindSporeBackend.capabilities(kind)
    return Capabilities(params=frozenset(c["params"]), framework="mindspore",
                        choices={k: frozenset(v) for k, v in c["choices"].items()})  # fmt: skip


# ---------------------------------------------------------------- capabilities and spaces
@pytest.mark.parametrize("kind", ["cpu", "cuda", "npu"])
def test_builtin_space_loads_against_capabilities(kind):
    space = load_space("mindspore", kind, resources=RES[kind], supported=caps(kind))
    defaults = space.to_dict()["params"]
    assert {"exec_mode", "amp_level", "dataset_workers"} <= set(defaults)


def test_spaces_share_torch_common_params_and_defaults():
    torch_space = load_space("torch", "cpu", resources=RES["cpu"]).to_dict()["params"]
    ms_space = load_space("mindspore", "cpu", resources=RES["cpu"], supported=caps("cpu"))
    ms = ms_space.to_dict()["params"]
    common = ["batch_size", "learning_rate", "optimizer", "momentum", "beta1", "beta2",
              "weight_decay", "parallel_strategy", "world_size", "num_threads", "precision"]
    for name in common:
        assert name in ms, name
        assert ms[name]["default"] == torch_space[name]["default"], name
    assert ms["amp_level"]["otherwise"] == "O0" and ms["exec_mode"]["default"] == "pynative"


def test_cpu_capabilities_exclude_what_the_cpu_build_cannot_do():
    cpu, npu = MindSporeBackend.capabilities("cpu"), MindSporeBackend.capabilities("npu")
    assert cpu["choices"]["parallel_strategy"] == ["single", "data_parallel"]
    assert "bf16" not in cpu["choices"]["precision"] and "bf16" in npu["choices"]["precision"]
    assert "semi_auto_parallel" in npu["choices"]["parallel_strategy"]
    assert MindSporeBackend.device_classes == ("cpu", "cuda", "npu")


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("cfg, device, fragment", [
    ({"parallel_strategy": "data_parallel", "world_size": 1}, "cpu", "world_size >= 2"),
    ({"parallel_strategy": "data_parallel", "world_size": 3}, "cpu", "exceeds the 2"),
    ({"parallel_strategy": "single", "world_size": 2}, "cpu", "runs one process"),
    ({"parallel_strategy": "semi_auto_parallel", "world_size": 2}, "cpu", "GPU or Ascend"),
    ({"parallel_strategy": "auto_parallel", "world_size": 2}, "cpu", "GPU or Ascend"),
    ({"parallel_strategy": "auto_parallel", "world_size": 2}, "npu:0", "exec_mode graph"),
    ({"parallel_strategy": "ddp", "world_size": 2}, "cpu", "not one of"),
    ({"precision": "bf16", "amp_level": "O2"}, "cpu", "not supported by MindSpore on cpu"),
    ({"precision": "fp32", "amp_level": "O2"}, "cpu", "needs precision fp16"),
    ({"precision": "fp16", "amp_level": "O0"}, "cpu", "needs amp_level"),
    ({"amp_level": "O4", "precision": "fp16"}, "cpu", "not one of"),
    ({"exec_mode": "eager"}, "cpu", "exec_mode"),
    ({"optimizer": "lamb"}, "cpu", "not supported"),
    ({"dataset_workers": 3}, "cpu", "dataset_workers"),
    ({}, "tpu", "not supported by MindSpore"),
])  # fmt: skip
def test_invalid_configs_are_rejected(cfg, device, fragment):
    with pytest.raises(InvalidConfig, match=fragment.replace("(", r"\(")):
        msb.validate_config(cfg, device, cores=2)


@pytest.mark.parametrize("cfg, device", [
    ({}, "cpu"),
    ({"parallel_strategy": "data_parallel", "world_size": 2, "exec_mode": "graph"}, "cpu"),
    ({"precision": "fp16", "amp_level": "O3", "dataset_workers": 2}, "cpu"),
    ({"precision": "fp16"}, "cpu"),  # amp_level defaults to O2
    ({"parallel_strategy": "semi_auto_parallel", "world_size": 8, "exec_mode": "graph"}, "npu:0"),
    ({"precision": "bf16", "amp_level": "O1"}, "npu"),
])  # fmt: skip
def test_valid_configs_pass(cfg, device):
    assert msb.validate_config(cfg, device, cores=2) is None  # accepted: no InvalidConfig


def test_amp_level_default_follows_precision():
    assert msb.amp_level({}) == "O0"
    assert msb.amp_level({"precision": "fp16"}) == "O2"
    assert msb.amp_level({"precision": "fp16", "amp_level": "O1"}) == "O1"


# ---------------------------------------------------------------- discovery boundary
def _fake_mindspore(monkeypatch, *, count: int, props=None, capability=(8, 0)):
    hal = types.SimpleNamespace(
        device_count=lambda target: count,
        get_device_properties=lambda i, target: props,
        get_device_capability=lambda i, target: capability,
    )  # fmt: skip
    monkeypatch.setitem(sys.modules, "mindspore", types.SimpleNamespace(hal=hal))


def test_gpu_discovery_from_the_hal(monkeypatch):
    props = types.SimpleNamespace(name="NVIDIA H100", total_memory=80 * 2**30)
    _fake_mindspore(monkeypatch, count=4, props=props)
    monkeypatch.setattr(msb, "_supports", lambda target: target == "GPU")
    dev = msb._accelerator("cuda", {"mindspore": "x"})
    assert dev["kind"] == "cuda" and dev["count"] == 4 and dev["name"] == "NVIDIA H100"
    assert dev["memory_bytes"] == 80 * 2**30 and dev["compute_capability"] == "8.0"
    assert msb._accelerator("npu", {}) is None  # this build has no Ascend plugin


def test_ascend_discovery_and_no_device(monkeypatch):
    _fake_mindspore(monkeypatch, count=8, props=None)  # properties unknown before init
    monkeypatch.setattr(msb, "_supports", lambda target: True)
    dev = msb._accelerator("npu", {})
    assert dev["kind"] == "npu" and dev["count"] == 8 and dev["name"] == "Ascend"
    assert dev["bf16"] is True
    _fake_mindspore(monkeypatch, count=0)
    assert msb._accelerator("npu", {}) is None


# ---------------------------------------------------------------- msrun result handling
def _fake_msrun(monkeypatch, tmp_path, *, rc: int, payload=None, log: str = ""):
    def run(cmd, **kw):
        log_dir = cmd[cmd.index("--log_dir") + 1]
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        Path(log_dir, "worker_1.log").write_text(log)
        assert cmd[cmd.index("--worker_num") + 1] == "2"
        assert kw["env"]["PATH"].startswith(str(Path(sys.executable).parent))
        if payload is not None:
            Path(cmd[-1]).write_text(json.dumps(payload))
        return subprocess.CompletedProcess(cmd, rc, stdout=b"")

    monkeypatch.setattr(msb.subprocess, "run", run)
    cfg = {"parallel_strategy": "data_parallel", "world_size": 2}
    return TrialRequest(workload="mlp-digits", framework="mindspore", device="cpu", config=cfg,
                        log_path=str(tmp_path / "trial.log"))  # fmt: skip


def test_msrun_shutdown_error_is_benign_only_with_a_result(monkeypatch, tmp_path, capsys):
    result = {"metrics": {"throughput_sps": 5.0}, "curves": {}, "pruned": False}
    req = _fake_msrun(monkeypatch, tmp_path, rc=1, payload=result)
    assert msb._run_msrun(req) == result
    assert "BENIGN msrun shutdown error" in capsys.readouterr().err
    req = _fake_msrun(monkeypatch, tmp_path, rc=1, payload=None,
                      log="RuntimeError: Allocate memory failed\n")  # fmt: skip
    with pytest.raises(RuntimeError, match="no result") as info:
        msb._run_msrun(req)
    assert classify_exception(info.value) == "oom"


def test_msrun_rank_error_keeps_its_cause(monkeypatch, tmp_path):
    err = {"error": {"cause": "diverged", "message": "Diverged: loss became nan"}}
    req = _fake_msrun(monkeypatch, tmp_path, rc=1, payload=err)
    with pytest.raises(TrialError, match="nan") as info:
        msb._run_msrun(req)
    assert classify_exception(info.value) == "diverged"


@pytest.mark.parametrize("text", [
    "RuntimeError: Allocate memory failed",
    "RuntimeError: Memory not enough: Device(id:0) memory isn't enough and alloc failed",
    "RuntimeError: Allocate device memory failed!",
])  # fmt: skip
def test_mindspore_oom_messages_are_oom(text):
    assert classify_exception(RuntimeError(text)) == "oom"


# ---------------------------------------------------------------- in the MindSpore venv
@pytest.mark.mindspore
@needs_ms
def test_make_ms_optimizer_builds_each_optimizer():
    code = """
import json
from mindspore import nn
from perftune.backends._mindspore import make_ms_optimizer
out = {}
for name in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
    opt = make_ms_optimizer(nn.Dense(4, 2).trainable_params(),
                            {"optimizer": name, "learning_rate": 0.01, "momentum": 0.5,
                             "beta1": 0.8, "weight_decay": 0.001})
    out[name] = [type(opt).__name__, round(float(opt.learning_rate.asnumpy()), 6)]
    if name == "adam":
        out["beta1"] = round(float(opt.beta1.asnumpy()), 6)
    if name == "sgd":
        out["momentum"] = round(float(opt.momentum.asnumpy()), 6)
print(json.dumps(out))
"""
    proc = subprocess.run([MS_PY, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={"PYTHONPATH": _perftune_path(), "GLOG_v": "3"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert {k: v[0] for k, v in out.items() if isinstance(v, list)} == {
        "sgd": "Momentum", "adam": "Adam", "adamw": "AdamWeightDecay", "rmsprop": "RMSProp",
        "adagrad": "Adagrad"}  # fmt: skip
    assert all(v[1] == pytest.approx(0.01) for v in out.values() if isinstance(v, list))
    assert out["beta1"] == pytest.approx(0.8) and out["momentum"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def worker():
    with ProcessExecutor("mindspore") as ex:
        yield ex


def req(config: dict, tmp_path: Path, **kw) -> TrialRequest:
    args = {"workload": "mlp-digits", "framework": "mindspore", "device": "cpu",
            "timeout_s": 180.0, "log_path": str(tmp_path / "trial.log"),
            "warmup_s": 0.2, "window_s": 0.3, "repeats": 2}  # fmt: skip
    return TrialRequest(config=config, **{**args, **kw})


@needs_ms
@pytest.mark.mindspore
def test_devices_report_the_cpu(worker):
    found = worker.devices()
    assert found[0]["kind"] == "cpu" and found[0]["cores"] >= 1
    assert found[0]["versions"]["mindspore"].startswith("2.")
    assert worker.info["versions"]["mindspore"] == found[0]["versions"]["mindspore"]


@needs_ms
@pytest.mark.mindspore
def test_converge_trial_in_graph_mode(worker, tmp_path):
    cfg = {"batch_size": 64, "learning_rate": 2e-3, "exec_mode": "graph", "num_threads": 2}
    out = worker.run(req(cfg, tmp_path, budget_s=3.0))
    assert out.status == "ok", (out.cause, out.message)
    m = out.metrics
    assert m["train_time_s"] >= 0.2 and m["steps"] > 0 and m["evals"] >= 1
    assert 0.0 <= m["final_metric"] <= 1.0 and m["target"] == pytest.approx(0.96)
    assert m["global_batch_size"] == 64 and m["world_size"] == 1 and m["peak_rss_mb"] > 0
    assert m["reached_target"] == (m["time_to_target_s"] is not None)
    curve = out.curves["val_metric"]
    assert len(curve) == m["evals"] and curve[-1][2] == pytest.approx(m["final_metric"])
    assert m["final_metric"] > 0.5  # it learns: chance is 0.1


@needs_ms
@pytest.mark.mindspore
@pytest.mark.parametrize("cfg", [
    {"batch_size": 32},  # the framework default: PyNative, fp32
    {"batch_size": 32, "precision": "fp16", "amp_level": "O2", "exec_mode": "graph",
     "optimizer": "sgd", "momentum": 0.9, "dataset_workers": 2},
])  # fmt: skip
def test_throughput_trials_in_a_row(worker, tmp_path, cfg):
    out = worker.run(req(cfg, tmp_path, measure="throughput"))
    assert out.status == "ok", (out.cause, out.message)
    m = out.metrics
    assert m["throughput_sps"] > 0 and m["windows"] == 2 and m["warmup_steps"] >= 3
    assert m["step_time_ms"] == pytest.approx(1000.0 * 32 / m["throughput_sps"])


@needs_ms
@pytest.mark.mindspore
def test_cnn_and_user_workload(worker, tmp_path):
    cnn = worker.run(req({"batch_size": 32, "exec_mode": "graph"}, tmp_path,
                         workload="cnn-digits", measure="throughput"))  # fmt: skip
    assert cnn.status == "ok", (cnn.cause, cnn.message)
    user = f"{ROOT}/examples/ms_workload.py:make_workload"
    assert worker.describe(user)["framework"] == "mindspore"
    out = worker.run(req({"batch_size": 128, "learning_rate": 3e-3, "exec_mode": "graph"},
                         tmp_path, workload=user, budget_s=2.0))  # fmt: skip
    assert out.status == "ok", (out.cause, out.message)
    assert out.metrics["evals"] >= 1 and out.metrics["final_metric"] > 0.0  # R^2 above the mean


@needs_ms
@pytest.mark.mindspore
def test_invalid_config_fails_before_training(worker, tmp_path):
    out = worker.run(req({"parallel_strategy": "semi_auto_parallel", "world_size": 2}, tmp_path))
    assert out.status == "failed" and out.cause == "invalid"
    assert "GPU or Ascend" in out.message and out.wall_s < 30


@needs_ms
@pytest.mark.mindspore
def test_divergence_is_classified(worker, tmp_path):
    cfg = {"batch_size": 32, "optimizer": "sgd", "learning_rate": 1e6, "momentum": 0.9,
           "exec_mode": "graph"}  # fmt: skip
    out = worker.run(req(cfg, tmp_path, budget_s=3.0))
    assert out.status == "failed" and out.cause == "diverged", (out.cause, out.message)


@needs_ms
@pytest.mark.mindspore
@pytest.mark.slow
def test_msrun_data_parallel_throughput(worker, tmp_path):
    cfg = {"batch_size": 32, "parallel_strategy": "data_parallel", "world_size": 2,
           "num_threads": 1, "exec_mode": "graph"}  # fmt: skip
    out = worker.run(req(cfg, tmp_path, measure="throughput", repeats=2))
    assert out.status == "ok", (out.cause, out.message, Path(out.log_path).read_text()[-3000:])
    m = out.metrics
    assert m["world_size"] == 2 and m["global_batch_size"] == 64 and m["throughput_sps"] > 0
    assert m["setup_s"] > 0 and m["peak_rss_mb"] > 0
    logs = Path(str(tmp_path / "trial.log") + ".msrun")
    assert (logs / "worker_0.log").is_file() and (logs / "worker_1.log").is_file()


@needs_ms
@pytest.mark.mindspore
@pytest.mark.parametrize("measure", ["converge", "throughput"])
def test_model_train_is_tuned_through_the_callback(worker, tmp_path, measure):
    """MindSpore's own ``Model.train`` loop (tests/tuner/workloads/ms_fit.py), measured through
    ``trial.mindspore_callback``: the user's loop is not rewritten."""
    spec = f"{ROOT}/tests/tuner/workloads/ms_fit.py:train"
    desc = worker.describe(spec)
    assert desc["name"] == "ms-fit-digits" and desc["kind"] == "function"
    cfg = {"batch_size": 32, "learning_rate": 1e-3, "optimizer": "adam", "num_threads": 2}
    out = worker.run(req(cfg, tmp_path, workload=spec, measure=measure, budget_s=20.0))
    assert out.status == "ok", (out.cause, out.message)
    m = out.metrics
    if measure == "converge":
        assert m["evals"] >= 1 and m["final_metric"] > 0.5 and m["samples"] == 32 * m["steps"]
        assert m["reached_target"] == (m["time_to_target_s"] is not None)
    else:
        assert m["windows"] == 2 and m["throughput_sps"] > 0
    assert {"batch_size", "learning_rate", "optimizer", "num_threads"} <= set(out.knobs_read)
