"""Peak-FLOPs lookup by reported device name, MFU and transformer FLOPs (stdlib only)."""

from __future__ import annotations

import pytest

from perftune.backends._flops import (
    PEAK_FLOPS,
    PRECISIONS,
    lookup_peak,
    mfu,
    table_key,
    transformer_flops_per_token,
)

# Names as the frameworks report them (torch.cuda.get_device_properties(i).name, the ROCm
# marketing name, JAX/torch_xla device kinds and accelerator types, torch_npu, torch.xpu).
REPORTED = [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 80GB HBM2e", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA GH200 480GB", "GH200"),
    ("NVIDIA B200", "B200"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA A100-SXM4-40GB", "A100"),
    ("NVIDIA A100-PCIE-40GB", "A100"),
    ("NVIDIA A100 80GB PCIe", "A100"),
    ("NVIDIA A10G", "A10G"),
    ("NVIDIA A10", "A10"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA L40", "L40"),
    ("Tesla V100-SXM2-16GB", "V100 SXM2"),
    ("Tesla V100-SXM2-32GB", "V100 SXM2"),
    ("Tesla V100-PCIE-32GB", "V100 PCIe"),
    ("Tesla V100S-PCIE-32GB", "V100S PCIe"),
    ("Tesla T4", "T4"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
    ("NVIDIA GeForce RTX 3090", "RTX 3090"),
    ("AMD Instinct MI300X", "MI300X"),
    ("AMD Instinct MI250X/MI250", "MI250X"),
    ("TPU v4", "TPU v4"),
    ("v4-8", "TPU v4"),
    ("TPU v5 lite", "TPU v5e"),
    ("v5litepod-8", "TPU v5e"),
    ("TPU v5", "TPU v5p"),
    ("TPU v5p", "TPU v5p"),
    ("TPU v6 lite", "TPU v6e"),
    ("Ascend910B2", "Ascend 910B"),
    ("Ascend910B4", "Ascend 910B"),
    ("Intel(R) Data Center GPU Max 1550", "Max 1550"),
]


@pytest.mark.parametrize(("name", "key"), REPORTED)
def test_reported_names_match_their_row(name, key):
    assert table_key(name) == key
    precision = "bf16" if "bf16" in PEAK_FLOPS[key] else "fp16"
    assert lookup_peak(name, precision) == (PEAK_FLOPS[key][precision], key)


def test_every_table_key_names_its_own_row():
    for key in PEAK_FLOPS:
        assert table_key(key) == key, key


def test_ada_l4_l40_l40s_are_told_apart():
    assert lookup_peak("NVIDIA L4", "bf16") == (121e12, "L4")
    assert lookup_peak("NVIDIA L40", "bf16") == (181.05e12, "L40")
    assert lookup_peak("NVIDIA L40S", "bf16") == (362.05e12, "L40S")
    assert lookup_peak("NVIDIA L40S", "tf32") == (183e12, "L40S")


def test_hopper_sxm_pcie_nvl_are_told_apart():
    assert lookup_peak("NVIDIA H100 80GB HBM3", "bf16") == (989.4e12, "H100 SXM")
    assert lookup_peak("NVIDIA H100 80GB HBM3", "fp32") == (66.9e12, "H100 SXM")
    assert lookup_peak("NVIDIA H100 80GB HBM3", "tf32") == (494.7e12, "H100 SXM")
    assert lookup_peak("NVIDIA H100 PCIe", "bf16") == (756e12, "H100 PCIe")
    assert lookup_peak("NVIDIA H100 NVL", "bf16") == (835.5e12, "H100 NVL")
    assert lookup_peak("NVIDIA H200", "bf16") == (989.4e12, "H200")  # the H100 SXM compute
    assert table_key("NVIDIA GH200 480GB") != "H200"
    assert table_key("NVIDIA GB200") is None  # not the B200 row


def test_ampere_a10_a10g_a100_are_told_apart():
    assert lookup_peak("NVIDIA A100-SXM4-80GB", "bf16") == (312e12, "A100")
    assert lookup_peak("NVIDIA A100-SXM4-80GB", "tf32") == (156e12, "A100")
    assert lookup_peak("NVIDIA A100-SXM4-80GB", "fp32") == (19.5e12, "A100")
    assert table_key("NVIDIA A10") == "A10"
    assert table_key("NVIDIA A10G") == "A10G"


@pytest.mark.parametrize("name", [
    "NVIDIA GeForce RTX 4090 Laptop GPU", "NVIDIA GeForce RTX 4090 D", "NVIDIA GeForce RTX 3090 Ti",
    "NVIDIA RTX A6000", "NVIDIA GB200", "Ascend910A", "Apple MPS", "cpu", "",
    "Intel(R) Xeon(R) Platinum 8480+", "AMD EPYC 7V13 64-Core Processor",
])  # fmt: skip
def test_unknown_devices_give_none(name):
    assert table_key(name) is None
    for precision in PRECISIONS:
        assert lookup_peak(name, precision) is None


def test_precision_fallback_and_missing_precisions():
    # No TF32 mode: tf32 is the plain fp32 peak.
    assert lookup_peak("Tesla T4", "tf32") == (8.1e12, "T4")
    assert lookup_peak("Tesla V100-SXM2-16GB", "tf32") == (15.7e12, "V100 SXM2")
    assert lookup_peak("AMD Instinct MI250X", "tf32") == (95.7e12 / 2, "MI250X")
    # fp32 is never the TF32 figure.
    assert lookup_peak("NVIDIA L4", "fp32") == (30.3e12, "L4")
    # No peak for a precision the device lacks: no made-up number.
    assert lookup_peak("Tesla T4", "bf16") is None
    assert lookup_peak("Tesla V100-SXM2-16GB", "bf16") is None
    assert lookup_peak("TPU v5 lite", "fp32") is None
    assert lookup_peak("TPU v5 lite", "bf16") == (197e12, "TPU v5e")
    assert lookup_peak("NVIDIA A100-SXM4-80GB", "int8") is None


def test_table_is_dense_and_consistent():
    for key, row in PEAK_FLOPS.items():
        assert row, key
        assert set(row) <= set(PRECISIONS), key
        assert all(1e12 < v < 1e16 for v in row.values()), key
        if "fp32" in row and "bf16" in row:
            assert row["bf16"] >= row["fp32"], key
        if "fp32" in row and "tf32" in row:
            assert row["fp32"] <= row["tf32"] <= row.get("bf16", row["tf32"]), key


def test_mfu_arithmetic():
    # 1000 samples/s x 156 GFLOP per sample on one A100 at bf16 (312 TFLOP/s): half the peak.
    assert mfu(1000.0, 156e9, 312e12) == pytest.approx(0.5)
    # Global rate over 8 devices.
    assert mfu(8000.0, 156e9, 312e12, devices=8) == pytest.approx(0.5)
    assert mfu(0.0, 1e9, 1e12) == 0.0
    for bad in ({"peak_flops": 0.0}, {"peak_flops": -1.0}, {"devices": 0}):
        kwargs = {"samples_per_s": 1.0, "flops_per_sample": 1.0, "peak_flops": 1e12, **bad}
        with pytest.raises(ValueError):
            mfu(**kwargs)
    with pytest.raises(ValueError):
        mfu(-1.0, 1.0, 1e12)


def test_transformer_flops_gpt2_small_by_hand():
    # nanoGPT's GPT-2 124M: N = 123,653,376 non-embedding params, L=12, H=12, Q=64, T=1024.
    # 6N = 741,920,256; 12*L*H*Q*T = 12*12*12*64*1024 = 113,246,208.
    per_token = transformer_flops_per_token(123_653_376, 12, 12, 64, 1024)
    assert per_token == 855_166_464.0
    # nanoGPT's estimate_mfu: one sequence costs T tokens' worth; at 20 sequences/s on an A100.
    per_sequence = per_token * 1024
    assert mfu(20.0, per_sequence, 312e12) == pytest.approx(20 * 855_166_464 * 1024 / 312e12)
    assert transformer_flops_per_token(1000, 0, 0, 0, 0) == 6000.0
    with pytest.raises(ValueError):
        transformer_flops_per_token(-1, 1, 1, 1, 1)
