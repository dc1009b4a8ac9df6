"""A parallel layout as a validated dataclass (stdlib only, like torchtitan's ``ParallelDims``).

A :class:`ParallelLayout` says how one trial uses a device class: the strategy, how many
processes and devices, and the precision. Building one checks every combination that cannot
run (``ddp`` with one process, ``fsdp`` on a device with no process-group backend, ``bf16``
on a device without it, more ranks than devices, ...) and raises
:class:`~perftune.errors.InvalidConfig` naming the field, so that the sweep rejects such a config
*before* a trial runs (it is never counted as a failed trial). The same check runs again in the
trial worker, for configs that come from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perftune.errors import InvalidConfig

STRATEGIES = ("single", "dp", "ddp", "fsdp")
PRECISIONS = ("fp32", "tf32", "bf16", "fp16")

#: The ``torch.distributed`` backend of each device class (None: there is none).
DIST_BACKENDS: dict[str, str | None] = {
    "cpu": "gloo",
    "cuda": "nccl",
    "npu": "hccl",
    "xpu": "xccl",
    "tpu": "xla",
    "mps": None,
}


@dataclass(frozen=True)
class ParallelLayout:
    """How one trial spreads over a device class; invalid combinations fail in ``__post_init__``.

    Args:
        strategy: ``single`` (one process, one device), ``dp`` (``DataParallel``: one process
            driving ``world_size`` GPUs), ``ddp`` (``DistributedDataParallel``: ``world_size``
            processes) or ``fsdp`` (FSDP2 ``fully_shard``: ``world_size`` processes, parameters
            sharded).
        world_size: devices (``dp``) or processes (``ddp``/``fsdp``) used; 1 for ``single``.
        device_kind: ``cpu``, ``cuda``, ``mps``, ``xpu``, ``npu`` or ``tpu``.
        device_count: devices of that kind present (1 for the CPU).
        cores: CPU cores usable by the trial (bounds CPU ranks).
        precision: ``fp32``, ``tf32``, ``bf16`` or ``fp16``.
        bf16, tf32, fp16: what the device supports (from discovery).
        dist_backend: the process-group backend ddp/fsdp use (discovery may say, e.g. no
            ``nccl`` in this build); None: the device class has none.
    """

    strategy: str = "single"
    world_size: int = 1
    device_kind: str = "cpu"
    device_count: int = 1
    cores: int = 1
    precision: str = "fp32"
    bf16: bool = True
    tf32: bool = False
    fp16: bool = False
    #: The process-group backend; ``"default"`` takes :data:`DIST_BACKENDS`' entry for the kind.
    dist_backend: str | None = "default"

    def __post_init__(self) -> None:
        s, w, kind = self.strategy, self.world_size, self.device_kind
        if kind not in DIST_BACKENDS:
            raise InvalidConfig(f"device {kind!r}: unknown device class (known: {', '.join(DIST_BACKENDS)})")
        if self.dist_backend == "default":
            object.__setattr__(self, "dist_backend", DIST_BACKENDS[kind])
        if s not in STRATEGIES:
            raise InvalidConfig(f"parallel_strategy {s!r}: unknown (choose from: {', '.join(STRATEGIES)})")
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise InvalidConfig(f"world_size {w!r}: must be an integer >= 1")
        if s == "single" and w != 1:
            raise InvalidConfig(f"world_size {w}: parallel_strategy single uses one device")
        if s != "single" and w < 2:
            raise InvalidConfig(f"parallel_strategy {s} needs world_size >= 2 (got {w})")
        if s == "dp" and kind != "cuda":
            raise InvalidConfig(f"parallel_strategy dp (DataParallel) needs CUDA GPUs, not {kind}")
        if s in ("ddp", "fsdp") and self.dist_backend is None:
            raise InvalidConfig(f"parallel_strategy {s} needs a process-group backend; {kind} has none")
        if s == "fsdp" and kind == "tpu":
            raise InvalidConfig("parallel_strategy fsdp on tpu needs torch_xla's own FSDP; use ddp")
        if kind == "cpu":
            if w > self.cores:
                raise InvalidConfig(f"world_size {w}: more CPU ranks than the {self.cores} usable cores")
        elif w > self.device_count:
            raise InvalidConfig(f"world_size {w}: only {self.device_count} {kind} device(s) present")
        self._check_precision()

    def _check_precision(self) -> None:
        p, kind = self.precision, self.device_kind
        if p not in PRECISIONS:
            raise InvalidConfig(f"precision {p!r}: unknown (choose from: {', '.join(PRECISIONS)})")
        if p == "bf16" and not self.bf16:
            raise InvalidConfig(f"precision bf16: this {kind} device does not support bfloat16")
        if p == "tf32" and not self.tf32:
            raise InvalidConfig(f"precision tf32: needs an NVIDIA GPU of compute capability 8.0+, not {kind}")
        if p == "fp16" and not self.fp16:
            raise InvalidConfig(f"precision fp16: autocast with loss scaling is not supported on {kind}")

    @property
    def processes(self) -> int:
        """Processes the trial launches (``ddp``/``fsdp``: one per rank)."""
        return self.world_size if self.strategy in ("ddp", "fsdp") else 1

    @property
    def devices_used(self) -> int:
        """Devices the trial trains on: the denominator of MFU and of energy per device."""
        return 1 if self.device_kind == "cpu" else self.world_size

    @classmethod
    def from_config(cls, config: dict[str, Any], device: dict[str, Any]) -> ParallelLayout:
        """The layout a trial config asks for on a discovered ``device`` record (the dicts of
        :meth:`perftune.backends.Backend.devices`; missing capability flags count as absent, except
        on the CPU, where bf16 autocast is always available)."""
        kind = device.get("kind", "cpu")
        strategy = config.get("parallel_strategy", "single")
        world = config.get("world_size", 1)
        if isinstance(world, float) and world.is_integer():
            world = int(world)
        return cls(
            strategy=strategy,
            world_size=world,
            device_kind=kind,
            device_count=int(device.get("count", 1)),
            cores=int(device.get("cores", 1)),
            precision=config.get("precision", "fp32"),
            bf16=bool(device.get("bf16", kind == "cpu")),
            tf32=bool(device.get("tf32", False)),
            fp16=bool(device.get("fp16", kind not in ("cpu", "tpu"))),
            dist_backend=device.get("dist_backend", "gloo" if device.get("nccl") is False
                                    else DIST_BACKENDS.get(kind)),  # fmt: skip
        )


__all__ = ["DIST_BACKENDS", "PRECISIONS", "STRATEGIES", "ParallelLayout"]
