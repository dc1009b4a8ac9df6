"""TensorFlow / Keras 3 backend: runs in a trial worker, imports TensorFlow when used.

Every trial runs a training function on a :class:`~perftune.trial.Trial` whose framework part is
a :class:`KerasKit`: the user's (typically ``model.fit`` with ``trial.keras_callback()``), or,
for a :class:`~perftune.workload.Workload` (an uncompiled ``keras.Model`` returning logits or
regression outputs), perftune's own loop (:func:`builtin_loop`): a ``tf.function`` train step
(XLA-compiled when ``jit_compile``) run under a ``tf.distribute`` strategy, one optimizer step
per call, on the same public Trial API.

Strategies (``parallel_strategy``):

* ``single``: ``OneDeviceStrategy`` on the trial's device.
* ``mirrored``: ``MirroredStrategy`` over ``world_size`` GPUs, or over ``world_size`` logical
  CPU devices on the CPU (one process, replicas sharing the CPU's thread pools).
* ``multi_worker``: ``MultiWorkerMirroredStrategy`` over ``world_size`` local processes, forked
  inside the trial process and configured with ``TF_CONFIG`` on free localhost ports (ring
  all-reduce on the CPU, NCCL on GPUs with one GPU per worker); worker 0 is the chief and talks
  to the pruner.
* ``tpu``: ``TPUStrategy`` over every core of the TPU found by ``TPUClusterResolver``.

``batch_size`` is per replica; the global batch is ``batch_size * replicas``. Precision:
``fp32`` (strict: TF32 off on GPUs), ``tf32`` (GPUs), ``bf16`` (Keras ``mixed_bfloat16``),
``fp16`` (``mixed_float16`` with dynamic loss scaling, GPUs). ``intra_op_threads`` /
``inter_op_threads`` set ``tf.config.threading`` before the runtime starts in the trial.

Input: the training arrays become a ``tf.data`` pipeline, per input pipeline (worker):
``shard -> shuffle (reshuffled every epoch) -> repeat -> batch(per replica, drop_remainder) ->
prefetch(prefetch)``, distributed with ``distribute_datasets_from_function``; so every step
trains full batches and ``prefetch`` (``"none"``, ``"autotune"`` or a number of batches) is a
real knob. A workload may instead give, as ``x_train``, a zero-argument callable returning an
*unbatched* ``tf.data.Dataset`` of ``(features, target)`` pairs (with ``y_train`` None): it is
built inside the trial process (never in the worker that forks trials, whose TensorFlow runtime
must stay uninitialised) and perftune shards, repeats, batches and prefetches it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

from perftune.backends._base import Backend, Channel, TrialRequest
from perftune.backends._host import cpu_device, rss_peak_mb, usable_cores
from perftune.backends._ranks import KEEPALIVE, free_ports, run_ranks
from perftune.errors import InvalidConfig, UsageError
from perftune.trial._kit import Kit
from perftune.trial._run import as_function, drive, run_rank

_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
_COMMON = ("batch_size", "learning_rate", "optimizer", "momentum", "beta1", "beta2",
           "weight_decay", "parallel_strategy", "world_size", "precision")  # fmt: skip
_STRATEGIES = {
    "cpu": ["single", "mirrored", "multi_worker"],
    "cuda": ["single", "mirrored", "multi_worker"],
    "tpu": ["tpu"],
}
_PRECISIONS = {"cpu": ["fp32", "bf16"], "cuda": ["fp32", "tf32", "bf16", "fp16"],
               "tpu": ["fp32", "bf16"]}  # fmt: skip
_PREFETCH = ("none", "autotune")


class TensorFlowBackend(Backend):
    name = "tensorflow"
    module = "tensorflow"
    multi_process_strategies = ("multi_worker",)
    measures = ("converge", "throughput", "infer", "fit")

    @staticmethod
    def builtin_loop(workload: Any):
        return builtin_loop(workload)
    device_classes = ("cpu", "cuda", "tpu")

    @classmethod
    def capabilities(cls, device_class: str) -> dict[str, Any]:
        params = [*_COMMON, "prefetch"]
        choices: dict[str, list] = {
            "optimizer": list(_OPTIMIZERS),
            "parallel_strategy": list(_STRATEGIES.get(device_class, [])),
            "precision": list(_PRECISIONS.get(device_class, [])),
            "prefetch": [*_PREFETCH, 1, 2, 4, 8, 16],
        }
        if device_class == "tpu":  # always XLA-compiled; one replica per core, host threads moot
            params.remove("world_size")
        else:
            params += ["jit_compile", "intra_op_threads", "inter_op_threads"]
            choices["jit_compile"] = [False, True]
        return {"params": params, "choices": choices}

    @classmethod
    def inference_capabilities(cls, device_class: str) -> dict[str, Any] | None:
        from perftune.backends import _tf_infer

        return _tf_infer.capabilities(device_class)

    def preload(self) -> dict[str, str]:
        # Import only: no op is run and no device listed, so the runtime (thread pools, devices)
        # starts in each forked trial, which can then still configure threads and devices.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

        return self._versions()

    def _versions(self) -> dict[str, str]:
        import keras
        import tensorflow as tf

        return {"tensorflow": str(tf.__version__), "keras": str(keras.__version__),
                "python": platform.python_version()}  # fmt: skip

    def devices(self) -> list[dict[str, Any]]:
        import tensorflow as tf

        versions = self._versions()
        found = [cpu_device(versions, bf16=True)]
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            cc = details.get("compute_capability") or (0, 0)
            build = tf.sysconfig.get_build_info()
            found.append({
                "kind": "cuda",
                "name": details.get("device_name", "GPU"),
                "count": len(gpus),
                "memory_bytes": _nvidia_memory_bytes(),
                "compute_capability": f"{cc[0]}.{cc[1]}",
                "cores": usable_cores(),
                "versions": {**versions, "cuda": str(build.get("cuda_version", "")),
                             "cudnn": str(build.get("cudnn_version", ""))},
                "bf16": tuple(cc) >= (8, 0),
            })  # fmt: skip
        tpu = _find_tpu()
        if tpu is not None:
            found.append({**tpu, "cores": usable_cores(), "versions": versions, "bf16": True})
        return found

    # ------------------------------------------------------------------ trials
    def run_trial(self, workload: Any, request: TrialRequest, channel: Channel) -> dict[str, Any]:
        if request.measure in ("infer", "fit"):
            from perftune.backends import _tf_infer

            if request.measure == "fit":
                return _tf_infer.fit(self, workload, request, channel)
            return _tf_infer.run_inference(workload, request)
        validate_config(request.config, request.device)
        fn, description = as_function(workload, builtin_loop), workload.describe()
        if request.config.get("parallel_strategy") == "multi_worker":
            return _run_multi_worker(fn, request, channel, int(request.config.get("world_size", 2)),
                                     description)  # fmt: skip
        return run_rank(fn, KerasKit(request.config, request), request, channel, description)

    def standalone_kit(self, request: TrialRequest) -> KerasKit:
        validate_config(request.config, request.device)
        if request.config.get("parallel_strategy") == "multi_worker":
            raise UsageError("the config runs several multi_worker processes: run it with "
                             "trial.run(train) (perftune starts them)")  # fmt: skip
        return KerasKit(request.config, request)


def tpu_plausible() -> bool:
    """Whether a TPU may be attached (cheap checks only: probing for one without a TPU can block
    on network look-ups for minutes): a TPU address in the environment, or TPU device files
    with ``libtpu`` installed."""
    if any(os.environ.get(k) for k in ("TPU_NAME", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE")):
        return True
    files = glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")
    return bool(files) and importlib.util.find_spec("libtpu") is not None


def _tpu_resolver():
    import tensorflow as tf

    remote = os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")
    return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=None if remote else "local")


def _find_tpu() -> dict[str, Any] | None:
    """The TPU as a device record, or None (also when connecting to it fails)."""
    if not tpu_plausible():
        return None
    try:
        import tensorflow as tf

        resolver = _tpu_resolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        cores = tf.config.list_logical_devices("TPU")
    except Exception as exc:  # noqa: BLE001 - no usable TPU: say why in the log, carry on
        print(f"perftune: TPU probe failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None
    if not cores:
        return None
    kind = os.environ.get("TPU_ACCELERATOR_TYPE") or "TPU"
    return {"kind": "tpu", "name": f"TPU {kind}".replace("TPU TPU", "TPU"), "count": len(cores),
            "memory_bytes": None}  # fmt: skip


def _nvidia_memory_bytes() -> int | None:
    """Memory of the first GPU from ``nvidia-smi`` (TensorFlow reports it only after grabbing
    the GPU); None when unknown."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout  # fmt: skip
        return int(float(out.split()[0]) * 2**20)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def validate_config(cfg: dict[str, Any], device: str) -> None:
    """Reject what this backend cannot honour on ``device`` (raises :class:`InvalidConfig`)."""
    kind = device.split(":", 1)[0]
    if kind not in _STRATEGIES:
        raise InvalidConfig(f"device {device!r} is not supported by the tensorflow backend")
    strategy = cfg.get("parallel_strategy", "tpu" if kind == "tpu" else "single")
    world = int(cfg.get("world_size", 1))
    if strategy not in ("single", "mirrored", "multi_worker", "tpu"):
        raise InvalidConfig(f"parallel_strategy {strategy!r} is not supported by this backend")
    if strategy == "tpu" and kind != "tpu":
        raise InvalidConfig("parallel_strategy tpu needs a TPU (--device tpu)")
    if kind == "tpu" and strategy != "tpu":
        raise InvalidConfig(f"on a TPU the parallel_strategy must be tpu, not {strategy!r}")
    if strategy in ("mirrored", "multi_worker") and world < 2:
        raise InvalidConfig(f"{strategy} needs world_size >= 2")
    if strategy == "multi_worker" and kind == "cpu" and world > usable_cores():
        raise InvalidConfig(f"multi_worker with world_size {world} exceeds the "
                            f"{usable_cores()} usable CPU cores")  # fmt: skip
    if cfg.get("optimizer", "adam") not in _OPTIMIZERS:
        raise InvalidConfig(f"optimizer {cfg.get('optimizer')!r} is not supported")
    precision = cfg.get("precision", "fp32")
    if precision not in _PRECISIONS[kind]:
        raise InvalidConfig(f"precision {precision!r} is not supported on {kind}")
    if int(cfg.get("batch_size", 32)) < 1:
        raise InvalidConfig("batch_size must be >= 1")
    _prefetch_value(cfg.get("prefetch", "autotune"))
    if cfg.get("jit_compile", False) not in (False, True):
        raise InvalidConfig(f"jit_compile must be true or false, not {cfg.get('jit_compile')!r}")
    for key in ("intra_op_threads", "inter_op_threads"):
        if key in cfg and (not isinstance(cfg[key], int) or cfg[key] < 1):
            raise InvalidConfig(f"{key} must be a positive integer, not {cfg[key]!r}")


def _prefetch_value(value: Any) -> int | None:
    """``prefetch`` as ``tf.data`` wants it: None (no prefetch), -1 (AUTOTUNE) or a count."""
    if value in (None, "none", 0):
        return None
    if value == "autotune":
        return -1  # tf.data.AUTOTUNE
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise InvalidConfig(f"prefetch must be 'none', 'autotune' or a positive count, not {value!r}")


def _host_array(a, float32: bool = False):
    """``a`` as a NumPy array for ``tf.data``: float64 (NumPy's default) becomes float32, what
    Keras layers compute in; other dtypes (integer labels, token ids, images) are kept."""
    import numpy as np

    a = a.numpy() if hasattr(a, "numpy") else np.asarray(a)
    return a.astype(np.float32) if float32 or a.dtype == np.float64 else a


def make_keras_optimizer(config: dict[str, Any]):
    """The Keras optimizer a perftune config names (``optimizer``, ``learning_rate``,
    ``momentum``, ``beta1``/``beta2``, ``weight_decay``), exactly as trials build it: use it in
    a training script so that a tuned config means there what it meant in the sweep.

    The constants perftune does not tune (epsilons, RMSprop's decay, Adagrad's initial
    accumulator) are PyTorch's, so a config means the same update rule in every framework.
    ``precision: fp16`` is not applied here: wrap the result in
    ``keras.optimizers.LossScaleOptimizer`` as trials do."""
    import keras

    name, lr = config.get("optimizer", "adam"), float(config.get("learning_rate", 1e-3))
    b1, b2 = float(config.get("beta1", 0.9)), float(config.get("beta2", 0.999))
    momentum = float(config.get("momentum", 0.0))
    opt = keras.optimizers
    if name == "sgd":
        return opt.SGD(learning_rate=lr, momentum=momentum)
    if name == "adam":
        return opt.Adam(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=1e-8)
    if name == "adamw":
        return opt.AdamW(learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=1e-8,
                         weight_decay=float(config.get("weight_decay", 1e-2)))  # fmt: skip
    if name == "rmsprop":
        return opt.RMSprop(learning_rate=lr, rho=0.99, momentum=momentum, epsilon=1e-8)
    if name == "adagrad":
        return opt.Adagrad(learning_rate=lr, initial_accumulator_value=0.0, epsilon=1e-10)
    raise InvalidConfig(f"optimizer {name!r} is not supported")


# ---------------------------------------------------------------------- multi-worker
def _run_multi_worker(fn, request: TrialRequest, channel: Channel, world: int,
                      description: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``world`` workers (see :func:`~perftune.backends._ranks.run_ranks`), each with its
    ``TF_CONFIG``, set before any of them starts the TensorFlow runtime; worker 0 is the chief."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in free_ports(world)]}

    def worker(rank: int, ch: Channel | None) -> dict[str, Any]:
        os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster,
                                              "task": {"type": "worker", "index": rank}})
        kit = KerasKit(request.config, request, rank=rank, world=world)
        KEEPALIVE.append(kit)
        return run_rank(fn, kit, request, ch, description)

    return run_ranks(world, lambda r: worker(r, None), lambda: worker(0, channel), channel,
                     "multi_worker process")  # fmt: skip


# ---------------------------------------------------------------------- the kit
class KerasKit(Kit):
    """One process's TensorFlow/Keras for a trial (one of ``world`` processes when
    ``multi_worker``, else the only one): threads, visible devices, the ``tf.distribute``
    strategy, the seed and the mixed-precision policy set before any op runs; the clock's
    collectives; the user's helpers (``scope``, ``optimizer``, the Keras callback)."""

    framework = "tensorflow"

    def __init__(self, config: dict[str, Any], request: TrialRequest, *, rank: int = 0,
                 world: int = 1) -> None:  # fmt: skip
        import keras
        import tensorflow as tf

        super().__init__(config, rank=rank, world=world, local_rank=rank)
        self.tf, self.keras = tf, keras
        kind, _, index = request.device.partition(":")
        self.kind, self.index = kind, int(index or 0)
        self.device = request.device
        self.strategy_name = config.get("parallel_strategy", "tpu" if kind == "tpu" else "single")
        self.rss_start = rss_peak_mb()
        self.strategy = self._configure()
        self.applied |= {"intra_op_threads", "inter_op_threads", "precision"}
        self._replicas = self.strategy.num_replicas_in_sync // self.world or 1
        keras.utils.set_random_seed(request.seed)
        precision = config.get("precision", "fp32")
        policy = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}.get(precision, "float32")
        keras.mixed_precision.set_global_policy(policy)
        self.xla = False
        self._reduce_fn = None

    # -- runtime and strategy (before any op runs in this process)
    def _configure(self):
        tf, cfg, kind = self.tf, self.config, self.kind
        intra = int(cfg.get("intra_op_threads") or max(1, usable_cores() // self.world))
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        if cfg.get("inter_op_threads"):
            tf.config.threading.set_inter_op_parallelism_threads(int(cfg["inter_op_threads"]))
        replicas = int(cfg.get("world_size", 2)) if self.strategy_name == "mirrored" else 1
        if kind == "cpu":
            with contextlib.suppress(RuntimeError, ValueError):  # no GPU use on --device cpu
                tf.config.set_visible_devices([], "GPU")
            if self.strategy_name == "mirrored":
                cpu = tf.config.list_physical_devices("CPU")[0]
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
                )
        elif kind == "cuda":
            gpus = tf.config.list_physical_devices("GPU")
            first = self.index + self.rank  # multi_worker: one GPU per worker
            if first + replicas > len(gpus):
                raise InvalidConfig(f"{self.strategy_name} needs GPUs {first}..{first + replicas - 1}"
                                    f" but {len(gpus)} are visible")  # fmt: skip
            mine = gpus[first : first + replicas]
            tf.config.set_visible_devices(mine, "GPU")
            for gpu in mine:  # so that peak memory means what the trial needed
                tf.config.experimental.set_memory_growth(gpu, True)
            tf.config.experimental.enable_tensor_float_32_execution(cfg.get("precision") == "tf32")
        return self._strategy(replicas)

    def _strategy(self, replicas: int):
        tf, name, kind = self.tf, self.strategy_name, self.kind
        dev = "GPU" if kind == "cuda" else "CPU"
        if name == "single":
            return tf.distribute.OneDeviceStrategy(f"/{dev}:0")
        if name == "mirrored":
            devices = [f"/{dev}:{i}" for i in range(replicas)]
            ops = None if kind == "cuda" else tf.distribute.ReductionToOneDevice("/CPU:0")
            return tf.distribute.MirroredStrategy(devices=devices, cross_device_ops=ops)
        if name == "multi_worker":
            impl = tf.distribute.experimental.CommunicationImplementation
            options = tf.distribute.experimental.CommunicationOptions(
                implementation=impl.NCCL if kind == "cuda" else impl.RING
            )
            return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        resolver = _tpu_resolver()  # "tpu"
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)

    @property
    def replicas(self) -> int:
        return self._replicas

    # -- the clock's collectives (several processes: multi_worker only)
    def _allreduce(self, value: float) -> float:
        tf, strategy = self.tf, self.strategy
        if self._reduce_fn is None:

            @tf.function
            def reduce_fn(v):
                def all_reduce(t):
                    return tf.distribute.get_replica_context().all_reduce("SUM", tf.identity(t))

                return strategy.experimental_local_results(strategy.run(all_reduce, args=(v,)))[0]

            self._reduce_fn = reduce_fn
        return float(self._reduce_fn(tf.constant(value, tf.float64)).numpy())

    def broadcast_int(self, value: int) -> int:
        if self.world == 1:
            return int(value)
        return int(round(self._allreduce(float(value) if self.rank == 0 else 0.0)))

    def loss_value(self, loss) -> float:
        """The global mean loss, the same on every worker (NaN everywhere if NaN anywhere)."""
        tf = self.tf
        if isinstance(loss, tf.distribute.DistributedValues):  # the built-in step's per-replica losses
            value = float(self.strategy.reduce("SUM", loss, axis=None).numpy())
        else:
            value = float(loss.numpy() if hasattr(loss, "numpy") else loss)
        if self.world > 1:
            value = self._allreduce(value) / self.world
        return value

    def sync(self) -> None:
        if self.kind != "cpu":
            self.tf.test.experimental.sync_devices()

    def memory(self, gather: bool = True) -> dict[str, float]:
        peak = rss_peak_mb()
        out = {"peak_rss_mb": peak, "rss_growth_mb": max(0.0, peak - self.rss_start)}
        if self.kind == "cuda":
            with contextlib.suppress(Exception):
                info = self.tf.config.experimental.get_memory_info("GPU:0")
                out["peak_device_memory_mb"] = info["peak"] / 2**20
        if self.world > 1 and gather:  # every worker makes the same calls, in the same order
            out = {k: self._allreduce(out.get(k, 0.0)) for k in sorted(out)}
        return out

    def extra_metrics(self) -> dict[str, Any]:
        return {"world_size": self.strategy.num_replicas_in_sync, "xla": self.xla}

    # -- the user's helpers
    def scope(self):
        return self.strategy.scope()

    def prepare(self, model):
        """A model-building function is called under the strategy's scope; a built model is
        returned as is (build it inside ``trial.scope()`` when the strategy is not single)."""
        if callable(model) and not isinstance(model, self.keras.Model):
            with self.strategy.scope():
                return model()
        return model

    def optimizer(self, params=None):
        """The config's Keras optimizer, built under the strategy's scope (with loss scaling
        for fp16); ``params`` (a model's variables) builds its slots now."""
        keras = self.keras
        with self.strategy.scope():
            opt = make_keras_optimizer(self.config)
            if self.config.get("precision") == "fp16":
                opt = keras.optimizers.LossScaleOptimizer(opt)
            if params is not None:
                opt.build(params)
        return opt

    def callback(self, trial, **options):
        return keras_callback(trial, **options)


def keras_callback(trial, *, validation_data=None, evaluate=None, monitor: str = "val_accuracy",
                   samples_per_step: int | None = None):  # fmt: skip
    """A ``keras.callbacks.Callback`` that drives ``trial`` from ``model.fit``:

    * every training batch is a ``trial.step`` (``samples_per_step``: the batch this process
      trains per step; default ``trial.config["batch_size"]`` x replicas);
    * when an evaluation is due it evaluates, outside the training clock: ``evaluate()`` if
      given, else ``model.evaluate(*validation_data)``, and reports ``monitor`` (without the
      ``val_`` prefix); with neither, it reports ``logs[monitor]`` of fit's own validation at
      each epoch's end (its time excluded too);
    * it sets ``model.stop_training`` once the trial has ended.
    """
    import keras

    per_step = samples_per_step or int(trial.config.to_dict().get("batch_size", 32)) * trial.kit.replicas
    key = monitor.removeprefix("val_")

    class TrialCallback(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self._supports_tf_logs = True  # keep logs as tensors: no device sync per step
            self._in_test = None

        def on_train_begin(self, logs=None) -> None:
            trial.should_stop()  # the training clock starts here

        def _evaluate(self) -> float:
            if evaluate is not None:
                return float(evaluate())
            x, y = validation_data[0], validation_data[1]
            results = self.model.evaluate(x, y, verbose=0, return_dict=True)
            return float(results[key])

        def on_train_batch_end(self, batch, logs=None) -> None:
            loss = (logs or {}).get("loss")
            trial.step(samples=per_step, loss=loss)
            if trial.eval_due() and (evaluate is not None or validation_data is not None):
                with trial.evaluating():
                    value = self._evaluate()
                trial.report(value)
            if trial.should_stop():
                self.model.stop_training = True

        def on_test_begin(self, logs=None) -> None:
            if evaluate is None and validation_data is None and self._in_test is None:
                self._in_test = trial.evaluating()
                self._in_test.__enter__()

        def on_test_end(self, logs=None) -> None:
            if self._in_test is not None:
                self._in_test.__exit__(None, None, None)
                self._in_test = None

        def on_epoch_end(self, epoch, logs=None) -> None:
            if evaluate is None and validation_data is None and logs and monitor in logs:
                trial.report(float(logs[monitor]))
                if trial.should_stop():
                    self.model.stop_training = True

    return TrialCallback()


# ---------------------------------------------------------------------- the built-in loop
def builtin_loop(workload: Any):
    """perftune's own training function for a :class:`~perftune.workload.Workload`: a
    ``tf.function`` train step under the kit's strategy (XLA-compiled with ``jit_compile``),
    the input as a ``tf.data`` pipeline, driven on the Trial API."""

    def train(trial) -> None:
        kit: KerasKit = trial.kit
        tf, cfg, strategy = kit.tf, trial.config, kit.strategy
        x_tr, y_tr, x_va, y_va = workload.data()
        n_train = [None if callable(x_tr) else len(x_tr)]
        data = _train_dataset(tf, strategy, workload, cfg, trial.seed, x_tr, y_tr, n_train)
        with strategy.scope():
            model = workload.model()
        opt = trial.optimizer(model.trainable_variables)
        loss_fn = _loss_fn(tf, workload.loss)
        n_sync = strategy.num_replicas_in_sync
        fp16 = cfg.get("precision", "fp32") == "fp16"

        def gradients(x, y):
            with tf.GradientTape() as tape:
                out = tf.cast(model(x, training=True), tf.float32)
                loss = tf.cast(loss_fn(out, y), tf.float32) / n_sync  # summed over replicas
                scaled = opt.scale_loss(loss) if fp16 else loss
            return loss, tape.gradient(scaled, model.trainable_variables)

        def replica_step(x, y):
            loss, grads = gradients(x, y)
            opt.apply(grads, model.trainable_variables)
            return loss

        # XLA compiles the whole step on one device; with several replicas the update goes
        # through a cross-replica all-reduce XLA cannot hold, so only the gradients compile.
        jit = bool(cfg.get("jit_compile", False)) and kit.kind != "tpu"
        kit.xla = jit or kit.kind == "tpu"
        replica_fn = replica_step
        if jit and n_sync == 1:
            replica_fn = tf.function(replica_step, jit_compile=True)
        elif jit:
            gradients = tf.function(gradients, jit_compile=True)

        @tf.function
        def train_step(iterator):
            x, y = next(iterator)
            return strategy.run(replica_fn, args=(x, y))

        def predict(x):
            return tf.cast(model(x, training=False), tf.float32)

        evaluate = _evaluator(kit, workload, tf.function(predict), x_va, y_va)
        it = iter(data)
        gbs = int(cfg.get("batch_size", 32)) * n_sync
        local = gbs // kit.world
        steps = 0
        kit.keep = (model, opt)

        def step():
            nonlocal steps
            loss = train_step(it)
            steps += 1
            epoch = (steps - 1) * gbs // n_train[0] if n_train[0] else 0
            return epoch, loss, local

        drive(trial, step, evaluate)

    return train


def _train_dataset(tf, strategy, workload, cfg, seed: int, x_tr, y_tr, n_train: list):
    """The distributed training input: full per-replica batches, endless. ``n_train[0]`` is
    set to the training set's size when a workload's own pipeline knows it."""
    bs = int(cfg.get("batch_size", 32))
    prefetch = _prefetch_value(cfg.get("prefetch", "autotune"))
    regression = workload.loss == "mse"

    def make(ctx: tf.distribute.InputContext):
        if callable(x_tr):  # the workload's own unbatched tf.data pipeline
            ds = x_tr()
            if not isinstance(ds, tf.data.Dataset):
                raise InvalidConfig(f"the workload's x_train callable returned "
                                    f"{type(ds).__name__}, not a tf.data.Dataset")  # fmt: skip
            size = int(ds.cardinality())
            n_train[0] = size if size > 0 else None  # unknown or infinite: no epochs
            if ctx.num_input_pipelines > 1:
                ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        else:
            y = _host_array(y_tr, float32=regression)
            ds = tf.data.Dataset.from_tensor_slices((_host_array(x_tr), y))
            if ctx.num_input_pipelines > 1:
                ds = ds.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
            n = len(x_tr) // ctx.num_input_pipelines
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
        ds = ds.repeat().batch(bs, drop_remainder=True)
        return ds if prefetch is None else ds.prefetch(prefetch)

    return strategy.distribute_datasets_from_function(make)


def _loss_fn(tf, loss):
    """``loss(outputs, targets)``: a scalar, the mean over this replica's batch."""
    if callable(loss):
        return loss
    if loss == "cross_entropy":
        return lambda out, y: tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=out))
    if loss == "mse":
        return lambda out, y: tf.reduce_mean(tf.square(out - tf.reshape(tf.cast(y, out.dtype),
                                                                        tf.shape(out))))  # fmt: skip
    raise InvalidConfig(f"workload loss {loss!r} is not known (use a callable)")


def _metric(metric, out, y) -> float:
    import numpy as np

    if callable(metric):
        return float(metric(out, y))
    out = out.numpy()
    if metric == "accuracy":
        return float((out.argmax(axis=1) == np.asarray(y)).mean())
    if metric == "mse":
        return float(((out - np.asarray(y, dtype=np.float32).reshape(out.shape)) ** 2).mean())
    raise InvalidConfig(f"workload metric {metric!r} is not known (use a callable)")


def _evaluator(kit: KerasKit, workload, predict, x_va, y_va):
    """``evaluate()``: the workload metric over the whole validation set, in large batches
    (on a TPU through ``strategy.run``, in order: replicas take consecutive slices)."""
    tf, strategy = kit.tf, kit.strategy
    if kit.kind != "tpu":
        x = tf.constant(_host_array(x_va))

        def evaluate() -> float:
            outs = [predict(x[i : i + 4096]) for i in range(0, len(x_va), 4096)]
            return _metric(workload.metric, tf.concat(outs, 0), y_va)

        return evaluate
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices(_host_array(x_va)).batch(4096)
    )
    run = tf.function(lambda xb: strategy.run(predict, args=(xb,)))

    def evaluate_tpu() -> float:
        outs = [t for xb in ds for t in strategy.experimental_local_results(run(xb))]
        return _metric(workload.metric, tf.concat(outs, 0), y_va)

    return evaluate_tpu


__all__ = ["KerasKit", "TensorFlowBackend", "keras_callback", "make_keras_optimizer", "tpu_plausible",
           "validate_config"]
