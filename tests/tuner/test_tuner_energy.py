"""Energy meters: RAPL on a fake sysfs tree, NVML through a fake ``pynvml`` module, and the
real probes of this machine (which must answer, never raise)."""

from __future__ import annotations

import builtins
import os
import sys
import time
import types
from pathlib import Path

import pytest

from perftune.backends import _energy
from perftune.backends._energy import (
    EnergyMeter,
    NvmlMeter,
    RaplMeter,
    energy_metrics,
    nvml_info,
    open_meter,
)

MAX_RANGE = 262_143_328_850  # a real max_energy_range_uj


# ------------------------------------------------------------------------------------- RAPL fake
def _domain(root: Path, entry: str, name: str, energy: int, max_range: int | None = MAX_RANGE):
    d = root / entry
    d.mkdir(parents=True)
    (d / "name").write_text(name + "\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    if max_range is not None:
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


def _set(domain: Path, energy: int) -> None:
    (domain / "energy_uj").write_text(f"{energy}\n")


@pytest.fixture
def powercap(tmp_path):
    """Two packages, with what must be ignored: a sub-domain, the MMIO twin of package 0, the
    platform (psys) domain, and the control-type directory."""
    root = tmp_path / "powercap"
    (root / "intel-rapl").mkdir(parents=True)
    pkgs = [_domain(root, "intel-rapl:0", "package-0", 1_000_000),
            _domain(root, "intel-rapl:1", "package-1", 5_000_000)]  # fmt: skip
    ignored = [_domain(root, "intel-rapl:0:0", "core", 100),
               _domain(root, "intel-rapl-mmio:0", "package-0", 1_000_000),
               _domain(root, "intel-rapl:2", "psys", 7_000_000)]  # fmt: skip
    return root, pkgs, ignored


def test_rapl_sums_top_level_packages_only(powercap):
    root, (p0, p1), ignored = powercap
    assert RaplMeter.available(str(root))
    meter = RaplMeter(str(root))
    assert meter.source == "rapl"
    assert [os.path.basename(d) for d in meter.domains] == ["intel-rapl:0", "intel-rapl:1"]
    meter.start()
    _set(p0, 1_000_000 + 12_500_000)  # 12.5 J
    _set(p1, 5_000_000 + 7_500_000)  # 7.5 J
    for d in ignored:  # would add 1000 J if counted
        _set(d, 1_000_000_000)
    assert meter.stop() == pytest.approx(20.0)
    assert meter.stop() is None  # a window needs a start
    meter.close()


def test_rapl_counter_wraparound(powercap):
    root, (p0, p1), _ = powercap
    _set(p0, MAX_RANGE - 1_000_000)  # 1 J before the wrap
    meter = RaplMeter(str(root))
    meter.start()
    _set(p0, 2_000_000)  # ... and 2 J after it
    _set(p1, 5_000_000 + 1_000_000)
    assert meter.stop() == pytest.approx(3.0 + 1.0)


def test_rapl_wrap_without_range_is_not_guessed(tmp_path):
    root = tmp_path / "powercap"
    p0 = _domain(root, "intel-rapl:0", "package-0", 9_000_000, max_range=None)
    meter = RaplMeter(str(root))
    meter.start()
    _set(p0, 1_000)
    assert meter.stop() is None


def test_rapl_accepts_amd_domains(tmp_path):
    root = tmp_path / "powercap"
    p0 = _domain(root, "amd-rapl:0", "package", 0)
    meter = RaplMeter(str(root))
    meter.start()
    _set(p0, 4_000_000)
    assert meter.stop() == pytest.approx(4.0)


def test_rapl_unreadable_counter_is_unavailable(powercap):
    # chmod 000 does not stop root (these tests may run as root): a directory in place of the
    # counter fails to open for everyone.
    root, (p0, p1), _ = powercap
    meter = RaplMeter(str(root))
    meter.start()
    (p1 / "energy_uj").unlink()
    (p1 / "energy_uj").mkdir()
    assert not RaplMeter.available(str(root))
    assert meter.stop() is None
    assert open_meter("cpu", rapl_root=str(root)) is None


def test_rapl_permission_error_is_unavailable(powercap, monkeypatch):
    # energy_uj is root-only on most kernels since 5.10: open() raises PermissionError.
    root, _, _ = powercap
    real_open = builtins.open

    def guarded(path, *args, **kwargs):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(_energy, "open", guarded, raising=False)
    assert RaplMeter.available(str(root)) is False
    assert open_meter("cpu", rapl_root=str(root)) is None


def test_rapl_missing_tree_is_unavailable(tmp_path):
    assert RaplMeter.available(str(tmp_path / "nope")) is False
    (tmp_path / "empty").mkdir()
    assert RaplMeter.available(str(tmp_path / "empty")) is False
    meter = RaplMeter(str(tmp_path / "nope"))
    meter.start()
    assert meter.stop() is None


def test_open_meter_cpu_gives_rapl(powercap):
    root, _, _ = powercap
    with open_meter("cpu", rapl_root=str(root)) as meter:
        assert isinstance(meter, RaplMeter)
    assert open_meter("mps", rapl_root=str(root)) is None
    assert open_meter("tpu", [0], rapl_root=str(root)) is None


def test_real_rapl_probe_answers():
    result = RaplMeter.available()
    print(f"RaplMeter.available() on this machine: {result}")
    assert isinstance(result, bool)
    meter = open_meter("cpu")
    assert (meter is not None) == result
    if meter is not None:
        meter.start()
        joules = meter.stop()
        meter.close()
        assert joules is None or joules >= 0.0


# ------------------------------------------------------------------------------------- NVML fake
def _fake_pynvml(*, energy_supported=True, init_error=False, count=2, power_mw=100_000.0,
                 power_fails=False):  # fmt: skip
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        pass

    class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801
        pass

    nv.NVMLError = NVMLError
    nv.NVMLError_NotSupported = NVMLError_NotSupported
    nv.NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    nv.state = {"init": 0, "shutdown": 0, "energy_mj": [1_000_000] * 4, "power_reads": 0}

    def nvmlInit():
        if init_error:
            raise NVMLError_LibraryNotFound("NVML Shared Library Not Found")
        nv.state["init"] += 1

    def nvmlShutdown():
        nv.state["shutdown"] += 1

    def handle(i):
        if not 0 <= i < count:
            raise NVMLError("Invalid Argument")
        return ("handle", i)

    def energy(h):
        if not energy_supported:
            raise NVMLError_NotSupported("Not Supported")
        return nv.state["energy_mj"][h[1]]

    def power(h):
        nv.state["power_reads"] += 1
        if power_fails and nv.state["power_reads"] > 3:
            raise NVMLError("GPU is lost")
        return power_mw

    nv.nvmlInit = nvmlInit
    nv.nvmlShutdown = nvmlShutdown
    nv.nvmlDeviceGetCount = lambda: count
    nv.nvmlDeviceGetHandleByIndex = handle
    nv.nvmlDeviceGetHandleByUUID = lambda uuid: handle(int(uuid.rsplit("-", 1)[1]))
    nv.nvmlDeviceGetTotalEnergyConsumption = energy
    nv.nvmlDeviceGetPowerUsage = power
    nv.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    nv.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700_000
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(total=85_520_809_984)
    return nv


@pytest.fixture
def no_visible_env(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_nvml_energy_counter(monkeypatch, no_visible_env):
    nv = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    assert NvmlMeter.available()
    meter = open_meter("cuda", [0, 1])
    assert isinstance(meter, NvmlMeter) and meter.source == "nvml"
    assert meter.method == "energy_counter"
    meter.start()
    nv.state["energy_mj"][0] += 1_500  # 1.5 J
    nv.state["energy_mj"][1] += 2_500  # 2.5 J
    nv.state["energy_mj"][2] += 99_000  # not one of ours
    assert meter.stop() == pytest.approx(4.0)
    meter.close()
    meter.close()  # idempotent
    assert nv.state["shutdown"] == nv.state["init"]


def test_nvml_counter_going_backwards_is_not_reported(monkeypatch, no_visible_env):
    nv = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with NvmlMeter([0]) as meter:
        meter.start()
        nv.state["energy_mj"][0] -= 10
        assert meter.stop() is None


def test_nvml_power_sampling_fallback(monkeypatch, no_visible_env):
    nv = _fake_pynvml(energy_supported=False, power_mw=100_000.0)  # a constant 100 W
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with NvmlMeter([0], interval_s=0.05) as meter:
        assert meter.method == "power_sampling"
        t0 = time.monotonic()
        meter.start()
        time.sleep(0.3)
        joules = meter.stop()
        elapsed = time.monotonic() - t0
        assert joules is not None
        # ~30 J: 100 W from the first sample (in start) to the last (in stop), >= 0.3 s apart
        # and inside the [t0, now] interval.
        assert 30.0 * 0.999 <= joules <= 100.0 * elapsed
        assert nv.state["power_reads"] >= 4  # the thread sampled, not just the two ends
        # A second window starts afresh (does not add the first one's samples).
        t0 = time.monotonic()
        meter.start()
        time.sleep(0.1)
        joules = meter.stop()
        assert joules is not None and 10.0 * 0.999 <= joules <= 100.0 * (time.monotonic() - t0)


def test_nvml_power_read_failure_gives_none(monkeypatch, no_visible_env):
    nv = _fake_pynvml(energy_supported=False, power_fails=True)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    with NvmlMeter([0], interval_s=0.02) as meter:
        meter.start()
        time.sleep(0.15)
        assert meter.stop() is None


def test_nvml_init_failure_is_unavailable(monkeypatch, no_visible_env):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_error=True))
    assert NvmlMeter.available() is False
    assert open_meter("cuda", [0]) is None
    assert nvml_info(0) == {}


def test_nvml_no_gpu_or_bad_index_is_unavailable(monkeypatch, no_visible_env):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(count=0))
    assert NvmlMeter.available() is False
    assert open_meter("cuda") is None
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(count=1))
    assert open_meter("cuda", [3]) is None  # no GPU 3
    assert nvml_info(3) == {}


def test_nvml_missing_module_is_unavailable(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    assert NvmlMeter.available() is False
    assert open_meter("cuda", [0]) is None
    assert nvml_info(0) == {}


def test_nvml_follows_cuda_visible_devices(monkeypatch):
    nv = _fake_pynvml(count=4)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    with NvmlMeter([1]) as meter:  # CUDA device 1 is NVML device 3
        meter.start()
        nv.state["energy_mj"][3] += 2_000
        nv.state["energy_mj"][1] += 50_000
        assert meter.stop() == pytest.approx(2.0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-2")
    with NvmlMeter([0]) as meter:
        meter.start()
        nv.state["energy_mj"][2] += 1_000
        assert meter.stop() == pytest.approx(1.0)
    assert open_meter("cuda", [1]) is None  # only one visible GPU


def test_nvml_info(monkeypatch, no_visible_env):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    assert nvml_info(0) == {
        "driver_version": "550.54.15",
        "nvml_name": "NVIDIA H100 80GB HBM3",
        "power_limit_w": 700.0,
        "memory_total_bytes": 85_520_809_984,
    }


def test_real_nvml_probe_answers():
    pytest.importorskip("pynvml")
    result = NvmlMeter.available()
    info = nvml_info(0)
    print(f"NvmlMeter.available() on this machine: {result}; nvml_info(0): {info}")
    assert isinstance(result, bool) and isinstance(info, dict)
    if not os.path.exists("/dev/nvidiactl"):  # no NVIDIA driver here
        assert result is False and info == {}
        assert open_meter("cuda", [0]) is None


# ------------------------------------------------------------------------------------- metrics
def test_energy_metrics():
    assert energy_metrics(50.0, 1000, 2.0, "nvml") == {
        "energy_j": 50.0,
        "joules_per_sample": 0.05,
        "avg_power_w": 25.0,
        "energy_source": "nvml",
    }
    for missing in (None, float("nan"), float("inf"), -1.0):
        assert energy_metrics(missing, 1000, 2.0, "rapl") == {"energy_source": "unavailable"}
    # Nothing derived from a zero count or duration.
    assert energy_metrics(3.0, 0, 0.0, "rapl") == {"energy_j": 3.0, "energy_source": "rapl"}


def test_base_meter_is_abstract():
    meter = EnergyMeter()
    with pytest.raises(NotImplementedError):
        meter.start()
    with pytest.raises(NotImplementedError):
        meter.stop()
    meter.close()
