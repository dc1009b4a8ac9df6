"""PyTorch backend: runs in a trial worker, imports torch when used.

Strategies: ``single`` (one process), ``ddp`` (DistributedDataParallel over ``world_size``
forked processes; gloo on the CPU, nccl on CUDA) and ``dp`` (DataParallel, CUDA). Precision: ``fp32``,
``tf32`` (CUDA matmuls), ``bf16`` autocast, ``fp16`` autocast with GradScaler. ``batch_size`` is
per process; the global batch is ``batch_size * world_size``.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import tempfile
import time
from typing import Any

from tuner.backends._base import Backend, Channel, TrialRequest
from tuner.backends._host import cpu_device, rss_peak_mb, usable_cores
from tuner.backends._loop import measure
from tuner.backends._ranks import KEEPALIVE, run_ranks
from tuner.errors import InvalidConfig

_OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
_COMMON = ("batch_size", "learning_rate", "optimizer", "momentum", "beta1", "beta2",
           "weight_decay", "parallel_strategy", "world_size", "precision")  # fmt: skip


class TorchBackend(Backend):
    name = "torch"
    module = "torch"
    device_classes = ("cpu", "cuda")

    @classmethod
    def capabilities(cls, device_class: str) -> dict[str, Any]:
        if device_class == "cpu":
            return {
                "params": [*_COMMON, "num_threads", "channels_last", "compile"],
                "choices": {
                    "optimizer": list(_OPTIMIZERS),
                    "parallel_strategy": ["single", "ddp"],
                    "precision": ["fp32", "bf16"],
                    "compile": ["none", "default", "max-autotune"],
                    "channels_last": [False, True],
                },
            }
        return {
            "params": [*_COMMON, "compile", "channels_last", "num_threads"],
            "choices": {
                "optimizer": list(_OPTIMIZERS),
                "parallel_strategy": ["single", "dp", "ddp"],
                "precision": ["fp32", "tf32", "bf16", "fp16"],
                "compile": ["none", "default", "max-autotune"],
                "channels_last": [False, True],
            },
        }

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
        import torch

        found = [cpu_device(self._versions(), bf16=True)]
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            props = torch.cuda.get_device_properties(0)
            found.append(
                {
                    "kind": "cuda",
                    "name": props.name,
                    "count": n,
                    "memory_bytes": int(props.total_memory),
                    "compute_capability": f"{props.major}.{props.minor}",
                    "cores": usable_cores(),
                    "versions": {**self._versions(), "cuda": str(torch.version.cuda)},
                    "bf16": bool(torch.cuda.is_bf16_supported()),
                }
            )
        return found

    # ------------------------------------------------------------------ trials
    def run_trial(self, workload: Any, request: TrialRequest, channel: Channel) -> dict[str, Any]:
        validate_config(request.config, request.device)
        cfg = request.config
        world = int(cfg.get("world_size", 1)) if cfg.get("parallel_strategy") == "ddp" else 1
        if world == 1:
            return _Trainer(workload, request, channel, rank=0, world=1).run()
        return _run_ddp(workload, request, channel, world)


def validate_config(cfg: dict[str, Any], device: str) -> None:
    """Reject what this backend cannot honour on ``device`` (raises :class:`InvalidConfig`)."""
    kind = device.split(":", 1)[0]
    strategy = cfg.get("parallel_strategy", "single")
    world = int(cfg.get("world_size", 1))
    if strategy not in ("single", "ddp", "dp"):
        raise InvalidConfig(f"parallel_strategy {strategy!r} is not supported by this backend")
    if strategy in ("ddp", "dp") and world < 2:
        raise InvalidConfig(f"{strategy} needs world_size >= 2")
    if strategy == "dp" and kind != "cuda":
        raise InvalidConfig("dp (DataParallel) needs CUDA devices")
    if cfg.get("optimizer", "adam") not in _OPTIMIZERS:
        raise InvalidConfig(f"optimizer {cfg.get('optimizer')!r} is not supported")
    precision = cfg.get("precision", "fp32")
    allowed = ("fp32", "bf16") if kind == "cpu" else ("fp32", "tf32", "bf16", "fp16")
    if precision not in allowed:
        raise InvalidConfig(f"precision {precision!r} is not supported on {kind}")
    if cfg.get("compile", "none") not in ("none", "default", "max-autotune"):
        raise InvalidConfig(f"compile {cfg.get('compile')!r} is not a torch.compile mode")


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


def _run_ddp(workload: Any, request: TrialRequest, channel: Channel, world: int) -> dict[str, Any]:
    """``world`` ranks (see :func:`~tuner.backends._ranks.run_ranks`) meeting in a file store."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    store_dir = tempfile.mkdtemp(prefix="perftune-ddp-")
    store_path = os.path.join(store_dir, "store")

    def rank(r: int, ch: Channel | None) -> dict[str, Any]:
        trainer = _Trainer(workload, request, ch, rank=r, world=world, store=store_path)
        KEEPALIVE.append(trainer)
        return trainer.run()

    try:
        return run_ranks(world, lambda r: rank(r, None), lambda: rank(0, channel), channel,
                         "ddp rank process")  # fmt: skip
    finally:
        with contextlib.suppress(OSError):
            os.remove(store_path)
            os.rmdir(store_dir)


class _Trainer:
    """One rank's training loop, for both measures."""

    def __init__(self, workload, request: TrialRequest, channel: Channel | None, *, rank: int,
                 world: int, store: str | None = None) -> None:  # fmt: skip
        import torch

        self.t_start = time.perf_counter()
        self.torch = torch
        self.workload, self.req, self.channel = workload, request, channel
        self.cfg = request.config
        self.rank, self.world = rank, world
        threads = int(self.cfg.get("num_threads") or max(1, usable_cores() // world))
        torch.set_num_threads(threads)
        torch.manual_seed(request.seed)
        self.device = torch.device(request.device if request.device != "cpu" else "cpu")
        self.replicas = int(self.cfg.get("world_size", 1)) if self.cfg.get(
            "parallel_strategy") == "dp" else 1  # fmt: skip
        if self.device.type == "cuda":
            torch.cuda.set_device((self.device.index or 0) + rank)
            torch.cuda.reset_peak_memory_stats()
            tf32 = self.cfg.get("precision") == "tf32"
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        if world > 1:
            import datetime

            import torch.distributed as dist

            # The small control collectives (_agree, _loss_value) use CPU tensors: gloo for them.
            backend = "cpu:gloo,cuda:nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(
                backend,
                store=dist.FileStore(store, world),
                rank=rank,
                world_size=world,
                timeout=datetime.timedelta(seconds=max(60.0, request.timeout_s)),
            )
        self.rss_start = rss_peak_mb()

    # -- setup
    def _tensors(self):
        torch = self.torch
        x_tr, y_tr, x_va, y_va = self.workload.data()

        def as_t(a, floating):
            t = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
            if floating and not t.is_floating_point():
                t = t.float()
            return t.to(self.device)

        # Integer labels stay integers (class indices) unless the loss is MSE; float targets
        # stay floats. A callable loss gets the targets as the data gives them.
        regression = self.workload.loss == "mse"
        return (as_t(x_tr, True), as_t(y_tr, regression),
                as_t(x_va, True), as_t(y_va, regression))  # fmt: skip

    def _optimizer(self, params):
        return make_optimizer(params, self.cfg)

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
        return torch.autocast(self.device.type, dtype=dtype)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

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

    # -- run
    def _model(self):
        torch, cfg = self.torch, self.cfg
        model = self.workload.model().to(self.device)
        if cfg.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        self.eval_model = model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model)
        elif cfg.get("parallel_strategy") == "dp":
            model = torch.nn.DataParallel(model, device_ids=list(range(self.replicas)))
        mode = cfg.get("compile", "none")
        if mode != "none":
            model = torch.compile(model, mode=None if mode == "default" else mode)
        return model

    def run(self) -> dict[str, Any]:
        torch, cfg = self.torch, self.cfg
        try:
            x_tr, y_tr, x_va, y_va = self._tensors()
            if cfg.get("channels_last") and x_tr.dim() == 4:
                x_tr = x_tr.contiguous(memory_format=torch.channels_last)
                x_va = x_va.contiguous(memory_format=torch.channels_last)
            model = self._model()
            opt = self._optimizer(model.parameters())
            self.keep = (model, opt, x_tr, y_tr, x_va, y_va)  # see KEEPALIVE
            loss_fn = self._loss_fn()
            bs = int(cfg.get("batch_size", 32)) * self.replicas  # dp splits one batch on GPUs
            self.global_bs = bs * self.world
            batches = self._batches(len(x_tr), bs, self.req.seed)
            autocast = self._autocast()
            # fp16 needs loss scaling; bf16 and fp32 do not.
            scaler = torch.amp.GradScaler(self.device.type) if cfg.get("precision") == "fp16" else None
            model.train()

            def step():
                epoch, idx = next(batches)
                xb, yb = x_tr[idx], y_tr[idx]
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
                return epoch, loss, len(idx)

            self.setup_s = time.perf_counter() - self.t_start
            return measure(self, step, lambda: self._evaluate(x_va, y_va),
                           global_batch_size=self.global_bs,
                           world_size=self.world * self.replicas)  # fmt: skip
        finally:
            if self.world > 1 and torch.distributed.is_initialized():
                with contextlib.suppress(Exception):
                    torch.distributed.destroy_process_group()

    def _memory(self) -> dict[str, float]:
        torch = self.torch
        peak = rss_peak_mb()
        out = {"peak_rss_mb": peak, "rss_growth_mb": max(0.0, peak - self.rss_start)}
        if self.device.type == "cuda":
            out["peak_device_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
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
