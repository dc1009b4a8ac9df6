"""PyTorch accelerators: device discovery and the per-kind operations the torch trainer needs.

Stdlib-only at import time: torch, and each accelerator's own package (``torch_npu``,
``torch_xla``), are imported inside the functions that need them, and an accelerator's package
is imported only when it is installed (``importlib.util.find_spec``).

:func:`discover` returns device records in the format of :meth:`perftune.backends.Backend.devices`
(``kind``, ``name``, ``count``, ``memory_bytes``, ``cores``, ``versions``, ``bf16``, plus
kind-specific keys). Kinds: ``cpu`` (always), ``cuda`` (NVIDIA, and ROCm through torch's cuda
namespace), ``mps`` (Apple), ``xpu`` (Intel), ``npu`` (Ascend, ``torch_npu``) and ``tpu``
(``torch_xla``). A probe that raises leaves its accelerator out with a one-line warning on
stderr: discovery itself never fails because of an accelerator.

:func:`accelerator` gives an :class:`Accelerator` for a kind: torch device objects,
``set_device``, ``synchronize``, peak memory, the process-group backend, the autocast device
type and which precisions the discovered device supports.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from typing import Any

from perftune.backends._host import cpu_device, host_memory_bytes, usable_cores
from perftune.errors import InvalidConfig

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


# ---------------------------------------------------------------------------------- discovery
def discover(versions: dict[str, str]) -> list[dict[str, Any]]:
    """Every device torch can drive here: the CPU first, then each accelerator found.

    ``versions`` (framework and python versions) is copied into every record; accelerator
    records add their own (``cuda``, ``torch_npu``, ``torch_xla``...). A heterogeneous CUDA box
    gives one record per GPU model, each with the torch ``indices`` of its GPUs.
    """
    found = [cpu_device(versions, bf16=True)]
    for kind, probe in _PROBES:
        try:
            found.extend(probe(dict(versions)))
        except Exception as exc:  # an optional accelerator must never break discovery
            msg = " ".join(str(exc).split())[:200]
            print(f"perftune: {kind} discovery failed, leaving {kind} out: "
                  f"{type(exc).__name__}: {msg}", file=sys.stderr)  # fmt: skip
    return found


def _record(kind: str, name: str, count: int, memory: int | None, versions: dict[str, str],
            bf16: bool, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"kind": kind, "name": name, "count": int(count),
            "memory_bytes": None if memory is None else int(memory), "cores": usable_cores(),
            "versions": versions, "bf16": bool(bf16), **extra}  # fmt: skip


def _nvml_extras(index: int) -> dict[str, Any]:
    """Driver version, power limit... from ``perftune.backends._energy.nvml_info`` when that
    module exists and NVML answers; ``{}`` otherwise."""
    try:
        energy = importlib.import_module("perftune.backends._energy")
    except ImportError:
        return {}
    try:
        info = energy.nvml_info(index)
    except Exception:
        return {}
    return dict(info) if isinstance(info, dict) else {}


def _probe_cuda(versions: dict[str, str]) -> list[dict[str, Any]]:
    import torch

    if not torch.cuda.is_available():
        return []
    n = int(torch.cuda.device_count())
    groups: dict[str, list[int]] = {}
    props_of: dict[str, Any] = {}
    for i in range(n):
        props = torch.cuda.get_device_properties(i)
        groups.setdefault(props.name, []).append(i)
        props_of.setdefault(props.name, props)
    if not groups:
        return []
    hip = getattr(torch.version, "hip", None)
    versions["cuda"] = str(torch.version.cuda)
    if hip:
        versions["hip"] = str(hip)
    any_bf16 = bool(torch.cuda.is_bf16_supported())
    nccl = bool(torch.distributed.is_available() and torch.distributed.is_nccl_available())
    heterogeneous = len(groups) > 1
    records = []
    for name, indices in groups.items():
        props = props_of[name]
        cc = (int(props.major), int(props.minor))
        # is_bf16_supported() answers for the current device; on a mixed NVIDIA box narrow it
        # per model by compute capability (bf16 arithmetic needs sm_80+).
        bf16 = any_bf16 and (not heterogeneous or bool(hip) or cc >= (8, 0))
        extra: dict[str, Any] = {"compute_capability": f"{cc[0]}.{cc[1]}",
                                 "tf32": not hip and cc >= (8, 0), "nccl": nccl}  # fmt: skip
        if heterogeneous:
            extra["indices"] = list(indices)
        rec = _record("cuda", name, len(indices), props.total_memory, dict(versions), bf16, **extra)
        for key, value in _nvml_extras(indices[0]).items():
            rec.setdefault(key, value)
        records.append(rec)
    return records


def _probe_mps(versions: dict[str, str]) -> list[dict[str, Any]]:
    import torch

    mps = getattr(torch.backends, "mps", None)
    if mps is None or not mps.is_available():
        return []
    memory: int | None = None
    recommended = getattr(getattr(torch, "mps", None), "recommended_max_memory", None)
    if recommended is not None:
        try:
            memory = int(recommended())
        except Exception:
            memory = None
    if not memory:
        memory = host_memory_bytes()
    return [_record("mps", "Apple MPS", 1, memory, versions, _mps_bf16(torch))]


def _mps_bf16(torch: Any) -> bool:
    """Whether a bf16 tensor works on MPS (macOS 14+): try a tiny one."""
    try:
        t = torch.ones(2, dtype=torch.bfloat16, device="mps")
        return bool((t + t).sum().item() == 4)
    except Exception:
        return False


def _probe_xpu(versions: dict[str, str]) -> list[dict[str, Any]]:
    import torch

    if not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        return []
    n = int(torch.xpu.device_count())
    if n < 1:
        return []
    props = torch.xpu.get_device_properties(0)
    try:
        bf16 = bool(torch.xpu.is_bf16_supported())
    except Exception:
        bf16 = False
    driver = getattr(props, "driver_version", None)
    if driver:
        versions["xpu_driver"] = str(driver)
    xccl = getattr(torch.distributed, "is_xccl_available", None)
    backend = "xccl" if xccl is not None and xccl() else None
    return [_record("xpu", str(props.name), n, props.total_memory, versions, bf16,
                    dist_backend=backend)]  # fmt: skip


def _probe_npu(versions: dict[str, str]) -> list[dict[str, Any]]:
    if importlib.util.find_spec("torch_npu") is None:
        return []
    import torch
    import torch_npu

    npu = torch.npu
    if not npu.is_available():
        return []
    n = int(npu.device_count())
    if n < 1:
        return []
    name = str(npu.get_device_name(0))
    memory = npu.get_device_properties(0).total_memory
    check = getattr(npu, "is_bf16_supported", None)
    try:
        bf16 = bool(check()) if check is not None else "910B" in name
    except Exception:
        bf16 = False
    versions["torch_npu"] = str(getattr(torch_npu, "__version__", "unknown"))
    cann = getattr(getattr(torch_npu, "version", None), "cann", None)
    if cann:
        versions["cann"] = str(cann)
    return [_record("npu", name, n, memory, versions, bf16, dist_backend="hccl")]


def _probe_tpu(versions: dict[str, str]) -> list[dict[str, Any]]:
    if importlib.util.find_spec("torch_xla") is None:
        return []
    import torch_xla
    import torch_xla.core.xla_model as xm

    device = _xla_device(None)
    hw = str(xm.xla_device_hw(device))
    if hw != "TPU":  # torch_xla on a CPU or GPU backend is not a TPU
        return []
    try:
        import torch_xla.runtime as xr

        count = int(xr.global_runtime_device_count())
    except (ImportError, AttributeError):
        count = len(xm.get_xla_supported_devices("TPU") or [])
    if count < 1:
        return []
    acc = os.environ.get("TPU_ACCELERATOR_TYPE", "").strip()
    name = f"TPU {acc}" if acc else hw
    memory = _xla_memory(xm, device).get("limit")
    versions["torch_xla"] = str(getattr(torch_xla, "__version__", "unknown"))
    return [_record("tpu", name, count, memory, versions, True, dist_backend="xla")]


def _xla_device(index: int | None) -> Any:
    import torch_xla

    make = getattr(torch_xla, "device", None)
    if callable(make):
        return make(index)
    import torch_xla.core.xla_model as xm

    return xm.xla_device(index)


def _xla_memory(xm: Any, device: Any) -> dict[str, int]:
    """``{"limit", "peak"}`` (bytes) from ``xm.get_memory_info``, keys absent when unknown.
    Newer torch_xla reports bytes (``bytes_limit``, ``peak_bytes_used``), older kilobytes."""
    try:
        info = xm.get_memory_info(device)
    except Exception:
        return {}
    out: dict[str, int] = {}
    if "bytes_limit" in info:
        out["limit"] = int(info["bytes_limit"])
    elif "kb_total" in info:
        out["limit"] = int(info["kb_total"]) * 1024
    if "peak_bytes_used" in info:
        out["peak"] = int(info["peak_bytes_used"])
    return out


_PROBES: tuple[tuple[str, Callable[[dict[str, str]], list[dict[str, Any]]]], ...] = (
    ("cuda", _probe_cuda), ("mps", _probe_mps), ("xpu", _probe_xpu), ("npu", _probe_npu),
    ("tpu", _probe_tpu),
)  # fmt: skip


# ------------------------------------------------------------------------------- operations
class Accelerator:
    """One device kind's operations, torch imported when they run.

    ``record`` is the kind's discovery record (from :func:`discover`); :meth:`supports` reads
    it, and without it falls back to what the kind supports in general.
    """

    kind = "cpu"
    autocast_device_type = "cpu"
    #: Precisions this kind can run at all (``bf16`` is further narrowed by the record).
    _precisions: frozenset[str] = frozenset({"fp32", "bf16"})
    _bf16_default = True

    def __init__(self, record: dict[str, Any] | None = None) -> None:
        self.record = dict(record or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r})"

    @property
    def dist_backend(self) -> str | None:
        """The ``torch.distributed`` process-group backend for this kind (None: there is none)."""
        return "gloo"

    def device(self, index: int = 0) -> Any:
        import torch

        return torch.device(self.kind, index)

    def set_device(self, index: int) -> None:
        """Make ``index`` the current device of this process (a no-op where there is none)."""

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""

    @property
    def mesh_device_type(self) -> str:
        """The device type of a ``DeviceMesh`` over this kind (FSDP2)."""
        return "xla" if self.kind == "tpu" else self.kind

    def empty_cache(self) -> None:
        """Give cached, unused device memory back (after an out-of-memory attempt)."""
        import torch

        module = getattr(torch, self.kind, None)
        if self.kind != "cpu" and module is not None and hasattr(module, "empty_cache"):
            module.empty_cache()

    def reset_peak_memory(self) -> None:
        """Start the peak-memory counter of :meth:`peak_memory_bytes` afresh, where it has one."""

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory allocated since :meth:`reset_peak_memory` (None: not measured)."""
        return None

    def supports(self, precision: str) -> bool:
        """Whether training at ``precision`` (fp32, tf32, bf16, fp16) works on this device."""
        if precision not in self._precisions:
            return False
        if precision == "bf16":
            return bool(self.record.get("bf16", self._bf16_default))
        return True


class _Cpu(Accelerator):
    def device(self, index: int = 0) -> Any:
        import torch

        return torch.device("cpu")


class _Cuda(Accelerator):
    kind = autocast_device_type = "cuda"
    _precisions = frozenset(PRECISIONS)
    _bf16_default = False

    @property
    def dist_backend(self) -> str | None:
        return "gloo" if self.record.get("nccl") is False else "nccl"

    def set_device(self, index: int) -> None:
        import torch

        torch.cuda.set_device(index)

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize()

    def reset_peak_memory(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats()

    def peak_memory_bytes(self) -> int | None:
        import torch

        return int(torch.cuda.max_memory_allocated())

    def supports(self, precision: str) -> bool:
        if precision == "tf32":
            if "tf32" in self.record:
                return bool(self.record["tf32"])
            major, _, minor = str(self.record.get("compute_capability", "0.0")).partition(".")
            return (int(major or 0), int(minor or 0)) >= (8, 0)
        return super().supports(precision)


class _Mps(Accelerator):
    kind = autocast_device_type = "mps"
    _precisions = frozenset({"fp32", "bf16", "fp16"})
    _bf16_default = False

    @property
    def dist_backend(self) -> str | None:
        return None

    def device(self, index: int = 0) -> Any:
        import torch

        return torch.device("mps")

    def synchronize(self) -> None:
        import torch

        torch.mps.synchronize()

    def peak_memory_bytes(self) -> int | None:
        """What the Metal driver holds for this process now (MPS keeps no peak counter)."""
        import torch

        return int(torch.mps.driver_allocated_memory())


class _Xpu(Accelerator):
    kind = autocast_device_type = "xpu"
    _precisions = frozenset({"fp32", "bf16", "fp16"})

    @property
    def dist_backend(self) -> str | None:
        if "dist_backend" in self.record:
            return self.record["dist_backend"]
        import torch.distributed

        # torch >= 2.8 has XCCL built in; before, oneCCL's bindings registered "ccl".
        return "xccl" if hasattr(torch.distributed, "is_xccl_available") else "ccl"

    def set_device(self, index: int) -> None:
        import torch

        torch.xpu.set_device(index)

    def synchronize(self) -> None:
        import torch

        torch.xpu.synchronize()

    def reset_peak_memory(self) -> None:
        import torch

        torch.xpu.reset_peak_memory_stats()

    def peak_memory_bytes(self) -> int | None:
        import torch

        return int(torch.xpu.max_memory_allocated())


class _Npu(Accelerator):
    kind = autocast_device_type = "npu"
    _precisions = frozenset({"fp32", "bf16", "fp16"})
    _bf16_default = False

    @property
    def dist_backend(self) -> str | None:
        return "hccl"

    @staticmethod
    def _npu() -> Any:
        import torch
        import torch_npu  # noqa: F401 - registers the npu device and torch.npu

        return torch.npu

    def device(self, index: int = 0) -> Any:
        self._npu()
        import torch

        return torch.device("npu", index)

    def set_device(self, index: int) -> None:
        self._npu().set_device(index)

    def synchronize(self) -> None:
        self._npu().synchronize()

    def reset_peak_memory(self) -> None:
        self._npu().reset_peak_memory_stats()

    def peak_memory_bytes(self) -> int | None:
        return int(self._npu().max_memory_allocated())


class _Tpu(Accelerator):
    kind = "tpu"
    autocast_device_type = "xla"
    _precisions = frozenset({"fp32", "bf16"})

    @property
    def dist_backend(self) -> str | None:
        return "xla"

    def device(self, index: int = 0) -> Any:
        return _xla_device(index)

    def synchronize(self) -> None:
        import torch_xla
        import torch_xla.core.xla_model as xm

        sync = getattr(torch_xla, "sync", None)
        if callable(sync):
            sync()
        else:
            xm.mark_step()
        xm.wait_device_ops()

    def peak_memory_bytes(self) -> int | None:
        import torch_xla.core.xla_model as xm

        return _xla_memory(xm, _xla_device(None)).get("peak")


_KINDS: dict[str, type[Accelerator]] = {"cpu": _Cpu, "cuda": _Cuda, "mps": _Mps, "xpu": _Xpu,
                                        "npu": _Npu, "tpu": _Tpu}  # fmt: skip


def accelerator(kind: str, record: dict[str, Any] | None = None) -> Accelerator:
    """The :class:`Accelerator` for ``kind`` (``"cuda"`` or a device string like ``"cuda:1"``);
    ``record`` is its discovery record, which :meth:`Accelerator.supports` consults."""
    base = kind.split(":", 1)[0]
    if base not in _KINDS:
        raise InvalidConfig(f"device {kind!r}: unknown device kind (known: {', '.join(_KINDS)})")
    return _KINDS[base](record)


__all__ = ["PRECISIONS", "Accelerator", "accelerator", "discover"]
