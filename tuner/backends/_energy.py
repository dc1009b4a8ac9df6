"""Energy consumed during a timed window, read from the hardware's own counters (stdlib only).

Two sources:

* :class:`RaplMeter`: the Linux powercap RAPL counters of the CPU packages
  (``/sys/class/powercap/intel-rapl:N/energy_uj``). Since Linux 5.10 these files are readable by
  root only on most distributions; :meth:`RaplMeter.available` says whether *this* process can
  read them.
* :class:`NvmlMeter`: NVIDIA GPUs through NVML (``pynvml``, package ``nvidia-ml-py``, imported
  lazily). It reads the total-energy counter (Volta and newer) and falls back to integrating
  sampled board power where that counter is not supported.

A meter never invents a figure: :meth:`EnergyMeter.stop` returns ``None`` when a counter could not
be read, and :func:`energy_metrics` then reports ``energy_source: unavailable`` and no number.
:func:`open_meter` picks the meter for a device kind, or gives ``None`` when none can be read.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from itertools import pairwise
from typing import Any

DEFAULT_RAPL_ROOT = "/sys/class/powercap"


def rapl_root() -> str:
    """Where the RAPL counters are read: ``PERFTUNE_RAPL_ROOT`` if set (a copy of the tree, or a
    test's fake counters: the boundary the energy path is tested at), else sysfs."""
    return os.environ.get("PERFTUNE_RAPL_ROOT") or DEFAULT_RAPL_ROOT

# Top-level package domains only: "intel-rapl:0", "amd-rapl:1". Sub-domains ("intel-rapl:0:0",
# core/uncore/dram) are parts of their package and would be counted twice; "intel-rapl-mmio:0"
# is a second interface to the same package counter.
_PACKAGE_DIR = re.compile(r"^(?:intel|amd)-rapl:\d+$")


class EnergyMeter:
    """Joules consumed between :meth:`start` and :meth:`stop`.

    ``source`` names the counter (``"rapl"``, ``"nvml"``). A meter may be started and stopped
    any number of times; :meth:`close` releases what it holds (also on ``with`` exit).
    """

    source: str = ""

    def start(self) -> None:
        """Begin a window (reads the counters now)."""
        raise NotImplementedError

    def stop(self) -> float | None:
        """End the window: joules consumed since :meth:`start`, or ``None`` if a counter could
        not be read (or :meth:`start` was not called)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the meter's resources. Idempotent."""

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------------------- RAPL
def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _rapl_domains(root: str) -> list[str]:
    """The package-level RAPL domain directories under ``root``, sorted.

    A domain whose ``name`` file exists and does not start with ``package`` (e.g. ``psys``,
    the whole platform, which already contains the packages) is left out.
    """
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return []
    domains = []
    for entry in entries:
        if not _PACKAGE_DIR.match(entry):
            continue
        path = os.path.join(root, entry)
        try:
            with open(os.path.join(path, "name")) as f:
                name = f.read().strip()
        except OSError:
            name = ""
        if name and not name.startswith("package"):
            continue
        if os.path.exists(os.path.join(path, "energy_uj")):
            domains.append(path)
    return domains


class RaplMeter(EnergyMeter):
    """CPU package energy from the powercap RAPL counters under ``root``.

    Sums ``energy_uj`` over the top-level package domains (``intel-rapl:N``, ``amd-rapl:N``).
    A counter that went down during the window wrapped once at ``max_energy_range_uj`` and is
    corrected; without that file a wrapped window gives ``None``. A window longer than one full
    wrap period (minutes to hours, depending on the CPU and its load) cannot be detected.
    """

    source = "rapl"

    def __init__(self, root: str = DEFAULT_RAPL_ROOT) -> None:
        self.root = root
        self.domains = _rapl_domains(root)
        self._ranges: dict[str, int | None] = {}
        for d in self.domains:
            try:
                self._ranges[d] = _read_int(os.path.join(d, "max_energy_range_uj"))
            except (OSError, ValueError):
                self._ranges[d] = None
        self._start: dict[str, int] | None = None

    @staticmethod
    def available(root: str = DEFAULT_RAPL_ROOT) -> bool:
        """Whether at least one package domain exists and every package counter can be read by
        this process (``energy_uj`` is often root-only). Never raises."""
        domains = _rapl_domains(root)
        if not domains:
            return False
        try:
            for d in domains:
                _read_int(os.path.join(d, "energy_uj"))
        except (OSError, ValueError):
            return False
        return True

    def _read(self) -> dict[str, int] | None:
        try:
            return {d: _read_int(os.path.join(d, "energy_uj")) for d in self.domains}
        except (OSError, ValueError):
            return None

    def start(self) -> None:
        self._start = self._read() if self.domains else None

    def stop(self) -> float | None:
        begin, self._start = self._start, None
        if begin is None:
            return None
        end = self._read()
        if end is None:
            return None
        total_uj = 0
        for d in self.domains:
            delta = end[d] - begin[d]
            if delta < 0:
                wrap = self._ranges.get(d)
                if not wrap:
                    return None
                delta += wrap
                if delta < 0:
                    return None
            total_uj += delta
        return total_uj / 1e6


# ----------------------------------------------------------------------------------------- NVML
def _import_pynvml() -> Any:
    import pynvml  # nvidia-ml-py; optional

    return pynvml


def _nvml_errors(pynvml: Any) -> tuple[type[BaseException], ...]:
    base = getattr(pynvml, "NVMLError", None)
    errors: tuple[type[BaseException], ...] = (OSError,)
    if isinstance(base, type) and issubclass(base, BaseException):
        errors += (base,)
    return errors


def _unsupported(pynvml: Any) -> tuple[type[BaseException], ...]:
    names = ("NVMLError_NotSupported", "NVMLError_FunctionNotFound")
    found = tuple(getattr(pynvml, n) for n in names if isinstance(getattr(pynvml, n, None), type))
    return found or (_nvml_errors(pynvml)[-1],)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """The NVML handle of the CUDA-visible GPU ``index``.

    NVML numbers every GPU of the machine; CUDA numbers the ones ``CUDA_VISIBLE_DEVICES`` lists,
    in that order. Integer entries are mapped to NVML indices, ``GPU-...`` entries to UUIDs.
    Assumes ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or a machine of one GPU model (CUDA's default
    fastest-first order is then the PCI order NVML uses).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return pynvml.nvmlDeviceGetHandleByIndex(int(index))
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if not 0 <= index < len(entries):
        raise IndexError(f"CUDA device {index} is not in CUDA_VISIBLE_DEVICES={visible!r}")
    entry = entries[index]
    if entry.isdigit():
        return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
    if entry.startswith("GPU-"):
        return pynvml.nvmlDeviceGetHandleByUUID(entry)
    raise ValueError(f"CUDA_VISIBLE_DEVICES entry {entry!r} cannot be mapped to an NVML device")


class NvmlMeter(EnergyMeter):
    """Energy of the CUDA-visible GPUs ``indices``, summed, from NVML.

    ``method`` is ``"energy_counter"`` when every GPU has the total-energy counter
    (``nvmlDeviceGetTotalEnergyConsumption``, millijoules, Volta and newer); otherwise
    ``"power_sampling"``: a daemon thread reads ``nvmlDeviceGetPowerUsage`` (milliwatts) every
    ``interval_s`` and :meth:`stop` integrates the samples with the trapezoid rule (board power
    is itself averaged by the driver, so short windows are approximate).

    Raises ``ImportError`` without ``pynvml``, ``pynvml.NVMLError`` when NVML cannot be
    initialised or an index has no GPU, ``IndexError``/``ValueError`` when an index cannot be
    mapped through ``CUDA_VISIBLE_DEVICES`` (a MIG entry, for one: NVML meters whole GPUs);
    :func:`open_meter` turns all of these into "no meter".
    """

    source = "nvml"

    def __init__(self, indices: list[int], interval_s: float = 0.05) -> None:
        if not indices:
            raise ValueError("NvmlMeter needs at least one GPU index")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.indices = [int(i) for i in indices]
        self.interval_s = float(interval_s)
        self.method = "energy_counter"
        self._start_mj: list[int] | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._samples: list[tuple[float, float]] = []
        self._sample_failed = False
        self._nvml = _import_pynvml()
        self._errors = _nvml_errors(self._nvml)
        self._nvml.nvmlInit()
        self._open = True
        try:
            self._handles = [_nvml_handle(self._nvml, i) for i in self.indices]
            try:
                for h in self._handles:
                    self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            except _unsupported(self._nvml):
                self.method = "power_sampling"
        except BaseException:
            self.close()
            raise

    @staticmethod
    def available() -> bool:
        """Whether ``pynvml`` imports, NVML initialises and sees at least one GPU. Never raises."""
        try:
            pynvml = _import_pynvml()
        except ImportError:
            return False
        errors = _nvml_errors(pynvml)
        try:
            pynvml.nvmlInit()
        except errors:
            return False
        try:
            return int(pynvml.nvmlDeviceGetCount()) > 0
        except errors:
            return False
        finally:
            try:
                pynvml.nvmlShutdown()
            except errors:
                pass

    # -- energy counter
    def _energy_mj(self) -> list[int] | None:
        try:
            return [int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)) for h in self._handles]
        except self._errors:
            return None

    # -- power sampling
    def _power_w(self) -> float | None:
        try:
            return sum(float(self._nvml.nvmlDeviceGetPowerUsage(h)) for h in self._handles) / 1e3
        except self._errors:
            return None

    def _sample(self) -> None:
        watts = self._power_w()
        if watts is None:
            self._sample_failed = True
        else:
            self._samples.append((time.monotonic(), watts))

    def _sampler(self) -> None:
        while not self._halt.wait(self.interval_s):
            self._sample()

    def _stop_sampler(self) -> None:
        if self._thread is not None:
            self._halt.set()
            self._thread.join()
            self._thread = None

    def start(self) -> None:
        if not self._open:
            raise RuntimeError("NvmlMeter is closed")
        if self.method == "energy_counter":
            self._start_mj = self._energy_mj()
            return
        self._stop_sampler()
        self._samples, self._sample_failed = [], False
        self._halt = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._sampler, name="perftune-nvml-power",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> float | None:
        if self.method == "energy_counter":
            begin, self._start_mj = self._start_mj, None
            end = self._energy_mj() if begin is not None else None
            if begin is None or end is None:
                return None
            deltas = [e - b for b, e in zip(begin, end, strict=True)]
            if any(d < 0 for d in deltas):  # a 64-bit counter does not wrap: a driver reset
                return None
            return sum(deltas) / 1e3
        if self._thread is None:
            return None
        self._stop_sampler()
        self._sample()
        samples = self._samples
        if self._sample_failed or len(samples) < 2:
            return None
        return sum((t1 - t0) * (w0 + w1) / 2.0 for (t0, w0), (t1, w1) in pairwise(samples))

    def close(self) -> None:
        if not getattr(self, "_open", False):
            return
        self._stop_sampler()
        self._open = False
        try:
            self._nvml.nvmlShutdown()
        except self._errors:
            pass


def nvml_info(index: int) -> dict[str, Any]:
    """NVML facts about the CUDA-visible GPU ``index`` for its device record: ``driver_version``,
    ``nvml_name``, ``power_limit_w`` (the enforced limit) and ``memory_total_bytes``. A fact NVML
    does not answer is left out; ``{}`` without ``pynvml``, a driver, or that GPU. Never raises."""
    try:
        pynvml = _import_pynvml()
    except ImportError:
        return {}
    errors = _nvml_errors(pynvml) + (IndexError, ValueError)
    try:
        pynvml.nvmlInit()
    except errors:
        return {}
    info: dict[str, Any] = {}
    try:
        handle = _nvml_handle(pynvml, index)
        reads = (
            ("driver_version", lambda: _text(pynvml.nvmlSystemGetDriverVersion())),
            ("nvml_name", lambda: _text(pynvml.nvmlDeviceGetName(handle))),
            ("power_limit_w", lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1e3),
            ("memory_total_bytes", lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)),
        )
        for key, read in reads:
            try:
                info[key] = read()
            except errors:
                pass
    except errors:
        return {}
    finally:
        try:
            pynvml.nvmlShutdown()
        except errors:
            pass
    return info


# ------------------------------------------------------------------------------------ selection
def open_meter(device_kind: str, indices: list[int] | None = None, *,
               rapl_root: str | None = None) -> EnergyMeter | None:  # fmt: skip
    """The meter for a trial's devices, or ``None`` when their energy cannot be read here.

    ``cuda``: an :class:`NvmlMeter` over the CUDA-visible ``indices`` (default ``[0]``);
    ``cpu``: a :class:`RaplMeter` over every package (RAPL cannot split a package between
    processes, so this is the whole CPU, idle cores included). Any other kind: ``None``.
    Never raises for an unreadable counter; the caller must :meth:`~EnergyMeter.close` it.
    """
    if device_kind == "cuda":
        if not NvmlMeter.available():
            return None
        errors = _nvml_errors(_import_pynvml()) + (IndexError, ValueError)
        try:
            return NvmlMeter(list(indices) if indices else [0])
        except errors:
            return None
    if device_kind == "cpu":
        root = rapl_root or globals()["rapl_root"]()
        return RaplMeter(root) if RaplMeter.available(root) else None
    return None


def missing_meter(device_kind: str) -> str | None:
    """Why no energy meter can be read for ``device_kind`` here (one phrase naming the meter),
    or None when one can (stdlib only; pynvml imported for ``cuda``)."""
    if device_kind == "cpu":
        root = rapl_root()
        if RaplMeter.available(root):
            return None
        return (f"RAPL ({root}/intel-rapl:N/energy_uj missing or not readable by this user; "
                "root can read it)")  # fmt: skip
    if device_kind == "cuda":
        return None if NvmlMeter.available() else "NVML (install nvidia-ml-py; needs the NVIDIA driver)"
    return f"a meter for {device_kind} (perftune reads RAPL on CPUs and NVML on NVIDIA GPUs)"


def energy_metrics(joules: float | None, samples: int, seconds: float,
                   source: str | None) -> dict[str, Any]:  # fmt: skip
    """Trial metrics for ``joules`` consumed while training ``samples`` samples in ``seconds``.

    ``{"energy_j", "joules_per_sample", "avg_power_w", "energy_source"}`` when ``joules`` is a
    finite, non-negative number (a per-sample or per-second figure is left out when ``samples``
    or ``seconds`` is not positive); otherwise only ``{"energy_source": "unavailable"}``.
    """
    if joules is None or not math.isfinite(joules) or joules < 0:
        return {"energy_source": "unavailable"}
    out: dict[str, Any] = {"energy_j": float(joules)}
    if samples > 0:
        out["joules_per_sample"] = float(joules) / samples
    if seconds > 0:
        out["avg_power_w"] = float(joules) / seconds
    out["energy_source"] = source or "unknown"
    return out


__all__ = [
    "DEFAULT_RAPL_ROOT",
    "missing_meter",
    "rapl_root",
    "EnergyMeter",
    "NvmlMeter",
    "RaplMeter",
    "energy_metrics",
    "nvml_info",
    "open_meter",
]
