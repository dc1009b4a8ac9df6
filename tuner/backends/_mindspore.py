"""MindSpore backend: runs in a trial worker, imports mindspore when used.

Devices: ``cpu``, ``cuda`` (MindSpore's "GPU" target) and ``npu`` (Ascend), whichever the
installed MindSpore build supports and finds (discovery never initialises a device).

Knobs (framework-neutral names, see :func:`validate_config`):

* ``batch_size`` per process (per rank); the global batch is ``batch_size * world_size``.
* ``learning_rate``, ``optimizer`` (sgd = ``nn.Momentum``, adam, adamw = ``nn.AdamWeightDecay``,
  rmsprop, adagrad), ``momentum``, ``beta1``/``beta2``, ``weight_decay``: see
  :func:`make_ms_optimizer`.
* ``exec_mode``: ``pynative`` (MindSpore's default, eager) or ``graph``: the whole train step
  (forward, backward, gradient reduction, optimizer update) is compiled with ``mindspore.jit``.
  We wrap the step rather than set ``context.mode=GRAPH_MODE`` because the 2.x functional train
  step (``value_and_grad`` in a plain function) is only compiled under ``jit``, and the eager
  control code around it (evaluation, collectives deciding when to stop) must stay eager. The
  auto/semi-auto parallel modes additionally set ``GRAPH_MODE``, which they require.
* ``precision`` (``fp32``, ``fp16``; ``bf16`` on Ascend) and ``amp_level`` (``O0``..``O3``):
  ``mindspore.amp.auto_mixed_precision(net, amp_level, dtype)``; ``fp32`` means ``O0`` and a
  low precision needs ``O1``..``O3`` (default ``O1``). fp16 trains with a dynamic loss scaler.
  On the CPU fp16 runs (slowly) and bf16 has no CPU MatMul kernel, so it is rejected up-front.
* ``parallel_strategy``: ``single`` (stand-alone, in the trial process), ``data_parallel``,
  ``auto_parallel``, ``semi_auto_parallel`` with ``world_size`` processes, launched through
  MindSpore's own ``msrun`` (see :func:`_run_msrun`). The CPU build only has data parallelism
  (its collectives refuse the auto/semi-auto modes), so those are rejected on the CPU.
* ``dataset_workers``: ``num_parallel_workers`` of the ``mindspore.dataset`` pipeline that feeds
  training (a ``GeneratorDataset`` over the in-memory arrays with shuffle and batch, thread
  workers: process workers cost 10x more per batch for in-memory arrays on a small CPU).
* ``num_threads``: ``mindspore.device_context.cpu.op_tuning.threads_num`` (CPU kernels; default
  ``cores // world_size``). MindSpore allows setting it once per process, so it is set in the
  trial process, never in the fork server.

Inference (``measure`` ``"infer"``, and ``"fit"`` to train the model to serve): see
:mod:`perftune.backends._ms_infer` (the CPU only).

The fork server imports mindspore once (:meth:`MindSporeBackend.preload`) and forks a child per
trial; no device or thread pool is initialised before the fork (verified: trials in a row in
forked children train correctly in both exec modes).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from perftune.backends._base import Backend, Channel, NullChannel, TrialRequest, classify_exception
from perftune.backends._host import cpu_device, rss_peak_mb, usable_cores
from perftune.backends._ranks import free_ports
from perftune.errors import InvalidConfig, TrialError, UsageError
from perftune.trial._kit import Kit
from perftune.trial._run import as_function, drive, run_rank

_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
_COMMON = ("batch_size", "learning_rate", "optimizer", "momentum", "beta1", "beta2",
           "weight_decay", "parallel_strategy", "world_size", "precision")  # fmt: skip
_SPECIFIC = ("exec_mode", "amp_level", "dataset_workers", "num_threads")
_STRATEGIES = ("single", "data_parallel", "auto_parallel", "semi_auto_parallel")
_AMP_LEVELS = ("O0", "O1", "O2", "O3")
_EXEC_MODES = ("pynative", "graph")
_PRECISIONS = {"cpu": ("fp32", "fp16"), "cuda": ("fp32", "fp16"), "npu": ("fp32", "fp16", "bf16")}
#: perftune device kind -> MindSpore device target.
_TARGETS = {"cpu": "CPU", "cuda": "GPU", "npu": "Ascend"}

#: Quiet C++ logs (errors only) in every process this backend starts or runs in.
_QUIET_ENV = {"GLOG_v": "3", "GLOG_logtostderr": "1", "MS_SUBMODULE_LOG_v": "{}"}


def _quiet() -> None:
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)


class MindSporeBackend(Backend):
    name = "mindspore"
    module = "mindspore"
    multi_process_strategies = ("data_parallel", "auto_parallel", "semi_auto_parallel")

    @staticmethod
    def builtin_loop(workload: Any):
        return builtin_loop(workload)
    device_classes = ("cpu", "cuda", "npu")
    measures = ("converge", "throughput", "infer", "fit")

    @classmethod
    def capabilities(cls, device_class: str) -> dict[str, Any]:
        kind = device_class if device_class in _PRECISIONS else "cuda"
        strategies = ["single", "data_parallel"] if kind == "cpu" else list(_STRATEGIES)
        return {
            "params": [*_COMMON, *_SPECIFIC],
            "choices": {
                "optimizer": list(_OPTIMIZERS),
                "parallel_strategy": strategies,
                "precision": list(_PRECISIONS[kind]),
                "amp_level": list(_AMP_LEVELS),
                "exec_mode": list(_EXEC_MODES),
            },
        }

    @classmethod
    def inference_capabilities(cls, device_class: str) -> dict[str, Any] | None:
        from perftune.backends import _ms_infer

        return _ms_infer.capabilities(device_class)

    def preload(self) -> dict[str, str]:
        _quiet()
        # Import only: no device, no thread pool, no dataset pipeline before the fork.
        import mindspore  # noqa: F401
        import mindspore.amp  # noqa: F401
        import mindspore.communication  # noqa: F401
        import mindspore.dataset  # noqa: F401
        import mindspore.nn  # noqa: F401

        return self._versions()

    def _versions(self) -> dict[str, str]:
        import mindspore

        return {"mindspore": str(mindspore.__version__), "python": platform.python_version()}

    def devices(self) -> list[dict[str, Any]]:
        _quiet()
        versions = self._versions()
        found = [cpu_device(versions, bf16=False)]
        for kind in ("cuda", "npu"):
            with contextlib.suppress(Exception):  # a build without the plugin, or no driver
                dev = _accelerator(kind, versions)
                if dev is not None:
                    found.append(dev)
        return found

    # ------------------------------------------------------------------ trials
    def run_trial(self, workload: Any, request: TrialRequest, channel: Channel) -> dict[str, Any]:
        _quiet()
        if request.measure in ("infer", "fit"):  # serving: perftune.backends._ms_infer
            from perftune.backends import _ms_infer

            if request.measure == "fit":
                return _ms_infer.fit(self, workload, request, channel)
            return _ms_infer.run_inference(workload, request)
        validate_config(request.config, request.device)
        if request.config.get("parallel_strategy", "single") == "single":
            fn = as_function(workload, builtin_loop)
            return run_rank(fn, MindSporeKit(request.config, request), request, channel,
                            workload.describe())  # fmt: skip
        return _run_msrun(request)

    def standalone_kit(self, request: TrialRequest) -> MindSporeKit:
        _quiet()
        validate_config(request.config, request.device)
        if request.config.get("parallel_strategy", "single") != "single":
            raise UsageError("the config runs several msrun ranks: outside a sweep, launch the "
                             "script with msrun yourself")  # fmt: skip
        return MindSporeKit(request.config, request)


def _supports(target: str) -> bool:
    """Whether the installed build has ``target``'s plugin (cheap: no device is touched)."""
    from mindspore._c_expression import MSContext

    return bool(MSContext.get_instance().is_pkg_support_device(target))


def _accelerator(kind: str, versions: dict[str, str]) -> dict[str, Any] | None:
    """The ``cuda`` or ``npu`` device record, or None when the build or the host has none."""
    import mindspore as ms

    target = _TARGETS[kind]
    if not _supports(target):
        return None
    count = int(ms.hal.device_count(target))
    if count < 1:
        return None
    name, memory = target, 0
    with contextlib.suppress(Exception):
        props = ms.hal.get_device_properties(0, target)
        name = str(getattr(props, "name", target) or target)
        memory = int(getattr(props, "total_memory", 0) or 0)
    dev = {"kind": kind, "name": name, "count": count, "memory_bytes": memory,
           "cores": usable_cores(), "versions": dict(versions), "bf16": kind == "npu"}  # fmt: skip
    if kind == "cuda":
        with contextlib.suppress(Exception):
            major, minor = ms.hal.get_device_capability(0, target)
            dev["compute_capability"] = f"{major}.{minor}"
    return dev


def validate_config(cfg: dict[str, Any], device: str, *, cores: int | None = None) -> None:
    """Reject what this backend cannot honour on ``device`` (raises :class:`InvalidConfig`)."""
    kind = device.split(":", 1)[0]
    if kind not in _TARGETS:
        raise InvalidConfig(f"device kind {kind!r} is not supported by MindSpore (cpu, cuda, npu)")
    cores = usable_cores() if cores is None else cores
    strategy = cfg.get("parallel_strategy", "single")
    world = int(cfg.get("world_size", 1))
    if strategy not in _STRATEGIES:
        raise InvalidConfig(f"parallel_strategy {strategy!r} is not one of {', '.join(_STRATEGIES)}")
    if strategy == "single" and world != 1:
        raise InvalidConfig(f"single (stand-alone) runs one process, got world_size {world}")
    if strategy != "single" and world < 2:
        raise InvalidConfig(f"{strategy} needs world_size >= 2")
    if kind == "cpu" and strategy in ("auto_parallel", "semi_auto_parallel"):
        raise InvalidConfig(f"{strategy} needs GPU or Ascend devices: MindSpore's CPU backend "
                            "only supports data_parallel")  # fmt: skip
    if kind == "cpu" and world > cores:
        raise InvalidConfig(f"world_size {world} exceeds the {cores} usable CPU cores")
    exec_mode = cfg.get("exec_mode", "pynative")
    if exec_mode not in _EXEC_MODES:
        raise InvalidConfig(f"exec_mode {exec_mode!r} is not one of pynative, graph")
    if strategy in ("auto_parallel", "semi_auto_parallel") and exec_mode != "graph":
        raise InvalidConfig(f"{strategy} needs exec_mode graph")
    if cfg.get("optimizer", "adam") not in _OPTIMIZERS:
        raise InvalidConfig(f"optimizer {cfg.get('optimizer')!r} is not supported")
    precision = cfg.get("precision", "fp32")
    if precision not in _PRECISIONS[kind]:
        raise InvalidConfig(f"precision {precision!r} is not supported by MindSpore on {kind} "
                            f"(supported: {', '.join(_PRECISIONS[kind])})")  # fmt: skip
    amp = amp_level(cfg)
    if amp not in _AMP_LEVELS:
        raise InvalidConfig(f"amp_level {amp!r} is not one of {', '.join(_AMP_LEVELS)}")
    if precision == "fp32" and amp != "O0":
        raise InvalidConfig(f"amp_level {amp} needs precision fp16 or bf16 (fp32 means O0)")
    if precision != "fp32" and amp == "O0":
        raise InvalidConfig(f"precision {precision} needs amp_level O1, O2 or O3 (O0 is fp32)")
    workers = int(cfg.get("dataset_workers", 1))
    if not 1 <= workers <= cores:
        raise InvalidConfig(f"dataset_workers {workers} must be between 1 and the {cores} cores")
    if int(cfg.get("num_threads") or 1) < 1:
        raise InvalidConfig("num_threads must be >= 1")


def amp_level(cfg: dict[str, Any]) -> str:
    """The AMP level a config means: ``amp_level`` if given, else O0 for fp32 and O2 otherwise."""
    if cfg.get("amp_level") is not None:
        return str(cfg["amp_level"])
    return "O0" if cfg.get("precision", "fp32") == "fp32" else "O2"


def make_ms_optimizer(params, config: dict[str, Any]):
    """The ``mindspore.nn`` optimizer a perftune config names (``optimizer``, ``learning_rate``,
    ``momentum``, ``beta1``/``beta2``, ``weight_decay``), exactly as trials build it: use it in
    a training script so that a tuned config means there what it meant in the sweep.

    sgd is ``nn.Momentum`` (SGD with momentum), adamw is ``nn.AdamWeightDecay``; defaults match
    :func:`perftune.backends.make_optimizer` (torch).
    """
    from mindspore import nn

    params = list(params)
    name, lr = config.get("optimizer", "adam"), float(config.get("learning_rate", 1e-3))
    beta1, beta2 = float(config.get("beta1", 0.9)), float(config.get("beta2", 0.999))
    momentum = float(config.get("momentum", 0.0))
    if name == "sgd":
        return nn.Momentum(params, learning_rate=lr, momentum=momentum)
    if name == "adam":
        return nn.Adam(params, learning_rate=lr, beta1=beta1, beta2=beta2)
    if name == "adamw":
        return nn.AdamWeightDecay(params, learning_rate=lr, beta1=beta1, beta2=beta2,
                                  weight_decay=float(config.get("weight_decay", 1e-2)))  # fmt: skip
    if name == "rmsprop":
        return nn.RMSProp(params, learning_rate=lr, momentum=momentum)
    if name == "adagrad":
        return nn.Adagrad(params, learning_rate=lr)
    raise InvalidConfig(f"optimizer {name!r} is not supported")


# ---------------------------------------------------------------------- msrun
def _run_msrun(request: TrialRequest) -> dict[str, Any]:
    """Run the trial on ``world_size`` ranks started by MindSpore's launcher ``msrun``.

    Each rank runs :func:`_rank_main` (this file as a script); rank 0 writes its result (or its
    error) as JSON to a file before the job shuts down, and this process returns it.

    KNOWN MSRUN PROBLEM, HANDLED HERE: MindSpore's CPU cluster may report "node timed out"
    while shutting down and ``msrun`` then exits non-zero although training finished on every
    rank. The launcher's exit status is therefore trusted only when rank 0 wrote no result: a
    result file means the measurement is complete, and the shutdown error is logged as benign.

    Pruning is not wired through msrun: ranks run with a :class:`NullChannel` (the budget and the
    trial timeout still bound them). The per-trial msrun logs go to ``<log_path>.msrun/``.
    """
    from perftune.executor import _perftune_path

    world = int(request.config["world_size"])
    work = tempfile.mkdtemp(prefix="perftune-msrun-")
    log_dir = f"{request.log_path}.msrun" if request.log_path else os.path.join(work, "logs")
    shutil.rmtree(log_dir, ignore_errors=True)
    req_path, result_path = os.path.join(work, "request.json"), os.path.join(work, "result.json")
    with open(req_path, "w") as f:
        json.dump(request.to_dict(), f)
    env = {**os.environ, **_QUIET_ENV,
           # msrun starts each rank as `python SCRIPT`: our interpreter must come first.
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           "PYTHONPATH": os.pathsep.join(p for p in (_perftune_path(), os.environ.get("PYTHONPATH")) if p),
           "PERFTUNE_MS_LAUNCH_T": repr(time.time())}  # fmt: skip
    cmd = [sys.executable, "-c", "import sys; from mindspore.parallel.cluster.run import main; "
           "sys.argv[0] = 'msrun'; sys.exit(main())",
           "--worker_num", str(world), "--local_worker_num", str(world),
           "--master_addr", "127.0.0.1", "--master_port", str(free_ports(1)[0]),
           "--log_dir", log_dir, "--join", "True", "--cluster_time_out", "120",
           os.path.abspath(__file__), req_path, result_path]  # fmt: skip
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=max(60.0, float(request.timeout_s)))  # fmt: skip
        launcher = proc.stdout.decode(errors="replace")
        result = None
        if os.path.exists(result_path):
            with open(result_path) as f:
                result = json.load(f)
        if result is not None and "error" in result:
            err = TrialError(result["error"]["message"])
            err.cause = result["error"]["cause"]
            raise err
        if result is None:
            raise RuntimeError(f"msrun ({world} ranks) exited with status {proc.returncode} "
                               f"and no result: {_log_error(log_dir, launcher)}")  # fmt: skip
        if proc.returncode != 0:
            print(f"perftune: BENIGN msrun shutdown error (exit {proc.returncode}) AFTER rank 0 "
                  f"wrote its result; the measurement is kept. Logs: {log_dir}", file=sys.stderr)
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _log_error(log_dir: str, launcher: str) -> str:
    """The most telling error line of a failed msrun job (OOM lines first), for the message."""
    from perftune.backends._base import _OOM_MARKERS

    lines: list[str] = []
    for name in sorted(os.listdir(log_dir)) if os.path.isdir(log_dir) else []:
        with contextlib.suppress(OSError), open(os.path.join(log_dir, name), errors="replace") as f:
            lines += [ln.strip() for ln in f if "Error" in ln or "error" in ln]
    lines += [ln.strip() for ln in launcher.splitlines() if "Error" in ln]
    for ln in lines:
        if any(m in ln.lower() for m in _OOM_MARKERS):
            return ln[:400]
    useful = [ln for ln in lines if not ln.startswith("[WARNING]")]
    return (useful[0] if useful else "see the msrun logs in " + log_dir)[:400]


def _rank_main(req_path: str, result_path: str) -> int:
    """One msrun rank: train, and (rank 0) write the result or the error to ``result_path``."""
    from perftune._proc import die_with_parent

    die_with_parent()  # msrun starts ranks in their own session: die with the launcher
    _quiet()
    with open(req_path) as f:
        request = TrialRequest.from_dict(json.load(f))
    rank = 0
    try:
        from mindspore.communication import get_rank, init

        from perftune.workload import resolve

        workload = resolve(request.workload, "mindspore")
        kit = MindSporeKit(request.config, request, distributed=True, init=init, get_rank=get_rank)
        rank = kit.rank
        result = run_rank(as_function(workload, builtin_loop), kit, request, NullChannel(),
                          workload.describe())  # fmt: skip
        launched = float(os.environ["PERFTUNE_MS_LAUNCH_T"])
        result["metrics"]["setup_s"] += kit.created_at - launched  # the launcher's start counts
        payload: dict[str, Any] = result
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the trial process
        import traceback

        traceback.print_exc()
        payload = {"error": {"cause": classify_exception(exc),
                             "message": f"{type(exc).__name__}: {exc}".splitlines()[0][:500]}}
        code = 1
        rank = int(os.environ.get("RANK_ID", rank))
    if rank == 0:
        tmp = result_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(payload, f, default=float)
        os.replace(tmp, result_path)  # written before the cluster shuts down
    sys.stdout.flush()
    sys.stderr.flush()
    return code


# -------------------------------------------------------------------- the kit
class MindSporeKit(Kit):
    """One process's MindSpore for a trial (stand-alone, or one msrun rank): device, threads,
    parallel context and seeds set before any op runs; the clock's collectives; the user's
    helpers (``optimizer``, ``autocast`` as ``amp``, the ``Model.train`` callback)."""

    framework = "mindspore"

    def __init__(self, config: dict[str, Any], request: TrialRequest, *, distributed: bool = False,
                 init=None, get_rank=None) -> None:  # fmt: skip
        import mindspore as ms

        world = int(config.get("world_size", 1)) if distributed else 1
        super().__init__(config, rank=0, world=world)
        self.created_at = time.time()
        self.ms = ms
        self.kind, _, index = request.device.partition(":")
        self.device = request.device
        self.strategy = config.get("parallel_strategy", "single")
        self.local_rank = local = int(os.environ.get("DEVICE_ID", 0)) if distributed else 0
        ms.set_device(_TARGETS[self.kind], int(index or 0) + local if self.kind != "cpu" else None)
        threads = int(config.get("num_threads") or max(1, usable_cores() // self.world))
        ms.device_context.cpu.op_tuning.threads_num(threads)
        self.applied.add("num_threads")
        if distributed:
            from mindspore import ParallelMode

            if self.strategy != "data_parallel":
                ms.set_context(mode=ms.GRAPH_MODE)  # auto/semi-auto parallel need graph mode
            init()
            self.rank = int(get_rank())
            mode = {"data_parallel": ParallelMode.DATA_PARALLEL,
                    "auto_parallel": ParallelMode.AUTO_PARALLEL,
                    "semi_auto_parallel": ParallelMode.SEMI_AUTO_PARALLEL}[self.strategy]  # fmt: skip
            extra = {"search_mode": "sharding_propagation"} if self.strategy == "auto_parallel" else {}
            ms.set_auto_parallel_context(parallel_mode=mode, gradients_mean=True,
                                         device_num=self.world, **extra)  # fmt: skip
        ms.set_seed(request.seed)
        ms.dataset.config.set_seed(request.seed)
        self.last = self._allreduce = None
        self.rss_start = rss_peak_mb()

    # -- the clock's collectives (identity with one process)
    def _sum(self, value: float) -> float:
        """The sum over ranks (SUM is the only AllReduce the CPU backend has)."""
        ms = self.ms
        if self.world == 1:
            return value
        if self._allreduce is None:
            self._allreduce = ms.ops.AllReduce()
        return float(self._allreduce(ms.Tensor([value], ms.float32)).asnumpy()[0])

    def broadcast_int(self, value: int) -> int:
        if self.world == 1:
            return int(value)
        return int(round(self._sum(float(value if self.rank == 0 else 0))))

    def loss_value(self, loss) -> float:
        """The loss as a float; NaN on every rank if it is not finite on any rank."""
        value = float(loss.asnumpy().astype("float64").mean()) if hasattr(loss, "asnumpy") else float(loss)
        if self.world > 1 and self._sum(0.0 if math.isfinite(value) else 1.0) > 0:
            return math.nan
        return value

    def sync(self) -> None:
        if self.last is not None:
            self.last.asnumpy()  # waits for every queued op up to the last step
        if self.kind != "cpu":
            self.ms.runtime.synchronize()

    def memory(self, gather: bool = True) -> dict[str, float]:
        peak = rss_peak_mb()
        out = {"peak_rss_mb": peak, "rss_growth_mb": max(0.0, peak - self.rss_start)}
        if self.kind != "cpu":
            with contextlib.suppress(Exception):
                out["peak_device_memory_mb"] = self.ms.runtime.max_memory_allocated() / 2**20
        return {k: self._sum(v) for k, v in out.items()} if gather else out  # summed over ranks

    def extra_metrics(self) -> dict[str, Any]:
        return {"world_size": self.world}

    # -- the user's helpers
    def prepare(self, model):
        """The network with the config's mixed precision (``amp_level``) applied."""
        ms, cfg = self.ms, self.config
        amp = amp_level(cfg)
        if amp != "O0":
            dtype = ms.bfloat16 if cfg.get("precision") == "bf16" else ms.float16
            model = ms.amp.auto_mixed_precision(model, amp, dtype=dtype)
        return model

    def optimizer(self, params=None):
        if params is None:
            raise UsageError("trial.optimizer(): pass the parameters (net.trainable_params())")
        return make_ms_optimizer(params, self.config)

    def callback(self, trial, **options):
        return mindspore_callback(trial, **options)


def mindspore_callback(trial, *, evaluate=None, samples_per_step: int | None = None):
    """A ``mindspore.train.Callback`` that drives ``trial`` from ``Model.train``: every step is
    a ``trial.step`` (``samples_per_step``: default the dataset's batch size), and when an
    evaluation is due ``evaluate()`` (e.g. ``lambda: model.eval(val_ds)["accuracy"]``) runs
    outside the training clock and is reported; training stops once the trial has ended.
    Use ``dataset_sink_mode=False`` so the callback sees every step."""
    from mindspore.train import Callback

    class TrialCallback(Callback):
        def on_train_begin(self, run_context) -> None:
            trial.should_stop()  # the training clock starts here

        def on_train_step_end(self, run_context) -> None:
            if trial.meter.stopped:
                run_context.request_stop()
                return
            cb = run_context.original_args()
            samples = samples_per_step or int(cb.train_dataset.get_batch_size())
            outputs = cb.net_outputs
            loss = outputs[0] if isinstance(outputs, tuple | list) else outputs
            trial.step(samples=samples, loss=loss)
            if evaluate is not None and trial.eval_due():
                with trial.evaluating():
                    value = float(evaluate())
                trial.report(value)
            if trial.should_stop():
                run_context.request_stop()

    return TrialCallback()


# ---------------------------------------------------------------------- the built-in loop
class _ArraySource:
    """Random-access source of a ``GeneratorDataset``: rows of in-memory arrays."""

    def __init__(self, *arrays) -> None:
        self.arrays = arrays

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, i):
        return tuple(a[i] for a in self.arrays)


def builtin_loop(workload: Any):
    """perftune's own training function for a :class:`~perftune.workload.Workload`: a functional
    train step (compiled with ``mindspore.jit`` in ``graph`` exec mode) over a
    ``mindspore.dataset`` pipeline, driven on the Trial API."""

    def train(trial) -> None:
        kit: MindSporeKit = trial.kit
        ms, cfg = kit.ms, trial.config
        x_tr, y_tr, x_va, y_va = _arrays(workload)
        net = trial.prepare(workload.model())
        opt = trial.optimizer(net.trainable_params())
        step_fn = _train_step(kit, workload, net, opt)
        batches = _pipeline(kit, x_tr, y_tr, int(cfg["batch_size"]))
        net.set_train(True)

        def step():
            epoch, xb, yb = next(batches)
            kit.last = step_fn(xb, yb)
            return epoch, kit.last, int(xb.shape[0])

        def evaluate() -> float:
            net.set_train(False)
            outs = [net(ms.Tensor(x_va[i : i + 4096])).astype(ms.float32)
                    for i in range(0, len(x_va), 4096)]  # fmt: skip
            net.set_train(True)
            return _metric(workload.metric, ms.ops.cat(outs) if len(outs) > 1 else outs[0], ms.Tensor(y_va))

        drive(trial, step, evaluate)

    return train


def _arrays(workload):
    import numpy as np

    x_tr, y_tr, x_va, y_va = (np.asarray(a) for a in workload.data())
    loss = workload.loss
    regression = loss == "mse"

    def feats(a):
        return a.astype(np.float32) if a.dtype.kind == "f" and a.dtype != np.float32 else a

    def targets(a):
        if regression or a.dtype.kind == "f":
            return a.astype(np.float32)
        return a.astype(np.int32) if loss == "cross_entropy" else a

    return feats(x_tr), targets(y_tr), feats(x_va), targets(y_va)


def _pipeline(kit: MindSporeKit, x, y, batch_size: int):
    """``(epoch, x, y)`` batches of this rank from a ``mindspore.dataset`` pipeline: reshuffled
    every epoch, sharded across ranks, ``dataset_workers`` threads."""
    ds = kit.ms.dataset
    workers = int(kit.config.get("dataset_workers", 1))
    shard = {"num_shards": kit.world, "shard_id": kit.rank} if kit.world > 1 else {}
    data = ds.GeneratorDataset(_ArraySource(x, y), ["x", "y"], shuffle=True,
                               num_parallel_workers=workers, python_multiprocessing=False,
                               **shard)  # fmt: skip
    # Equal steps on every rank (collectives): drop the short last batch when sharded.
    data = data.batch(batch_size, drop_remainder=kit.world > 1, num_parallel_workers=workers)
    it = data.create_tuple_iterator(num_epochs=-1)
    epoch = 0
    while True:
        for xb, yb in it:
            yield epoch, xb, yb
        epoch += 1


def _loss_fn(loss):
    from mindspore import nn

    if callable(loss):
        return loss
    if loss == "cross_entropy":
        return nn.CrossEntropyLoss()
    if loss == "mse":
        return nn.MSELoss()
    raise InvalidConfig(f"workload loss {loss!r} is not known (use a callable)")


def _metric(metric, out, y) -> float:
    if callable(metric):
        return float(metric(out, y))
    o, t = out.asnumpy(), y.asnumpy()
    if metric == "accuracy":
        return float((o.argmax(axis=1) == t).mean())
    if metric == "mse":
        return float(((o.astype("float64") - t.reshape(o.shape)) ** 2).mean())
    raise InvalidConfig(f"workload metric {metric!r} is not known (use a callable)")


def _train_step(kit: MindSporeKit, workload, net, opt):
    ms, cfg = kit.ms, kit.config
    from mindspore import nn, ops

    loss_fn = _loss_fn(workload.loss)
    low = cfg.get("precision", "fp32") != "fp32"
    scaler = ms.amp.DynamicLossScaler(2.0**16, 2, 1000) if cfg.get("precision") == "fp16" else None
    reducer = (nn.DistributedGradReducer(opt.parameters, mean=True, degree=kit.world)
               if kit.strategy == "data_parallel" and kit.world > 1 else None)  # fmt: skip

    def forward(x, y):
        out = net(x)
        loss = loss_fn(out.astype(ms.float32) if low else out, y)
        return scaler.scale(loss) if scaler is not None else loss

    grad_fn = ms.value_and_grad(forward, None, opt.parameters)

    def step(x, y):
        loss, grads = grad_fn(x, y)
        if reducer is not None:
            grads = reducer(grads)
        if scaler is None:
            return ops.depend(loss, opt(grads))
        loss, grads = scaler.unscale(loss), scaler.unscale(grads)
        finite = ms.amp.all_finite(grads)
        if finite:  # skip the update on overflow; the scaler lowers the scale
            loss = ops.depend(loss, opt(grads))
        scaler.adjust(finite)
        return loss

    return ms.jit(step) if cfg.get("exec_mode", "pynative") == "graph" else step


if __name__ == "__main__":  # an msrun rank: python _mindspore.py REQUEST.json RESULT.json
    from perftune.backends._mindspore import _rank_main as _main

    sys.exit(_main(sys.argv[1], sys.argv[2]))
