"""PyTorch backend: runs in a trial worker, imports torch when used.

Devices: the CPU, CUDA GPUs, Apple MPS, Intel XPU, Ascend NPUs (``torch_npu``) and TPUs
(``torch_xla``), each found only if its package is installed (:mod:`._torch_accel`).

Strategies (a :class:`~tuner.backends._layout.ParallelLayout`, validated before anything runs):
``single``; ``dp`` (DataParallel over ``world_size`` GPUs in one process); ``ddp``
(DistributedDataParallel over ``world_size`` forked ranks: gloo on the CPU, nccl on CUDA, hccl on
Ascend); ``fsdp`` (FSDP2 ``fully_shard`` over ``world_size`` ranks, parameters sharded per layer).
Precision: ``fp32``, ``tf32`` (CUDA matmuls), ``bf16`` autocast, ``fp16`` autocast with
GradScaler. Other knobs: ``compile`` (``torch.compile`` mode), ``channels_last``,
``dataloader_workers``/``pin_memory`` (a DataLoader instead of indexing resident tensors),
``num_threads``. ``batch_size`` is per process; the global batch is ``batch_size * world_size``.

Besides training trials, ``request.measure`` may be ``"probe"`` (the largest batch size that
fits, see :mod:`._probe`) or ``"peak"`` (a measured matmul peak for MFU on devices missing
from the peak-FLOPs table).
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import tempfile
import time
from typing import Any

from tuner.backends._base import Backend, Channel, TrialRequest, classify_exception
from tuner.backends._host import rss_peak_mb, usable_cores
from tuner.backends._layout import ParallelLayout
from tuner.backends._loop import measure
from tuner.backends._ranks import KEEPALIVE, run_ranks
from tuner.errors import InvalidConfig

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
    device_classes = ("cpu", "cuda", "mps", "xpu", "npu", "tpu")
    measures = ("converge", "throughput", "probe", "peak")

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
        from tuner.backends._torch_accel import discover

        return discover(self._versions())

    # ------------------------------------------------------------------ trials
    def run_trial(self, workload: Any, request: TrialRequest, channel: Channel) -> dict[str, Any]:
        if request.measure == "peak":
            return {"metrics": matmul_peak(request), "curves": {}, "pruned": False}
        device = device_record(request)
        layout = validate_config(request.config, device)
        if request.measure == "probe":
            return probe_batch_size(workload, request, channel, device)
        if layout.processes == 1:
            return _Trainer(workload, request, channel, layout, device, rank=0).run()
        return _run_ranks(workload, request, channel, layout, device)


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
    ``momentum``, ``beta1``/``beta2``, ``weight_decay``), exactly as trials build it: use it in
    a training script so that a tuned config means there what it meant in the sweep."""
    import torch

    name, lr = config.get("optimizer", "adam"), float(config.get("learning_rate", 1e-3))
    betas = (float(config.get("beta1", 0.9)), float(config.get("beta2", 0.999)))
    momentum = float(config.get("momentum", 0.0))
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas,
                                 weight_decay=float(config.get("weight_decay", 1e-2)))  # fmt: skip
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    raise InvalidConfig(f"optimizer {name!r} is not supported")


def _run_ranks(workload: Any, request: TrialRequest, channel: Channel, layout: ParallelLayout,
               device: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """``layout.processes`` ranks (see :func:`~tuner.backends._ranks.run_ranks`) meeting in a
    file store: DDP or FSDP."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    store_dir = tempfile.mkdtemp(prefix="perftune-ranks-")
    store_path = os.path.join(store_dir, "store")

    def rank(r: int, ch: Channel | None) -> dict[str, Any]:
        trainer = _Trainer(workload, request, ch, layout, device, rank=r, store=store_path)
        KEEPALIVE.append(trainer)
        return trainer.run()

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


class _Trainer:
    """One rank's training loop, for both measures."""

    def __init__(self, workload, request: TrialRequest, channel: Channel | None, layout: ParallelLayout,
                 device: dict[str, Any], *, rank: int, store: str | None = None) -> None:  # fmt: skip
        import torch

        from tuner.backends._torch_accel import accelerator

        self.t_start = time.perf_counter()
        self.torch = torch
        self.workload, self.req, self.channel = workload, request, channel
        self.cfg, self.layout = request.config, layout
        self.rank, self.world = rank, layout.processes
        self.collective_eval = layout.strategy == "fsdp"  # every rank holds a shard of the model
        threads = int(self.cfg.get("num_threads") or max(1, usable_cores() // self.world))
        torch.set_num_threads(threads)
        torch.manual_seed(request.seed)
        self.acc = accelerator(layout.device_kind)
        self.replicas = layout.world_size if layout.strategy == "dp" else 1
        index = _device_index(request, device, rank)
        self.device_indices = [_device_index(request, device, r) for r in range(layout.devices_used)]
        self.acc.set_device(index)
        self.device = self.acc.device(index)
        self.acc.reset_peak_memory()
        if layout.device_kind == "cuda":
            tf32 = self.cfg.get("precision") == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if self.world > 1:
            import datetime

            import torch.distributed as dist

            # The small control collectives (_agree, _loss_value) use CPU tensors: gloo for them.
            backend = "gloo" if layout.device_kind == "cpu" else f"cpu:gloo,{layout.dist_backend}"
            dist.init_process_group(
                backend,
                store=dist.FileStore(store, self.world),
                rank=rank,
                world_size=self.world,
                timeout=datetime.timedelta(seconds=max(60.0, request.timeout_s)),
            )
        self.rss_start = rss_peak_mb()
        self.energy = _open_energy(layout.device_kind, self.device_indices) if rank == 0 else None

    # -- setup
    def _tensors(self, device, train_device=None):
        """The workload's arrays as tensors on ``device`` (the training pair on
        ``train_device`` if given: the host, for a DataLoader)."""
        torch = self.torch
        x_tr, y_tr, x_va, y_va = self.workload.data()

        def as_t(a, floating, dev=device):
            t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
            if floating and not t.is_floating_point():
                t = t.float()
            return t.to(dev)

        # Integer labels stay integers (class indices) unless the loss is MSE; float targets
        # stay floats. A callable loss gets the targets as the data gives them.
        regression = self.workload.loss == "mse"
        train = train_device or device
        return (as_t(x_tr, True, train), as_t(y_tr, regression, train),
                as_t(x_va, True), as_t(y_va, regression))  # fmt: skip

    def _loss_fn(self):
        F = self.torch.nn.functional
        loss = self.workload.loss
        if callable(loss):
            return loss
        if loss == "cross_entropy":
            return F.cross_entropy
        if loss == "mse":
            return F.mse_loss
        raise InvalidConfig(f"workload loss {loss!r} is not known (use a callable)")

    def _metric(self, out, y) -> float:
        metric = self.workload.metric
        if callable(metric):
            return float(metric(out, y))
        if metric == "accuracy":
            return float((out.argmax(dim=1) == y).float().mean().item())
        if metric == "mse":
            return float(self.torch.nn.functional.mse_loss(out.float(), y.float()).item())
        raise InvalidConfig(f"workload metric {metric!r} is not known (use a callable)")

    def _autocast(self):
        precision, torch = self.cfg.get("precision", "fp32"), self.torch
        if precision in ("fp32", "tf32"):  # tf32 is a matmul setting, made in __init__
            return contextlib.nullcontext()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        return torch.autocast(self.acc.autocast_device_type, dtype=dtype)

    def _sync(self) -> None:
        self.acc.synchronize()

    def _agree(self, flag: bool) -> bool:
        """Rank 0's decision, made the same on every rank (a no-op with one process)."""
        if self.world == 1:
            return flag
        t = self.torch.tensor([1 if flag else 0], dtype=self.torch.int32)
        self.torch.distributed.broadcast(t, src=0)
        return bool(t.item())

    def _loss_value(self, loss) -> float:
        """The loss as a float; NaN on every rank if it is not finite on any rank (so that all
        ranks raise :class:`Diverged` together)."""
        value = float(loss.detach().float().item())
        if self.world > 1:
            bad = not math.isfinite(value)
            t = self.torch.tensor([1 if bad else 0], dtype=self.torch.int32)
            self.torch.distributed.all_reduce(t, op=self.torch.distributed.ReduceOp.MAX)
            if t.item():
                return math.nan
        return value

    def _broadcast_int(self, value: int) -> int:
        if self.world == 1:
            return value
        t = self.torch.tensor([value], dtype=self.torch.int64)
        self.torch.distributed.broadcast(t, src=0)
        return int(t.item())

    def _batches(self, n: int, bs: int, epoch_seed: int):
        """Endless stream of this rank's index batches: shuffled per epoch, the same
        permutation on every rank, each global batch split across ranks."""
        torch = self.torch
        gen = torch.Generator().manual_seed(epoch_seed)
        gb = bs * self.world
        epoch = 0
        while True:
            perm = torch.randperm(n, generator=gen)
            for i in range(0, n, gb):
                chunk = perm[i : i + gb]
                if len(chunk) < self.world:
                    continue
                yield epoch, chunk[self.rank :: self.world]
            epoch += 1

    def _loader(self, x_tr, y_tr, bs: int):
        """``(epoch, x, y)`` batches on the device: indexing tensors resident on the device, or,
        with ``dataloader_workers``, a DataLoader (worker processes, optional pinned memory)
        over host tensors, the same batches in the same order."""
        cfg, torch = self.cfg, self.torch
        workers = int(cfg.get("dataloader_workers") or 0)
        if not workers:
            for epoch, idx in self._batches(len(x_tr), bs, self.req.seed):
                yield epoch, x_tr[idx], y_tr[idx]
            return
        pin = bool(cfg.get("pin_memory"))
        epochs = (e for e, _ in self._batches(len(x_tr), bs, self.req.seed))
        sampler = (idx.tolist() for _, idx in self._batches(len(x_tr), bs, self.req.seed))
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x_tr, y_tr), batch_sampler=sampler, num_workers=workers,
            pin_memory=pin, prefetch_factor=2, persistent_workers=False,
            multiprocessing_context="fork")  # fmt: skip
        self.keep_loader = loader
        for (xb, yb), epoch in zip(loader, epochs, strict=False):
            yield epoch, xb.to(self.device, non_blocking=pin), yb.to(self.device, non_blocking=pin)

    # -- run
    def _model(self):
        torch, cfg, layout = self.torch, self.cfg, self.layout
        model = self.workload.model().to(self.device)
        if cfg.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        self.eval_model = model
        if layout.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=None if layout.device_kind == "cpu" else [self.device.index])
        elif layout.strategy == "fsdp":
            model = _fully_shard(model, self.acc.mesh_device_type, self.world)
            self.eval_model = model
        elif layout.strategy == "dp":
            model = torch.nn.DataParallel(model, device_ids=self.device_indices)
        mode = cfg.get("compile", "none")
        if mode != "none":
            model = torch.compile(model, mode=None if mode == "default" else mode)
        return model

    def run(self) -> dict[str, Any]:
        torch, cfg = self.torch, self.cfg
        try:
            workers = int(cfg.get("dataloader_workers") or 0)
            # With a DataLoader the training set stays on the host; otherwise it lives on the device.
            x_tr, y_tr, x_va, y_va = self._tensors(self.device, "cpu" if workers else None)
            if cfg.get("channels_last") and x_tr.dim() == 4:
                x_tr = x_tr.contiguous(memory_format=torch.channels_last)
                x_va = x_va.contiguous(memory_format=torch.channels_last)
            model = self._model()
            opt = make_optimizer(model.parameters(), cfg)
            self.keep = (model, opt, x_tr, y_tr, x_va, y_va)  # see KEEPALIVE
            loss_fn = self._loss_fn()
            bs = int(cfg.get("batch_size", 32)) * self.replicas  # dp splits one batch on GPUs
            self.global_bs = bs * self.world
            batches = self._loader(x_tr, y_tr, bs)
            autocast = self._autocast()
            # fp16 needs loss scaling; bf16 and fp32 do not.
            scaler = torch.amp.GradScaler(self.acc.autocast_device_type) if cfg.get("precision") == "fp16" else None
            model.train()

            def step():
                epoch, xb, yb = next(batches)
                with autocast:
                    loss = loss_fn(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    opt.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                return epoch, loss, len(xb)

            extra = {"devices_used": self.layout.devices_used}
            if self.layout.strategy == "fsdp":  # the share of the parameters this rank holds
                local = sum(p.to_local().numel() for p in model.parameters())
                extra["param_shard_fraction"] = local / sum(p.numel() for p in model.parameters())
            self.setup_s = time.perf_counter() - self.t_start
            return measure(self, step, lambda: self._evaluate(x_va, y_va),
                           global_batch_size=self.global_bs,
                           world_size=self.layout.world_size, **extra)  # fmt: skip
        finally:
            if self.energy is not None:
                self.energy.close()
            if self.world > 1 and torch.distributed.is_initialized():
                with contextlib.suppress(Exception):
                    torch.distributed.destroy_process_group()

    def _memory(self) -> dict[str, float]:
        torch = self.torch
        peak = rss_peak_mb()
        out = {"peak_rss_mb": peak, "rss_growth_mb": max(0.0, peak - self.rss_start)}
        device_peak = self.acc.peak_memory_bytes()
        if device_peak is not None:
            out["peak_device_memory_mb"] = device_peak / 2**20
        if self.world > 1:
            gathered: list[Any] = [None] * self.world
            torch.distributed.all_gather_object(gathered, out)
            out = {k: float(sum(g[k] for g in gathered)) for k in out}
        return out

    def _evaluate(self, x_va, y_va) -> float:
        torch, model = self.torch, self.eval_model
        model.eval()
        outs = []
        with torch.no_grad(), self._autocast():
            for i in range(0, len(x_va), 4096):
                outs.append(model(x_va[i : i + 4096]).float())
        model.train()
        return self._metric(torch.cat(outs), y_va)


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
        from tuner.backends._energy import open_meter
    except ImportError:  # pragma: no cover
        return None
    try:
        return open_meter(kind, indices)
    except Exception:  # noqa: BLE001 - energy is optional; a broken reader must not fail a trial
        return None


# ---------------------------------------------------------------- batch-size probe, matmul peak
def probe_batch_size(workload: Any, request: TrialRequest, channel: Channel,
                     device: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The largest per-process batch size that trains here (one device, the request's config),
    by doubling then bisection (:func:`~tuner.backends._probe.find_max_batch_size`). Each
    attempt runs two real training steps and is reported on ``channel`` (``step`` = batch size,
    ``value`` 1 fitted / 0 out of memory) as it ends, so that a probe the kernel kills still
    leaves what it learnt. Config keys ``probe_max`` and ``probe_margin`` bound it."""
    import gc

    from tuner.backends._probe import find_max_batch_size
    from tuner.backends._torch_accel import accelerator

    torch, cfg = _torch(), dict(request.config)
    high, margin = int(cfg.pop("probe_max", 4096)), float(cfg.pop("probe_margin", 0.1))
    single = {**cfg, "parallel_strategy": "single", "world_size": 1}
    layout = validate_config(single, device)
    trainer = _Trainer(workload, TrialRequest(**{**request.to_dict(), "config": single}), None,
                       layout, device, rank=0)  # fmt: skip
    acc = accelerator(layout.device_kind)
    x_tr, y_tr, _, _ = trainer._tensors(trainer.device)
    loss_fn = trainer._loss_fn()
    gen = torch.Generator().manual_seed(request.seed)

    def fits(bs: int) -> bool:
        model = opt = None
        try:
            model = trainer._model()
            opt = make_optimizer(model.parameters(), single)
            for _ in range(2):
                idx = torch.randint(0, len(x_tr), (bs,), generator=gen)
                with trainer._autocast():
                    loss = loss_fn(model(x_tr[idx]), y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            acc.synchronize()
            ok = True
        except Exception as exc:  # noqa: BLE001 - OOM is the answer; anything else propagates
            if classify_exception(exc) != "oom":
                raise
            ok = False
        finally:
            del model, opt
            gc.collect()
            acc.empty_cache()
        channel.report(bs, 1.0 if ok else 0.0)
        return ok

    result = find_max_batch_size(fits, start=int(cfg.get("batch_size", 32)), max_val=high,
                                 margin=margin)  # fmt: skip
    metrics = {"max_batch_size": result.max_batch_size, "largest_fit": result.largest_fit,
               "first_oom": result.first_oom, "limited_by": result.limited_by,
               "attempts": len(result.tried)}  # fmt: skip
    return {"metrics": metrics, "curves": {"probe": [[b, int(ok)] for b, ok in result.tried]},
            "pruned": False}  # fmt: skip


def matmul_peak(request: TrialRequest) -> dict[str, Any]:
    """Achieved FLOP/s of a large square matmul in the config's precision: the MFU denominator
    for devices missing from the peak table (the CPU always). Best of several timed runs, as
    a peak should be; ``num_threads`` defaults to every usable core."""
    from tuner.backends._torch_accel import accelerator

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
