"""PyTorch accelerator discovery and operations (perftune.backends._torch_accel).

The CPU is real. Accelerators are faked only at the hardware boundary: attributes of the real
``torch`` module are monkeypatched (``torch.cuda.is_available``, ``get_device_properties``...),
and the optional packages (``torch_npu``, ``torch_xla``) are fake modules put in ``sys.modules``
with ``importlib.util.find_spec`` answering for them.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
import types
from types import SimpleNamespace

import pytest
import torch

from perftune.backends import _torch_accel as ta
from perftune.backends._host import cpu_device, host_memory_bytes, usable_cores
from perftune.errors import InvalidConfig

GiB = 2**30
VERSIONS = {"torch": "2.x", "python": "3.11"}
REAL_FIND_SPEC = importlib.util.find_spec


def kinds(records):
    return [r["kind"] for r in records]


def pick(record, *keys):
    return tuple(record[k] for k in keys)


@pytest.fixture
def no_nvml(monkeypatch):
    """``perftune.backends._energy`` unimportable: no NVML extras, whether or not it exists."""
    monkeypatch.setitem(sys.modules, "perftune.backends._energy", None)


def fake_gpus(monkeypatch, gpus, *, bf16=True, nccl=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(gpus))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: gpus[i])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: nccl)


def gpu(name, gib, major, minor):
    return SimpleNamespace(name=name, total_memory=gib * GiB, major=major, minor=minor)


H100 = gpu("NVIDIA H100 80GB HBM3", 80, 9, 0)
A100 = gpu("NVIDIA A100-SXM4-40GB", 40, 8, 0)
L4 = gpu("NVIDIA L4", 23, 8, 9)
T4 = gpu("Tesla T4", 15, 7, 5)


def provide(monkeypatch, modules: dict[str, types.ModuleType | None]):
    """Install fake packages: in sys.modules, and found by importlib.util.find_spec."""
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    tops = {n for n in modules if "." not in n}

    def find_spec(name, *args, **kwargs):
        if name in tops:
            return importlib.machinery.ModuleSpec(name, None)
        return REAL_FIND_SPEC(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# ------------------------------------------------------------------------------- discovery
def test_module_import_is_stdlib_only():
    code = (
        "import sys, perftune.backends._torch_accel\n"
        "print(sorted(m for m in ('torch', 'torch_npu', 'torch_xla') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_cpu_only_machine_real(capsys):
    if torch.cuda.is_available() or torch.backends.mps.is_available() or torch.xpu.is_available():
        pytest.skip("this machine has an accelerator")
    records = ta.discover(VERSIONS)
    assert kinds(records) == ["cpu"]
    cpu = records[0]
    assert cpu == cpu_device(VERSIONS, bf16=True)
    assert cpu["count"] == 1 and cpu["cores"] == usable_cores() and cpu["bf16"] is True
    assert cpu["memory_bytes"] == host_memory_bytes() and cpu["versions"] == VERSIONS
    assert capsys.readouterr().err == ""


def test_two_h100(monkeypatch, no_nvml, capsys):
    fake_gpus(monkeypatch, [H100, H100])
    records = ta.discover(VERSIONS)
    assert kinds(records) == ["cpu", "cuda"]
    cuda = records[1]
    assert cuda == {
        "kind": "cuda", "name": "NVIDIA H100 80GB HBM3", "count": 2, "memory_bytes": 80 * GiB,
        "cores": usable_cores(), "versions": {**VERSIONS, "cuda": "12.4"}, "bf16": True,
        "compute_capability": "9.0", "tf32": True, "nccl": True,
    }  # fmt: skip
    assert records[0]["versions"] == VERSIONS  # the CPU record keeps its own versions
    assert capsys.readouterr().err == ""


def test_heterogeneous_cuda_gives_one_record_per_model(monkeypatch, no_nvml):
    fake_gpus(monkeypatch, [A100, L4])
    cuda = [r for r in ta.discover(VERSIONS) if r["kind"] == "cuda"]
    assert [(r["name"], r["count"], r["indices"], r["memory_bytes"], r["compute_capability"])
            for r in cuda] == [("NVIDIA A100-SXM4-40GB", 1, [0], 40 * GiB, "8.0"),
                               ("NVIDIA L4", 1, [1], 23 * GiB, "8.9")]  # fmt: skip
    assert all(r["bf16"] and r["tf32"] for r in cuda)


def test_heterogeneous_cuda_narrows_bf16_tf32_and_adds_nvml(monkeypatch):
    fake_gpus(monkeypatch, [T4, A100, T4], nccl=False)
    energy = types.ModuleType("perftune.backends._energy")
    energy.nvml_info = lambda i: {"driver_version": "550.54", "power_limit_w": [70.0, 400.0][i],
                                  "name": "not overriding"}  # fmt: skip
    monkeypatch.setitem(sys.modules, "perftune.backends._energy", energy)
    t4, a100 = [r for r in ta.discover(VERSIONS) if r["kind"] == "cuda"]
    assert pick(t4, "name", "indices", "bf16", "tf32") == ("Tesla T4", [0, 2], False, False)
    assert t4["count"] == 2
    assert (a100["indices"], a100["bf16"], a100["tf32"]) == ([1], True, True)
    assert (t4["power_limit_w"], a100["power_limit_w"]) == (70.0, 400.0)
    assert t4["driver_version"] == "550.54" and t4["nccl"] is False
    assert a100["name"] == "NVIDIA A100-SXM4-40GB"  # NVML extras never override discovery


def test_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 21 * GiB)
    records = ta.discover(VERSIONS)
    assert kinds(records) == ["cpu", "mps"]
    mps = records[1]
    assert (mps["name"], mps["count"], mps["memory_bytes"]) == ("Apple MPS", 1, 21 * GiB)
    assert mps["bf16"] is False  # the tiny bf16 tensor cannot be made here: no Metal device
    assert mps["versions"] == VERSIONS and mps["cores"] == usable_cores()


def test_mps_without_recommended_memory_reports_host_memory(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.delattr(torch.mps, "recommended_max_memory")
    mps = ta.discover(VERSIONS)[1]
    assert mps["memory_bytes"] == host_memory_bytes()


def test_xpu(monkeypatch):
    props = SimpleNamespace(name="Intel(R) Data Center GPU Max 1550", total_memory=64 * GiB,
                            driver_version="1.3.30049")  # fmt: skip
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch.xpu, "device_count", lambda: 2)
    monkeypatch.setattr(torch.xpu, "get_device_properties", lambda i: props)
    monkeypatch.setattr(torch.xpu, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.distributed, "is_xccl_available", lambda: True)
    records = ta.discover(VERSIONS)
    assert kinds(records) == ["cpu", "xpu"]
    xpu = records[1]
    expected = ("Intel(R) Data Center GPU Max 1550", 2, 64 * GiB, True)
    assert pick(xpu, "name", "count", "memory_bytes", "bf16") == expected
    assert xpu["versions"] == {**VERSIONS, "xpu_driver": "1.3.30049"}
    assert xpu["dist_backend"] == "xccl" and ta.accelerator("xpu", xpu).dist_backend == "xccl"


def fake_npu(monkeypatch, count=8, name="Ascend910B3"):
    npu = SimpleNamespace(
        is_available=lambda: True, device_count=lambda: count, get_device_name=lambda i: name,
        get_device_properties=lambda i: SimpleNamespace(name=name, total_memory=64 * GiB),
        is_bf16_supported=lambda: "910B" in name, calls=[],
    )  # fmt: skip
    npu.synchronize = lambda: npu.calls.append("synchronize")
    npu.set_device = lambda i: npu.calls.append(("set_device", i))
    npu.reset_peak_memory_stats = lambda: npu.calls.append("reset")
    npu.max_memory_allocated = lambda: 3 * GiB
    mod = types.ModuleType("torch_npu")
    mod.__version__ = "2.5.1"
    mod.npu = npu
    mod.version = SimpleNamespace(cann="8.0.RC3")
    provide(monkeypatch, {"torch_npu": mod})
    monkeypatch.setattr(torch, "npu", npu, raising=False)  # what importing torch_npu does
    return npu


def test_npu_910b_x8(monkeypatch):
    fake_npu(monkeypatch)
    records = ta.discover(VERSIONS)
    assert kinds(records) == ["cpu", "npu"]
    npu = records[1]
    assert pick(npu, "name", "count", "memory_bytes", "bf16") == ("Ascend910B3", 8, 64 * GiB, True)
    assert npu["versions"] == {**VERSIONS, "torch_npu": "2.5.1", "cann": "8.0.RC3"}
    assert npu["dist_backend"] == "hccl"


def test_absent_packages_are_not_imported(monkeypatch, capsys):
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a, **k: None if n in ("torch_npu", "torch_xla")
                        else REAL_FIND_SPEC(n, *a, **k))  # fmt: skip
    for name in ("torch_npu", "torch_xla"):  # importing either now raises ImportError
        monkeypatch.setitem(sys.modules, name, None)
    assert not {"npu", "tpu"} & set(kinds(ta.discover(VERSIONS)))
    assert capsys.readouterr().err == ""  # no import was tried, so nothing failed


def fake_xla(monkeypatch, hw="TPU", count=4):
    calls: list[str] = []
    dev = torch.device("xla", 0)
    xla = types.ModuleType("torch_xla")
    xla.__version__ = "2.6.0"
    xla.device = lambda index=None: dev if index is None else torch.device("xla", index)
    xla.sync = lambda: calls.append("sync")
    core = types.ModuleType("torch_xla.core")
    xm = types.ModuleType("torch_xla.core.xla_model")
    xm.xla_device_hw = lambda d: hw
    xm.get_memory_info = lambda d: {"bytes_used": 1 * GiB, "bytes_limit": 16 * GiB,
                                    "peak_bytes_used": 2 * GiB}  # fmt: skip
    xm.wait_device_ops = lambda: calls.append("wait")
    xm.mark_step = lambda: calls.append("mark_step")
    xr = types.ModuleType("torch_xla.runtime")
    xr.global_runtime_device_count = lambda: count
    xla.core, core.xla_model, xla.runtime = core, xm, xr
    provide(monkeypatch, {"torch_xla": xla, "torch_xla.core": core,
                          "torch_xla.core.xla_model": xm, "torch_xla.runtime": xr})  # fmt: skip
    return xla, xm, calls


def test_tpu_v5e_x4(monkeypatch):
    fake_xla(monkeypatch)
    monkeypatch.setenv("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    records = ta.discover(VERSIONS)
    assert kinds(records) == ["cpu", "tpu"]
    tpu = records[1]
    expected = ("TPU v5litepod-4", 4, 16 * GiB, True)
    assert pick(tpu, "name", "count", "memory_bytes", "bf16") == expected
    assert tpu["versions"] == {**VERSIONS, "torch_xla": "2.6.0"} and tpu["dist_backend"] == "xla"


def test_tpu_name_and_memory_fallbacks(monkeypatch):
    _, xm, _ = fake_xla(monkeypatch)
    monkeypatch.delenv("TPU_ACCELERATOR_TYPE", raising=False)
    monkeypatch.setattr(xm, "get_memory_info", lambda d: (_ for _ in ()).throw(RuntimeError()))
    tpu = ta.discover(VERSIONS)[1]
    assert (tpu["name"], tpu["memory_bytes"]) == ("TPU", None)


def test_torch_xla_on_a_cpu_backend_is_no_tpu(monkeypatch, capsys):
    fake_xla(monkeypatch, hw="CPU")
    assert kinds(ta.discover(VERSIONS)) == ["cpu"]
    assert capsys.readouterr().err == ""


def test_failing_probe_is_left_out_with_one_warning(monkeypatch, no_nvml, capsys):
    def broken(i):
        raise RuntimeError("CUDA driver initialization failed\nyou might not have a CUDA gpu")

    fake_gpus(monkeypatch, [H100])
    monkeypatch.setattr(torch.cuda, "get_device_properties", broken)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 8 * GiB)
    provide(monkeypatch, {"torch_npu": None})  # installed but broken: importing it fails
    records = ta.discover(VERSIONS)
    assert kinds(records) == ["cpu", "mps"]  # the healthy accelerator is still found
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith("perftune: cuda discovery failed") and "RuntimeError" in err[0]
    assert "you might not have" in err[0]  # the message, joined onto one line
    assert err[1].startswith("perftune: npu discovery failed") and "ModuleNotFoundError" in err[1]


# ------------------------------------------------------------------------------ operations
def test_cpu_operations_real():
    acc = ta.accelerator("cpu", cpu_device(VERSIONS, bf16=True))
    assert acc.device(0) == torch.device("cpu") and acc.device(3) == torch.device("cpu")
    assert acc.synchronize() is None and acc.set_device(0) is None
    acc.reset_peak_memory()
    assert acc.peak_memory_bytes() is None
    assert acc.dist_backend == "gloo" and acc.autocast_device_type == "cpu"
    x = torch.ones(4, 4, device=acc.device(0))
    with torch.autocast(acc.autocast_device_type, dtype=torch.bfloat16):
        y = x @ x
    assert y.dtype == torch.bfloat16 and float(y[0, 0]) == 4.0


@pytest.mark.parametrize(("kind", "backend", "autocast"), [
    ("cpu", "gloo", "cpu"), ("cuda", "nccl", "cuda"), ("mps", None, "mps"),
    ("xpu", "xccl", "xpu"), ("npu", "hccl", "npu"), ("tpu", "xla", "xla"),
])  # fmt: skip
def test_dist_backend_and_autocast_type(kind, backend, autocast):
    acc = ta.accelerator(kind)
    assert acc.kind == kind
    assert acc.dist_backend == backend and acc.autocast_device_type == autocast


def test_accelerator_kinds_and_errors():
    assert ta.accelerator("mps").dist_backend is None
    assert ta.accelerator("cuda:1").kind == "cuda"
    assert ta.accelerator("cuda", {"nccl": False}).dist_backend == "gloo"  # e.g. Windows
    with pytest.raises(InvalidConfig, match="unknown device kind"):
        ta.accelerator("ipu")


CPU_REC = {"kind": "cpu", "bf16": True}
H100_REC = {"kind": "cuda", "compute_capability": "9.0", "bf16": True, "tf32": True}
V100_REC = {"kind": "cuda", "compute_capability": "7.0", "bf16": False}
MPS_OLD = {"kind": "mps", "bf16": False}


@pytest.mark.parametrize(("kind", "record", "table"), [
    ("cpu", CPU_REC, {"fp32": True, "bf16": True, "fp16": False, "tf32": False}),
    ("cpu", None, {"fp32": True, "bf16": True, "fp16": False, "tf32": False}),
    ("cuda", H100_REC, {"fp32": True, "bf16": True, "fp16": True, "tf32": True}),
    ("cuda", V100_REC, {"fp32": True, "bf16": False, "fp16": True, "tf32": False}),
    ("mps", MPS_OLD, {"fp32": True, "bf16": False, "fp16": True, "tf32": False}),
    ("mps", {"bf16": True}, {"fp32": True, "bf16": True, "fp16": True, "tf32": False}),
    ("xpu", {"bf16": True}, {"fp32": True, "bf16": True, "fp16": True, "tf32": False}),
    ("npu", {"bf16": True}, {"fp32": True, "bf16": True, "fp16": True, "tf32": False}),
    ("npu", {"bf16": False}, {"fp32": True, "bf16": False, "fp16": True, "tf32": False}),
    ("tpu", {"bf16": True}, {"fp32": True, "bf16": True, "fp16": False, "tf32": False}),
])  # fmt: skip
def test_precision_support_table(kind, record, table):
    acc = ta.accelerator(kind, record)
    assert {p: acc.supports(p) for p in ta.PRECISIONS} == table
    assert acc.supports("fp8") is False


def test_precision_support_from_discovered_records(monkeypatch, no_nvml):
    fake_gpus(monkeypatch, [T4, A100])
    by_name = {r["name"]: r for r in ta.discover(VERSIONS)}
    t4 = ta.accelerator("cuda", by_name["Tesla T4"])
    a100 = ta.accelerator("cuda", by_name["NVIDIA A100-SXM4-40GB"])
    assert (t4.supports("bf16"), t4.supports("tf32"), t4.supports("fp16")) == (False, False, True)
    assert (a100.supports("bf16"), a100.supports("tf32")) == (True, True)


def test_cuda_and_xpu_operations_reach_their_namespaces(monkeypatch):
    calls = []
    for ns in (torch.cuda, torch.xpu):
        tag = ns.__name__.split(".")[-1]
        monkeypatch.setattr(ns, "set_device", lambda i, t=tag: calls.append((t, "set", i)))
        monkeypatch.setattr(ns, "synchronize", lambda t=tag: calls.append((t, "sync")))
        monkeypatch.setattr(ns, "reset_peak_memory_stats", lambda t=tag: calls.append((t, "reset")))
        monkeypatch.setattr(ns, "max_memory_allocated", lambda t=tag: 5 * GiB)
    for kind in ("cuda", "xpu"):
        acc = ta.accelerator(kind)
        assert acc.device(1) == torch.device(kind, 1)
        acc.set_device(1)
        acc.reset_peak_memory()
        acc.synchronize()
        assert acc.peak_memory_bytes() == 5 * GiB
    assert calls == [("cuda", "set", 1), ("cuda", "reset"), ("cuda", "sync"),
                     ("xpu", "set", 1), ("xpu", "reset"), ("xpu", "sync")]  # fmt: skip


def test_mps_operations(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append("sync"))
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 7 * GiB)
    acc = ta.accelerator("mps")
    assert acc.device(0) == torch.device("mps")
    acc.set_device(0)
    acc.reset_peak_memory()
    acc.synchronize()
    assert calls == ["sync"] and acc.peak_memory_bytes() == 7 * GiB


def test_npu_operations_import_torch_npu(monkeypatch):
    npu = fake_npu(monkeypatch)
    acc = ta.accelerator("npu")
    acc.set_device(3)
    acc.reset_peak_memory()
    acc.synchronize()
    assert npu.calls == [("set_device", 3), "reset", "synchronize"]
    assert acc.peak_memory_bytes() == 3 * GiB


def test_tpu_operations(monkeypatch):
    xla, xm, calls = fake_xla(monkeypatch)
    acc = ta.accelerator("tpu")
    assert acc.device(0) == torch.device("xla", 0)
    acc.synchronize()
    assert calls == ["sync", "wait"]
    del xla.sync  # older torch_xla: mark_step instead
    acc.synchronize()
    assert calls == ["sync", "wait", "mark_step", "wait"]
    assert acc.peak_memory_bytes() == 2 * GiB
    monkeypatch.setattr(xm, "get_memory_info", lambda d: {"kb_total": 16 * 2**20, "kb_free": 1})
    assert acc.peak_memory_bytes() is None
