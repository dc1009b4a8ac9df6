"""The TensorFlow backend: capabilities and search spaces, config validation, device and TPU
discovery (faked only at the discovery boundary), the fork-server contract, and real (tiny)
trials through the trial worker, every strategy that can run on a CPU included."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perftune.backends import TensorFlowBackend, TrialOutcome, TrialRequest
from perftune.backends._tensorflow import tpu_plausible, validate_config
from perftune.errors import InvalidConfig
from perftune.executor import ProcessExecutor, _perftune_path, python_for
from perftune.search_spaces import Capabilities, load_space

ROOT = Path(__file__).resolve().parents[2]
TINY = {"warmup_s": 0.2, "window_s": 0.3, "repeats": 2}
COMMON = ("batch_size", "learning_rate", "optimizer", "momentum", "beta1", "beta2",
          "weight_decay", "parallel_strategy", "world_size", "precision")  # fmt: skip


def has_module(python: str, module: str) -> bool:
    """Whether ``python`` can find ``module`` (found, not imported: the framework's import costs
    seconds, at every collection of this module; tests/conftest.py's helper, which ``from conftest
    import`` may not find from here)."""
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0


def _tf_python() -> str | None:
    python = python_for("tensorflow")
    return python if has_module(python, "tensorflow") else None


TF_PYTHON = _tf_python()


def run_tf(code: str) -> dict:
    """Run ``code`` under the TensorFlow interpreter (perftune on its path); it prints one JSON
    object last."""
    env = {**os.environ, "PYTHONPATH": _perftune_path(), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([TF_PYTHON, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------- sweep side (no TensorFlow)
RESOURCES = {"cpu": {"cores": 2, "device_count": 1, "memory_gib": 16.0},
             "cuda": {"cores": 8, "device_count": 4, "memory_gib": 80.0},
             "tpu": {"cores": 8, "device_count": 8, "memory_gib": 16.0}}  # fmt: skip


def _space(device: str, resources=None):
    caps = TensorFlowBackend.capabilities(device)
    return load_space("tensorflow", device, resources=resources or RESOURCES[device],
                      supported=Capabilities(caps["params"], caps["choices"], "tensorflow"))  # fmt: skip


@pytest.mark.parametrize("device", ["cpu", "cuda", "tpu"])
def test_spaces_fit_capabilities_and_share_torch_defaults(device):
    space = _space(device)  # load_space rejects a parameter or choice the backend does not honour
    torch_cpu = load_space("torch", "cpu", resources=RESOURCES["cpu"]).defaults()
    defaults = space.defaults()
    for name in ("batch_size", "learning_rate", "optimizer", "beta1", "beta2", "precision"):
        assert defaults[name] == torch_cpu[name], name
    assert defaults["parallel_strategy"] == ("tpu" if device == "tpu" else "single")
    validate_config(defaults, device)  # the baseline is a valid config of the backend
    caps = TensorFlowBackend.capabilities(device)
    assert set(COMMON) - {"world_size"} <= set(caps["params"])
    assert ("jit_compile" in caps["params"]) is (device != "tpu")  # always XLA on a TPU
    assert "fp16" in caps["choices"]["precision"] if device == "cuda" else "fp16" not in \
        caps["choices"]["precision"]  # fmt: skip


def test_cpu_space_tunes_the_tf_knobs():
    space = _space("cpu")
    params = set(space.defaults())
    assert {"jit_compile", "prefetch", "intra_op_threads", "inter_op_threads"} <= params
    # 2 worker processes x 2 threads oversubscribe 2 cores; 2 x 1 does not
    bad = {**space.defaults(), "parallel_strategy": "multi_worker", "world_size": 2}
    assert space.violations(bad)
    assert not space.violations({**bad, "intra_op_threads": 1})


def test_one_gpu_drops_data_parallel_strategies():
    space = _space("cuda", {"cores": 8, "device_count": 1, "memory_gib": 80.0})
    assert space.to_dict()["params"]["parallel_strategy"]["choices"] == ["single"]


@pytest.mark.parametrize("config, device, words", [
    ({"parallel_strategy": "mirrored", "world_size": 1}, "cpu", "world_size >= 2"),
    ({"parallel_strategy": "multi_worker", "world_size": 1}, "cuda", "world_size >= 2"),
    ({"parallel_strategy": "multi_worker", "world_size": 512}, "cpu", "CPU cores"),
    ({"precision": "fp16"}, "cpu", "fp16"),
    ({"precision": "fp16"}, "tpu", "fp16"),
    ({"parallel_strategy": "tpu"}, "cpu", "needs a TPU"),
    ({"parallel_strategy": "single"}, "tpu", "must be tpu"),
    ({"parallel_strategy": "ddp", "world_size": 2}, "cpu", "ddp"),
    ({"optimizer": "lamb"}, "cpu", "lamb"),
    ({"prefetch": "lots"}, "cpu", "prefetch"),
    ({"intra_op_threads": 0}, "cpu", "intra_op_threads"),
    ({}, "npu", "npu"),
])  # fmt: skip
def test_invalid_configs_are_rejected_up_front(config, device, words):
    with pytest.raises(InvalidConfig, match=words):
        validate_config(config, device)


def test_valid_configs_pass():
    accepted = [
        ({"parallel_strategy": "mirrored", "world_size": 2, "precision": "bf16",
          "jit_compile": True, "prefetch": 4}, "cpu"),
        ({"parallel_strategy": "multi_worker", "world_size": 4, "precision": "fp16"}, "cuda:0"),
        ({"precision": "bf16"}, "tpu"),
    ]  # fmt: skip
    for config, device in accepted:
        assert validate_config(config, device) is None  # no InvalidConfig


def test_tpu_is_probed_only_when_plausible(monkeypatch):
    for var in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("glob.glob", lambda pattern: [])
    assert tpu_plausible() is False
    monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    assert tpu_plausible() is True
    monkeypatch.delenv("COLAB_TPU_ADDR")
    monkeypatch.setattr("glob.glob", lambda pattern: ["/dev/accel0"] if "accel" in pattern else [])
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "libtpu"
                        else None)  # fmt: skip
    assert tpu_plausible() is True
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    assert tpu_plausible() is False  # device files without libtpu: not a TPU TensorFlow can use


# ------------------------------------------------------------- inside the TensorFlow interpreter
needs_tf = pytest.mark.skipif(TF_PYTHON is None, reason="no interpreter with tensorflow")


@pytest.mark.tensorflow
@needs_tf
def test_in_tensorflow_interpreter():
    """One TensorFlow interpreter (its import costs seconds) checks, in order: the fork-server
    contract, workload parity with PyTorch, the optimizers, OOM classification, GPU and TPU
    discovery through fakes at the discovery boundary, the GPU guard, and the fp16 path."""
    out = run_tf("""
        import json, os, sys, time
        from perftune.backends import TrialRequest, NullChannel, classify_exception
        from perftune.backends import _tensorflow as B
        from perftune.workload import resolve, warm

        backend = B.TensorFlowBackend()
        versions = backend.preload()          # what the worker does before forking trials
        warm("mlp-digits", "tensorflow")
        import tensorflow as tf
        res = {"versions": versions,
               "runtime_started_in_parent": tf.executing_eagerly() and
                   tf.config.threading.get_intra_op_parallelism_threads() != 0}
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                          # a trial child: configure, list devices, train
            os.close(r)
            tf.config.threading.set_intra_op_parallelism_threads(1)   # must still be allowed
            kinds = [d["kind"] for d in backend.devices()]
            req = TrialRequest(workload="mlp-digits", framework="tensorflow", device="cpu",
                               config={"batch_size": 16}, measure="throughput",
                               warmup_s=0.1, window_s=0.1, repeats=1)
            m = backend.run_trial(resolve("mlp-digits", "tensorflow"), req, NullChannel())
            os.write(w, json.dumps({"kinds": kinds, "sps": m["metrics"]["throughput_sps"]}).encode())
            os._exit(0)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        res["child"] = json.loads(os.read(r, 65536) or b"null")
        res["child_status"] = status

        # workloads: the same architecture, data and target as PyTorch's
        mlp, cnn = resolve("mlp-digits", "tensorflow"), resolve("cnn-digits", "tensorflow")
        res["mlp"] = [mlp.model().count_params(), mlp.target, mlp.budget_s, mlp.eval_interval_s,
                      mlp.flops_per_sample, [list(a.shape) for a in mlp.data()]]
        cm = cnn.model()
        res["cnn"] = [cm.count_params(), list(cm.input_shape), str(cm.outputs[0].dtype), cnn.target,
                      cnn.budget_s, cnn.eval_interval_s, cnn.flops_per_sample,
                      [list(a.shape) for a in cnn.data()], getattr(cm, "compiled", False)]

        # optimizers, with PyTorch's constants
        opts = {}
        for name in ("sgd", "adam", "adamw", "rmsprop", "adagrad"):
            o = B.make_keras_optimizer({"optimizer": name, "learning_rate": 0.01,
                                        "momentum": 0.5, "beta1": 0.8, "beta2": 0.99,
                                        "weight_decay": 0.001})
            opts[name] = [type(o).__name__, float(o.learning_rate.numpy()),
                          {k: v for k, v in o.get_config().items() if k in
                           ("momentum", "beta_1", "beta_2", "weight_decay", "epsilon", "rho",
                            "initial_accumulator_value")}]
        res["opts"] = opts

        # OOM from the framework's own error
        res["oom"] = classify_exception(tf.errors.ResourceExhaustedError(
            None, None, "OOM when allocating tensor with shape[1048576,1048576]"))
        res["crash"] = classify_exception(tf.errors.InvalidArgumentError(None, None, "bad"))

        # GPU discovery (fake at the discovery boundary: what tf.config reports)
        real_list, real_details = tf.config.list_physical_devices, tf.config.experimental.get_device_details
        fake_gpu = tf.config.PhysicalDevice("/physical_device:GPU:0", "GPU")
        tf.config.list_physical_devices = lambda kind=None: [fake_gpu, fake_gpu] if kind == "GPU" else real_list(kind)
        tf.config.experimental.get_device_details = lambda d: {"device_name": "NVIDIA H100", "compute_capability": (9, 0)}
        res["gpu"] = [d for d in backend.devices() if d["kind"] == "cuda"]
        tf.config.list_physical_devices, tf.config.experimental.get_device_details = real_list, real_details

        # TPU discovery: a plausible TPU that cannot be reached is no TPU (and no hang) ...
        os.environ["TPU_NAME"] = "no-such-tpu-perftune-test"
        t = time.time()
        B._tpu_resolver = lambda: (_ for _ in ()).throw(ValueError("no TPU at that address"))
        res["tpu_unreachable"] = [B._find_tpu(), time.time() - t]
        # ... and one that answers is reported with its cores
        calls = []
        B._tpu_resolver = lambda: "resolver"
        tf.config.experimental_connect_to_cluster = lambda r: calls.append(("connect", r))
        tf.tpu.experimental.initialize_tpu_system = lambda r: calls.append(("init", r))
        real_logical = tf.config.list_logical_devices
        tf.config.list_logical_devices = lambda kind=None: ["TPU"] * 8 if kind == "TPU" else real_logical(kind)
        os.environ["TPU_ACCELERATOR_TYPE"] = "v4-8"
        res["tpu"] = B._find_tpu()
        res["tpu_calls"] = calls
        tf.config.list_logical_devices = real_logical

        print(json.dumps(res, default=str))
    """)
    assert out["runtime_started_in_parent"] is False
    assert out["child_status"] == 0 and out["child"]["kinds"][0] == "cpu"
    assert out["child"]["sps"] > 0
    assert {"tensorflow", "keras", "python"} <= set(out["versions"])

    torch_mlp = 1024 * 2048 + 2048 + 2048 * 2048 + 2048 + 2048 * 10 + 10
    c = 16
    torch_cnn = (
        (9 * c + c) + (9 * c * 2 * c + 2 * c) + (2 * c * 8 * 8 * 128 + 128) + (128 * 10 + 10)
    )
    assert out["mlp"][:4] == [torch_mlp, 0.96, 30.0, 0.2]
    assert out["mlp"][5] == [[1437, 1024], [1437], [360, 1024], [360]]
    assert out["cnn"][:6] == [torch_cnn, [None, 32, 32, 1], "float32", 0.98, 30.0, 0.2]
    assert out["cnn"][7] == [[1437, 32, 32, 1], [1437], [360, 32, 32, 1], [360]]
    assert out["cnn"][8] is False  # uncompiled
    from perftune.workloads.digits_data import cnn_flops, mlp_flops

    assert out["mlp"][4] == mlp_flops() and out["cnn"][6] == cnn_flops()

    opts = out["opts"]
    assert opts["sgd"][:2] == ["SGD", pytest.approx(0.01)] and opts["sgd"][2]["momentum"] == 0.5
    assert opts["adam"][0] == "Adam" and opts["adam"][2]["beta_1"] == pytest.approx(0.8)
    assert opts["adam"][2]["beta_2"] == pytest.approx(0.99)
    assert opts["adam"][2]["epsilon"] == pytest.approx(1e-8)
    assert opts["adamw"][0] == "AdamW" and opts["adamw"][2]["weight_decay"] == pytest.approx(1e-3)
    assert opts["rmsprop"][0] == "RMSprop" and opts["rmsprop"][2]["rho"] == pytest.approx(0.99)
    assert opts["rmsprop"][2]["momentum"] == 0.5
    assert opts["adagrad"][0] == "Adagrad" and opts["adagrad"][2]["initial_accumulator_value"] == 0

    assert out["oom"] == "oom" and out["crash"] == "crash"

    (gpu,) = out["gpu"]
    assert gpu["name"] == "NVIDIA H100" and gpu["count"] == 2
    assert gpu["compute_capability"] == "9.0" and gpu["bf16"] is True and "cuda" in gpu["versions"]

    assert out["tpu_unreachable"][0] is None and out["tpu_unreachable"][1] < 5
    assert out["tpu"]["kind"] == "tpu" and out["tpu"]["count"] == 8
    assert out["tpu"]["name"] == "TPU v4-8"
    assert out["tpu_calls"] == [["connect", "resolver"], ["init", "resolver"]]


@pytest.mark.tensorflow
@needs_tf
def test_strategies_and_fp16_path_in_tensorflow():
    """Strategy selection with TensorFlow's own objects, the GPU-count guard, and the fp16
    (LossScaleOptimizer) train step, which trials only allow on GPUs, exercised on the CPU."""
    out = run_tf("""
        import json
        import tensorflow as tf
        from perftune.backends import TrialRequest, NullChannel
        from perftune.backends import _tensorflow as B
        from perftune.errors import InvalidConfig
        from perftune.trial._run import run_rank
        from perftune.workload import resolve

        def kit(config, device="cpu"):
            req = TrialRequest(workload="mlp-digits", framework="tensorflow", device=device,
                               config=config, measure="throughput", warmup_s=0.1,
                               window_s=0.1, repeats=1)
            return req, B.KerasKit(config, req)

        res = {}
        s = kit({"parallel_strategy": "mirrored", "world_size": 2})[1].strategy
        res["mirrored"] = [type(s).__name__, s.num_replicas_in_sync,
                           sorted(s.extended.worker_devices)]
        try:
            kit({}, device="cuda:0")
            res["no_gpu"] = None
        except InvalidConfig as exc:
            res["no_gpu"] = str(exc)
        req, k = kit({"precision": "fp16", "batch_size": 8})
        wl = resolve("mlp-digits", "tensorflow")
        m = run_rank(B.builtin_loop(wl), k, req, NullChannel(), wl.describe())["metrics"]
        layer = k.keep[0].layers[0]
        res["fp16"] = [type(layer.compute_dtype).__name__, layer.compute_dtype,
                       m["throughput_sps"] > 0]
        print(json.dumps(res))
    """)
    assert out["mirrored"][:2] == ["MirroredStrategy", 2]
    assert [d.rsplit("/", 1)[-1] for d in out["mirrored"][2]] == ["device:CPU:0", "device:CPU:1"]
    assert "0 are visible" in out["no_gpu"]
    assert out["fp16"][1] == "float16" and out["fp16"][2] is True


# ----------------------------------------------------------------- real trials through the worker
@pytest.fixture(scope="module")
def worker():
    if TF_PYTHON is None:
        pytest.skip("no interpreter with tensorflow")
    with ProcessExecutor("tensorflow") as ex:
        yield ex


def req(tmp_path: Path, config: dict, workload: str = "mlp-digits", device: str = "cpu",
        **kw) -> TrialRequest:  # fmt: skip
    return TrialRequest(workload=workload, framework="tensorflow", device=device, config=config,
                        timeout_s=240.0, log_path=str(tmp_path / "trial.log"), **kw)  # fmt: skip


def check_throughput(out: TrialOutcome, world: int, global_bs: int) -> None:
    assert out.status == "ok", (out.cause, out.message)
    m = out.metrics
    windows = [w for _, w in out.curves["throughput_window"]]
    assert len(windows) == m["windows"] == TINY["repeats"] and all(w > 0 for w in windows)
    assert m["throughput_sps"] == pytest.approx(statistics.median(windows))
    assert m["step_time_ms"] == pytest.approx(1000.0 * global_bs / m["throughput_sps"])
    assert m["world_size"] == world and m["global_batch_size"] == global_bs
    assert m["peak_rss_mb"] > 0 and m["setup_s"] > 0


@pytest.mark.tensorflow
def test_worker_describes_and_discovers(worker):
    meta = worker.describe("cnn-digits")
    assert meta["framework"] == "tensorflow" and meta["target"] == 0.98
    devices = worker.devices()
    assert [d["kind"] for d in devices] == ["cpu"]  # no GPU, and no TPU probe here
    assert worker.info["framework"] == "tensorflow" and "tensorflow" in worker.info["versions"]


@pytest.mark.tensorflow
def test_default_config_converges(worker, tmp_path):
    reports = []
    out = worker.run(req(tmp_path, {}, budget_s=3),
                     lambda step, value: reports.append(value) or False)  # fmt: skip
    assert out.status == "ok", (out.cause, out.message)
    m = out.metrics
    assert m["evals"] >= 1 and m["steps"] > m["evals"] and m["train_time_s"] > 0
    assert m["global_batch_size"] == 32 and m["world_size"] == 1 and m["xla"] is False
    assert m["samples"] == 32 * m["steps"]  # full batches: repeat() before batch()
    assert 0.0 < m["final_metric"] <= 1.0
    curve = out.curves["val_metric"]
    assert len(curve) == m["evals"] and curve[-1][2] == m["final_metric"]
    if not m["reached_target"]:  # every evaluation short of the target went to the pruner
        assert len(reports) == m["evals"]


@pytest.mark.tensorflow
def test_xla_bf16_sgd_without_prefetch(worker, tmp_path):
    config = {"jit_compile": True, "precision": "bf16", "optimizer": "sgd", "momentum": 0.9,
              "prefetch": "none", "batch_size": 64, "intra_op_threads": 1,
              "inter_op_threads": 1}  # fmt: skip
    out = worker.run(req(tmp_path, config, measure="throughput", **TINY))
    check_throughput(out, world=1, global_bs=64)
    assert out.metrics["xla"] is True


@pytest.mark.tensorflow
def test_mirrored_over_logical_cpus(worker, tmp_path):
    config = {"parallel_strategy": "mirrored", "world_size": 2, "batch_size": 16,
              "jit_compile": True}  # fmt: skip
    out = worker.run(req(tmp_path, config, workload="cnn-digits", measure="throughput", **TINY))
    check_throughput(out, world=2, global_bs=32)


@pytest.mark.tensorflow
def test_multi_worker_throughput(worker, tmp_path):
    config = {"parallel_strategy": "multi_worker", "world_size": 2, "batch_size": 16,
              "intra_op_threads": 1}  # fmt: skip
    out = worker.run(req(tmp_path, config, workload="cnn-digits", measure="throughput", **TINY))
    check_throughput(out, world=2, global_bs=32)


@pytest.mark.tensorflow
def test_multi_worker_pruned_together(worker, tmp_path):
    # The chief's prune decision must stop both workers at the same step (else one of them
    # waits in a collective until the trial timeout).
    config = {"parallel_strategy": "multi_worker", "world_size": 2, "batch_size": 32,
              "intra_op_threads": 1}  # fmt: skip
    out = worker.run(req(tmp_path, config, workload="cnn-digits", budget_s=60),
                     lambda step, value: step >= 2)  # fmt: skip
    assert out.status == "pruned", (out.cause, out.message)
    assert out.metrics["evals"] == 2 and out.metrics["world_size"] == 2
    assert out.metrics["samples"] == 32 * 2 * out.metrics["steps"]
    assert out.wall_s < 120


@pytest.mark.tensorflow
def test_multi_worker_death_ends_the_trial(worker, tmp_path):
    spec = tmp_path / "dies.py"
    spec.write_text(
        textwrap.dedent("""
        import json, os
        from perftune.workloads.tf_digits import mlp_digits

        def make():
            wl = mlp_digits()
            build = wl.model

            def model():
                if json.loads(os.environ["TF_CONFIG"])["task"]["index"] == 1:
                    os._exit(7)  # worker 1 dies before its first collective
                return build()

            wl.model = model
            wl.name = "dies"
            return wl
    """)
    )
    config = {"parallel_strategy": "multi_worker", "world_size": 2, "intra_op_threads": 1}
    out = worker.run(req(tmp_path, config, workload=f"{spec}:make", budget_s=5))
    assert (out.status, out.cause) == ("failed", "crash")
    assert "multi_worker process" in out.message
    assert out.wall_s < 120


@pytest.mark.tensorflow
def test_invalid_config_fails_before_training(worker, tmp_path):
    out = worker.run(req(tmp_path, {"precision": "fp16"}))
    assert (out.status, out.cause) == ("failed", "invalid")
    assert "fp16" in out.message
    # Found only once the workers look for their GPUs: every worker rejects it, the chief says so.
    config = {"parallel_strategy": "multi_worker", "world_size": 2}
    out = worker.run(req(tmp_path, config, device="cuda"))
    assert (out.status, out.cause) == ("failed", "invalid"), out.message
    assert "visible" in out.message


@pytest.mark.tensorflow
@pytest.mark.parametrize("factory", ["make_workload", "make_pipeline_workload"])
def test_example_workload_both_input_forms(worker, tmp_path, factory):
    spec = f"{ROOT / 'examples' / 'tf_workload.py'}:{factory}"
    out = worker.run(req(tmp_path, {"batch_size": 64}, workload=spec, budget_s=1.0))
    assert out.status == "ok", (out.cause, out.message)
    m = out.metrics
    assert m["evals"] >= 1 and -10.0 < m["final_metric"] <= 1.0
    assert m["epochs"] >= 1 and m["samples"] == 64 * m["steps"]
    expected_epochs = (m["steps"] - 1) * 64 // 8192 + 1
    assert m["epochs"] == expected_epochs  # also known for the pipeline (finite cardinality)


def test_module_has_no_framework_import():
    code = "import perftune.backends._tensorflow, perftune.workloads.tf_digits, sys; " \
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
