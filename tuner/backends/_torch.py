"""PyTorch backend: runs in a trial worker, imports torch when used.

Devices: the CPU, CUDA GPUs, Apple MPS, Intel XPU, Ascend NPUs (``torch_npu``) and TPUs
(``torch_xla``), each found only if its package is installed (:mod:`._torch_accel`).

Strategies (a :class:`~perftune.backends._layout.ParallelLayout`, validated before anything runs):
``single``; ``dp`` (DataParallel over ``world_size`` GPUs in one process); ``ddp``
(DistributedDataParallel over ``world_size`` forked ranks: gloo on the CPU, nccl on CUDA, hccl on
Ascend); ``fsdp`` (FSDP2 ``fully_shard`` over ``world_size`` ranks, parameters sharded per layer).
Precision: ``fp32``, ``tf32`` (CUDA matmuls), ``bf16`` autocast, ``fp16`` autocast with
GradScaler. Other knobs: ``compile`` (``torch.compile`` mode), ``channels_last``,
``dataloader_workers``/``pin_memory`` (a DataLoader instead of indexing resident tensors),
``num_threads``. ``batch_size`` is per process; the global batch is ``batch_size * world_size``.

Every trial runs a training function on a :class:`~perftune.trial.Trial` whose framework part is
a :class:`TorchKit` (one per rank): the user's function, or :func:`builtin_loop` for a
:class:`~perftune.workload.Workload` (perftune's own loop, written on the same public API).
Besides training trials, ``request.measure`` may be ``"probe"`` (the largest batch size that
fits, see :func:`perftune.trial._run.probe`) or ``"peak"`` (a measured matmul peak for MFU on
devices missing from the peak-FLOPs table).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import tempfile
import time
from typing import Any

from perftune.backends._base import Backend, Channel, TrialRequest
from perftune.backends._host import rss_peak_mb, usable_cores
from perftune.backends._layout import ParallelLayout
from perftune.backends._ranks import KEEPALIVE, run_ranks
from perftune.errors import InvalidConfig, UsageError
from perftune.trial._kit import Kit
from perftune.trial._run import as_function, drive, probe, run_rank

_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
_COMPILE = ("none", "default", "max-autotune")
_COMMON = ("batch_size", "learning_rate", "optimizer", "momentum", "beta1", "beta2",
           "weight_decay", "parallel_strategy", "world_size", "precision", "compile",
           "channels_last", "num_threads", "dataloader_workers", "pin_memory")  # fmt: skip
#: What each device class can run (checked against search spaces before a sweep starts).
_STRATEGIES = {"cpu": ["single", "ddp", "fsdp"], "cuda": ["single", "dp", "ddp", "fsdp"],
               "npu": ["single", "ddp", "fsdp"], "xpu": ["single", "ddp", "fsdp"],
               "tpu": ["single", "ddp"], "mps": ["single"]}  # fmt: skip
_PRECISIONS = {"cpu": ["fp32", "bf16"], "cuda": ["fp32", "tf32", "bf16", "fp16"],
               "npu": ["fp32", "bf16", "fp16"], "xpu": ["fp32", "bf16", "fp16"],
               "tpu": ["fp32", "bf16"], "mps": ["fp32", "bf16", "fp16"]}  # fmt: skip


class TorchBackend(Backend):
    name = "torch"
    module = "torch"
    multi_process_strategies = ("ddp", "fsdp")

    @staticmethod
    def builtin_loop(workload: Any):
        return builtin_loop(workload)
    device_classes = ("cpu", "cuda", "mps", "xpu", "npu", "tpu")
    measures = ("converge", "throughput", "probe", "peak", "infer", "fit")

    @classmethod
    def capabilities(cls, device_class: str) -> dict[str, Any]:
        return {
            "params": list(_COMMON),
            "choices": {
                "optimizer": list(_OPTIMIZERS),
                "parallel_strategy": _STRATEGIES[device_class],
                "precision": _PRECISIONS[device_class],
                "compile": list(_COMPILE),
                "channels_last": [False, True],
                "pin_memory": [False, True],
            },
        }

    @classmethod
    def inference_capabilities(cls, device_class: str) -> dict[str, Any]:
        from perftune.backends import _torch_infer

        return _torch_infer.capabilities(device_class)

    @classmethod
    def check_config(cls, config: dict[str, Any], device: dict[str, Any]) -> None:
        validate_config(config, device)

    def preload(self) -> dict[str, str]:
        import torch  # import only: no device initialised, safe to fork after
        import torch.distributed  # noqa: F401
        import torch.nn.parallel  # noqa: F401

        # Building an optimizer the first time imports torch._dynamo and friends (~1 s): pay it
        # once here rather than in every forked trial. A 1-element CPU tensor starts no threads.
        p = torch.zeros(1, requires_grad=True)
        for opt in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop,
                    torch.optim.Adagrad):  # fmt: skip
            opt([p], lr=0.1)

        return self._versions()

    def _versions(self) -> dict[str, str]:
        import torch

        return {"torch": str(torch.__version__), "python": platform.python_version()}

    def devices(self) -> list[dict[str, Any]]:
        from perftune.backends._torch_accel import discover

        return discover(self._versions())

    # ------------------------------------------------------------------ trials
    def run_trial(self, workload: Any, request: TrialRequest, channel: Channel) -> dict[str, Any]:
        if request.measure == "peak":
            return {"metrics": matmul_peak(request), "curves": {}, "pruned": False}
        if request.measure in ("infer", "fit"):
            from perftune.backends import _torch_infer

            if request.measure == "fit":
                return _torch_infer.fit(self, workload, request, channel)
            return _torch_infer.run_inference(workload, request)
        device = device_record(request)
        layout = validate_config(request.config, device)
        fn = as_function(workload, builtin_loop)
        description = workload.describe()
        if request.measure == "probe":  # one device, one process, batch sizes in turn
            single = {**request.config, "parallel_strategy": "single", "world_size": 1}
            kit = TorchKit(single, validate_config(single, device), device, request)
            return probe(fn, kit, TrialRequest(**{**request.to_dict(), "config": single}), channel,
                         description)  # fmt: skip
        if layout.processes == 1:
            return run_rank(fn, TorchKit(request.config, layout, device, request), request, channel,
                            description)  # fmt: skip
        return _run_ranks(fn, request, channel, layout, device, description)

    def standalone_kit(self, request: TrialRequest) -> TorchKit:
        device = device_record(request)
        rank, world, local = env_ranks()
        config = dict(request.config)
        if world > 1 and config.get("parallel_strategy", "single") == "single":
            config.update(parallel_strategy="ddp", world_size=world)  # the launcher started them
        layout = validate_config(config, device)
        if layout.processes != world:
            raise UsageError(
                f"the config runs {layout.processes} process(es) ({layout.strategy}) but this is "
                f"{'one of ' + str(world) if world > 1 else 'a single process'}: run it with "
                f"trial.run(train) (perftune starts the ranks) or under torchrun "
                f"--nproc-per-node {layout.processes}")  # fmt: skip
        return TorchKit(config, layout, device, request, rank=rank, local_rank=local,
                        init="env" if world > 1 else None)  # fmt: skip


def env_ranks() -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from a launcher's environment (torchrun sets ``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``); ``(0, 1, 0)`` in a plain process."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    return rank, world, int(os.environ.get("LOCAL_RANK", rank))


def device_record(request: TrialRequest) -> dict[str, Any]:
    """The discovered record of the trial's device (sent by the sweep), or a minimal CPU-safe one
    for direct use: capability flags absent count as unsupported (except bf16 on the CPU)."""
    if request.device_info:
        return dict(request.device_info)
    kind = request.device.split(":", 1)[0]
    return {"kind": kind, "count": 1, "cores": usable_cores(), "bf16": kind == "cpu"}


def validate_config(cfg: dict[str, Any], device: dict[str, Any] | str) -> ParallelLayout:
    """Reject what this backend cannot honour on ``device`` (a discovered record, or a device
    string for the CPU); return the config's :class:`ParallelLayout`. Raises
    :class:`InvalidConfig` naming the field."""
    if isinstance(device, str):
        device = {"kind": device.split(":", 1)[0], "count": 1, "cores": usable_cores(),
                  "bf16": device.startswith("cpu")}  # fmt: skip
    layout = ParallelLayout.from_config(cfg, device)
    if cfg.get("optimizer", "adam") not in _OPTIMIZERS:
        raise InvalidConfig(f"optimizer {cfg.get('optimizer')!r} is not supported")
    if cfg.get("compile", "none") not in _COMPILE:
        raise InvalidConfig(f"compile {cfg.get('compile')!r} is not a torch.compile mode")
    if layout.strategy == "fsdp" and cfg.get("compile", "none") != "none":
        raise InvalidConfig("compile with parallel_strategy fsdp is not supported (compile per layer)")
    workers = cfg.get("dataloader_workers", 0)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise InvalidConfig(f"dataloader_workers {workers!r}: must be an integer >= 0")
    if cfg.get("pin_memory") and layout.device_kind == "cpu":
        raise InvalidConfig("pin_memory: only meaningful when training on an accelerator")
    if cfg.get("pin_memory") and not workers:
        raise InvalidConfig("pin_memory needs dataloader_workers >= 1 (a DataLoader)")
    threads = cfg.get("num_threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise InvalidConfig(f"num_threads {threads!r}: must be an integer >= 1")
    return layout


def make_optimizer(params, config: dict[str, Any]):
    """The ``torch.optim`` optimizer a perftune config names (``optimizer``, ``learning_rate``,
    ``momentum``, ``beta1``/``beta2``, ``weight_decay``), exactly as trials build it
    (``trial.optimizer(params)`` calls this)."""
    import torch

    name, lr = config.get("optimizer", "adam"), float(config.get("learning_rate", 1e-3))
    betas = (float(config.get("beta1", 0.9)), float(config.get("beta2", 0.999)))
    momentum = float(config.get("momentum", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "adamw":
        weight_decay = float(config.get("weight_decay", 1e-2))
        return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    raise InvalidConfig(f"optimizer {name!r} is not supported")


def _run_ranks(fn, request: TrialRequest, channel: Channel, layout: ParallelLayout,
               device: dict[str, Any], description: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``layout.processes`` ranks (see :func:`~perftune.backends._ranks.run_ranks`) meeting in a
    file store, each running ``fn`` on its own :class:`TorchKit`: DDP or FSDP."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    store_dir = tempfile.mkdtemp(prefix="perftune-ranks-")
    store_path = os.path.join(store_dir, "store")

    def rank(r: int, ch: Channel | None) -> dict[str, Any]:
        kit = TorchKit(request.config, layout, device, request, rank=r, store=store_path)
        KEEPALIVE.append(kit)
        return run_rank(fn, kit, request, ch, description)

    try:
        return run_ranks(layout.processes, lambda r: rank(r, None), lambda: rank(0, channel),
                         channel, f"{layout.strategy} rank process")  # fmt: skip
    finally:
        with contextlib.suppress(OSError):
            os.remove(store_path)
            os.rmdir(store_dir)


def _device_index(request: TrialRequest, device: dict[str, Any], rank: int) -> int:
    """Physical index of rank ``rank``'s device: ``kind:N`` starts at N; a heterogeneous
    record lists its ``indices``."""
    _, _, idx = request.device.partition(":")
    indices = device.get("indices") or list(range(int(device.get("count", 1))))
    start = indices.index(int(idx)) if idx.isdigit() and int(idx) in indices else 0
    return int(indices[min(start + rank, len(indices) - 1)])


class TorchKit(Kit):
    """One process's PyTorch for a trial: threads, seed, device, TF32 and the process group set
    up for the config; the clock's collectives; the user's helpers.

    ``store``: a ``FileStore`` path the ranks perftune forked meet in; ``init="env"``: a
    launcher's ranks (torchrun), whose process group is joined from the environment when first
    needed (or taken as is if the script made it)."""

    framework = "torch"

    def __init__(self, config: dict[str, Any], layout: ParallelLayout, device: dict[str, Any],
                 request: TrialRequest, *, rank: int = 0, local_rank: int | None = None,
                 store: str | None = None, init: str | None = None) -> None:  # fmt: skip
        import torch

        from perftune.backends._torch_accel import accelerator

        super().__init__(config, rank=rank, world=layout.processes,
                         local_rank=rank if local_rank is None else local_rank)  # fmt: skip
        self.torch, self.layout = torch, layout
        threads = int(config.get("num_threads") or max(1, usable_cores() // self.world))
        torch.set_num_threads(threads)
        self.applied.add("num_threads")
        torch.manual_seed(request.seed)
        self.acc = accelerator(layout.device_kind)
        index = _device_index(request, device, self.local_rank)
        self.device_indices = [_device_index(request, device, r) for r in range(layout.devices_used)]
        self.acc.set_device(index)
        self.device = self.acc.device(index)
        self.acc.reset_peak_memory()
        if layout.device_kind == "cuda":
            tf32 = config.get("precision") == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self._init, self._timeout = init, max(60.0, float(request.timeout_s))
        if self.world > 1 and store is not None:
            import torch.distributed as dist

            dist.init_process_group(self._dist_backend(), store=dist.FileStore(store, self.world),
                                    rank=rank, world_size=self.world, timeout=self._timedelta())  # fmt: skip
        self.rss_start = rss_peak_mb()
        self.energy = _open_energy(layout.device_kind, self.device_indices) if rank == 0 else None
        self.models: list[Any] = []

    def _dist_backend(self) -> str:
        # The small control collectives (broadcast_int, loss_value) use CPU tensors: gloo for them.
        kind = self.layout.device_kind
        return "gloo" if kind == "cpu" else f"cpu:gloo,{self.layout.dist_backend}"

    def _timedelta(self):
        import datetime

        return datetime.timedelta(seconds=self._timeout)

    def _group(self):
        """``torch.distributed``, its process group joined (a launcher's ranks: from the
        environment, unless the script already did)."""
        dist = self.torch.distributed
        if not dist.is_initialized():
            dist.init_process_group(self._dist_backend(), init_method="env://", rank=self.rank,
                                    world_size=self.world, timeout=self._timedelta())  # fmt: skip
        return dist

    # -- the clock's collectives
    def sync(self) -> None:
        self.acc.synchronize()

    def broadcast_int(self, value: int) -> int:
        if self.world == 1:
            return int(value)
        t = self.torch.tensor([int(value)], dtype=self.torch.int64)
        self._group().broadcast(t, src=0)
        return int(t.item())

    def loss_value(self, loss) -> float:
        """The loss as a float; NaN on every rank if it is not finite on any rank."""
        value = float(loss.detach().float().item()) if hasattr(loss, "detach") else float(loss)
        if self.world > 1:
            t = self.torch.tensor([0 if math.isfinite(value) else 1], dtype=self.torch.int32)
            self._group().all_reduce(t, op=self.torch.distributed.ReduceOp.MAX)
            if t.item():
                return math.nan
        return value

    def memory(self, gather: bool = True) -> dict[str, float]:
        peak = rss_peak_mb()
        out = {"peak_rss_mb": peak, "rss_growth_mb": max(0.0, peak - self.rss_start)}
        device_peak = self.acc.peak_memory_bytes()
        if device_peak is not None:
            out["peak_device_memory_mb"] = device_peak / 2**20
        if self.world > 1 and gather:
            gathered: list[Any] = [None] * self.world
            self._group().all_gather_object(gathered, out)
            out = {k: float(sum(g[k] for g in gathered)) for k in out}
        return out

    def extra_metrics(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"devices_used": self.layout.devices_used,
                                 "world_size": self.layout.world_size}  # fmt: skip
        if self.layout.strategy == "fsdp" and self.models:  # the share of the parameters held here
            params = list(self.models[-1].parameters())
            local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
            extra["param_shard_fraction"] = local / max(1, sum(p.numel() for p in params))
        return extra

    @property
    def replicas(self) -> int:
        return self.layout.world_size if self.layout.strategy == "dp" else 1

    def empty_cache(self) -> None:
        self.acc.empty_cache()

    def close(self) -> None:
        if self.energy is not None:
            self.energy.close()
            self.energy = None
        dist = self.torch.distributed
        if self.world > 1 and self._init is None and dist.is_initialized():
            with contextlib.suppress(Exception):
                dist.destroy_process_group()

    # -- the user's helpers
    def prepare(self, model):
        """On the device, channels_last, then DDP / FSDP2 / DataParallel, then torch.compile."""
        torch, cfg, layout = self.torch, self.config, self.layout
        model = model.to(self.device)
        if cfg.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        if cfg.get("precision", "fp32") in ("bf16", "fp16"):
            model.forward = _autocast_forward(model.forward, self.autocast)
        if layout.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            self._group()
            model = DDP(model, device_ids=None if layout.device_kind == "cpu" else [self.device.index])
        elif layout.strategy == "fsdp":
            self._group()
            model = _fully_shard(model, self.acc.mesh_device_type, self.world)
        elif layout.strategy == "dp":
            model = torch.nn.DataParallel(model, device_ids=self.device_indices)
        self.models.append(model)
        mode = cfg.get("compile", "none")
        if mode != "none":
            model = torch.compile(model, mode=None if mode == "default" else mode)
        return model

    def optimizer(self, params=None):
        if params is None:
            if not self.models:
                raise UsageError("trial.optimizer(): pass the parameters (model.parameters())")
            params = self.models[-1].parameters()
        return make_optimizer(params, self.config)

    def autocast(self):
        precision, torch = self.config.get("precision", "fp32"), self.torch
        if precision in ("fp32", "tf32"):  # tf32 is a matmul setting, made at setup
            return contextlib.nullcontext()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        return torch.autocast(self.acc.autocast_device_type, dtype=dtype)

    def grad_scaler(self):
        fp16 = self.config.get("precision") == "fp16"
        return self.torch.amp.GradScaler(self.acc.autocast_device_type, enabled=fp16)

    def sampler(self, dataset, *, shuffle: bool = True, seed: int = 0):
        """This rank's share, reshuffled every epoch (a DistributedSampler whose epoch advances
        by itself with several ranks; a seeded random sampler with one)."""
        data = self.torch.utils.data
        if self.world > 1:
            return _EpochSampler(dataset, num_replicas=self.world, rank=self.rank,
                                 shuffle=shuffle, seed=seed)  # fmt: skip
        if not shuffle:
            return data.SequentialSampler(dataset)
        return data.RandomSampler(dataset, generator=self.torch.Generator().manual_seed(seed))

    def dataloader(self, dataset, *, shuffle: bool = True, seed: int = 0, **kwargs):
        cfg = self.config
        workers = int(cfg.get("dataloader_workers") or 0)
        options = {"batch_size": int(cfg.get("batch_size", 32)) * self.replicas,
                   "sampler": self.sampler(dataset, shuffle=shuffle, seed=seed),
                   "num_workers": workers, "pin_memory": bool(cfg.get("pin_memory")),
                   **({"multiprocessing_context": "fork"} if workers else {})}  # fmt: skip
        return self.torch.utils.data.DataLoader(dataset, **{**options, **kwargs})


def _autocast_forward(forward, autocast):
    """``forward`` run under ``autocast()``, its floating outputs returned in fp32 (tensors in
    tuples, lists and dicts too), so a loss computed outside the model is computed in fp32."""
    import functools

    import torch

    def fp32(out):
        if isinstance(out, torch.Tensor):
            return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
        if isinstance(out, tuple | list):
            return type(out)(fp32(o) for o in out)
        if isinstance(out, dict):
            return {k: fp32(v) for k, v in out.items()}
        return out

    @functools.wraps(forward)
    def wrapped(*args, **kwargs):
        with autocast():
            return fp32(forward(*args, **kwargs))

    return wrapped


def _epoch_sampler_class():
    import torch.utils.data

    class EpochSampler(torch.utils.data.DistributedSampler):
        """A DistributedSampler that starts a new epoch (a new shuffle) each time it is
        iterated, so a loop need not call ``set_epoch``."""

        def __iter__(self):
            it = super().__iter__()
            self.set_epoch(self.epoch + 1)
            return it

    return EpochSampler


def _EpochSampler(*args, **kwargs):  # noqa: N802 - a class made lazily (torch imported here)
    return _epoch_sampler_class()(*args, **kwargs)


# ---------------------------------------------------------------------- the built-in loop
def builtin_loop(workload: Any):
    """perftune's own training function for a :class:`~perftune.workload.Workload`: the
    workload's arrays as tensors resident on the device (or a DataLoader with
    ``dataloader_workers``), its model, loss and metric, driven on the Trial API."""

    def train(trial) -> None:
        kit: TorchKit = trial.kit
        torch, cfg = kit.torch, trial.config
        workers = int(cfg.get("dataloader_workers") or 0)
        # With a DataLoader the training set stays on the host; otherwise it lives on the device.
        x_tr, y_tr, x_va, y_va = _tensors(torch, workload, kit.device, "cpu" if workers else None)
        if cfg.get("channels_last") and x_tr.dim() == 4:
            x_tr = x_tr.contiguous(memory_format=torch.channels_last)
            x_va = x_va.contiguous(memory_format=torch.channels_last)
        model = trial.prepare(workload.model())
        eval_model = kit.models[-1] if kit.layout.strategy == "fsdp" else _unwrapped(model)
        opt = trial.optimizer(model.parameters())
        loss_fn = _loss_fn(torch, workload.loss)
        bs = int(cfg["batch_size"]) * kit.replicas  # dp splits one batch over the GPUs
        batches = _batches(torch, kit, x_tr, y_tr, bs, trial.seed, workers)
        scaler = trial.grad_scaler()
        kit.keep = (model, opt, x_tr, y_tr, x_va, y_va)  # see KEEPALIVE
        model.train()

        def step():  # the forward runs in the config's precision (trial.prepare)
            epoch, xb, yb = next(batches)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            return epoch, loss, len(xb)

        def evaluate() -> float:
            eval_model.eval()
            with torch.no_grad():
                out = torch.cat([eval_model(x_va[i : i + 4096]).float() for i in range(0, len(x_va), 4096)])
            eval_model.train()
            return _metric(torch, workload.metric, out, y_va)

        drive(trial, step, evaluate, collective_eval=kit.layout.strategy == "fsdp")

    return train


def _unwrapped(model):
    """The module under DDP/DataParallel (evaluated alone on rank 0) and torch.compile."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


def _tensors(torch, workload, device, train_device=None):
    """The workload's arrays as tensors on ``device`` (the training pair on ``train_device``
    if given: the host, for a DataLoader). Integer labels stay integers (class indices) unless
    the loss is MSE; float targets stay floats; a callable loss gets them as the data gives
    them."""
    x_tr, y_tr, x_va, y_va = workload.data()
    regression = workload.loss == "mse"

    def as_t(a, floating, dev=device):
        t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
        if floating and not t.is_floating_point():
            t = t.float()
        return t.to(dev)

    train = train_device or device
    return (as_t(x_tr, True, train), as_t(y_tr, regression, train),
            as_t(x_va, True), as_t(y_va, regression))  # fmt: skip


def _loss_fn(torch, loss):
    if callable(loss):
        return loss
    functions = {"cross_entropy": torch.nn.functional.cross_entropy, "mse": torch.nn.functional.mse_loss}
    if loss not in functions:
        raise InvalidConfig(f"workload loss {loss!r} is not known (use a callable)")
    return functions[loss]


def _metric(torch, metric, out, y) -> float:
    if callable(metric):
        return float(metric(out, y))
    if metric == "accuracy":
        return float((out.argmax(dim=1) == y).float().mean().item())
    if metric == "mse":
        return float(torch.nn.functional.mse_loss(out.float(), y.float()).item())
    raise InvalidConfig(f"workload metric {metric!r} is not known (use a callable)")


def _index_batches(torch, n: int, bs: int, seed: int, rank: int, world: int):
    """Endless ``(epoch, indices)`` of this rank: shuffled per epoch with the same permutation
    on every rank, each global batch split across ranks."""
    gen = torch.Generator().manual_seed(seed)
    gb = bs * world
    epoch = 0
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, gb):
            chunk = perm[i : i + gb]
            if len(chunk) < world:
                continue
            yield epoch, chunk[rank::world]
        epoch += 1


def _batches(torch, kit: TorchKit, x_tr, y_tr, bs: int, seed: int, workers: int):
    """``(epoch, x, y)`` batches on the device: indexing tensors resident on the device, or,
    with ``dataloader_workers``, a DataLoader (worker processes, optional pinned memory) over
    host tensors, the same batches in the same order."""
    index = _index_batches(torch, len(x_tr), bs, seed, kit.rank, kit.world)
    if not workers:
        for epoch, idx in index:
            yield epoch, x_tr[idx], y_tr[idx]
        return
    pin = bool(kit.config.get("pin_memory"))
    epochs = (e for e, _ in _index_batches(torch, len(x_tr), bs, seed, kit.rank, kit.world))
    sampler = (idx.tolist() for _, idx in index)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_tr, y_tr), batch_sampler=sampler, num_workers=workers,
        pin_memory=pin, prefetch_factor=2, persistent_workers=False,
        multiprocessing_context="fork")  # fmt: skip
    kit.keep_loader = loader
    for (xb, yb), epoch in zip(loader, epochs, strict=False):
        yield epoch, xb.to(kit.device, non_blocking=pin), yb.to(kit.device, non_blocking=pin)


def _shard_units(model) -> list:
    """The modules ``fully_shard`` gets one by one before the root: the outermost elements of
    the model's layer stacks (``nn.Sequential``, ``nn.ModuleList`` and ``nn.ModuleDict``, the
    root included: transformer blocks, residual blocks, an MLP's layers) that hold parameters,
    none of which is shared with a module outside the element (tied weights stay with the root).
    No unit contains another, so no parameter lands in two FSDP groups; what no unit covers
    (embeddings, heads, norms, a model without stacks) is the root's group. An element is a unit
    whole, never its children: ``MultiheadAttention`` reads its ``out_proj`` weights without
    calling it, so that child must not be sharded on its own."""
    from torch import nn

    stacks = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
    names: dict = {}  # parameter -> every name it has in the model
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(p, []).append(name)
    units: list = []

    def visit(module, prefix: str) -> None:
        for name, child in module.named_children():
            path = f"{prefix}{name}."
            own = [n.startswith(path) for p in child.parameters() for n in names[p]]
            if isinstance(module, stacks) and own and all(own):
                units.append(child)
            else:
                visit(child, path)

    visit(model, "")
    return units


def _fully_shard(model, mesh_device_type: str, world: int):
    """FSDP2 over a 1-D mesh of ``world`` ranks: each of :func:`_shard_units` in its own group
    (all-gathered just before it runs, freed after), then the root with the rest."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(mesh_device_type, (world,))
    for unit in _shard_units(model):
        fully_shard(unit, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def _open_energy(kind: str, indices: list[int]):
    """An energy meter for the trial's devices, or None when none is readable (never invented)."""
    try:
        from perftune.backends._energy import open_meter
    except ImportError:  # pragma: no cover
        return None
    try:
        return open_meter(kind, indices)
    except Exception:  # noqa: BLE001 - energy is optional; a broken reader must not fail a trial
        return None


# ---------------------------------------------------------------- batch-size probe, matmul peak
def matmul_peak(request: TrialRequest) -> dict[str, Any]:
    """Achieved FLOP/s of a large square matmul in the config's precision: the MFU denominator
    for devices missing from the peak table (the CPU always). Best of several timed runs, as
    a peak should be; ``num_threads`` defaults to every usable core."""
    from perftune.backends._torch_accel import accelerator

    torch, cfg = _torch(), request.config
    kind = request.device.split(":", 1)[0]
    acc = accelerator(kind)
    torch.set_num_threads(int(cfg.get("num_threads") or usable_cores()))
    index = _device_index(request, device_record(request), 0)
    acc.set_device(index)
    device = acc.device(index)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.get("precision", "fp32"), torch.float32)
    if kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.get("precision") == "tf32"
    n = int(cfg.get("peak_n") or (1024 if kind == "cpu" else 8192))
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best, reps = 0.0, 1
    deadline = time.perf_counter() + float(cfg.get("peak_seconds", 1.0))
    while time.perf_counter() < deadline:
        acc.synchronize()
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        acc.synchronize()
        dt = time.perf_counter() - t
        best = max(best, 2.0 * n**3 * reps / dt)
        if dt < 0.05:
            reps *= 2
    return {"peak_flops": best, "matmul_n": n, "precision": cfg.get("precision", "fp32")}


def _torch():
    import torch

    return torch
