"""Model FLOPs utilisation the way nanoGPT measures it (stdlib only).

MFU = achieved FLOP/s (samples/s x FLOPs per sample) / the devices' peak FLOP/s. The peak comes
from :data:`PEAK_FLOPS`, vendor datasheet figures without structured sparsity, looked up by the
device name the framework reports (:func:`lookup_peak`); a device missing from the table gives
``None`` and the caller falls back to a measured matmul peak. The FLOPs of a transformer step
come from :func:`transformer_flops_per_token` (PaLM appendix B, as in nanoGPT's
``estimate_mfu``).

Conventions of the table: one entry per device as the framework sees it (a ROCm GCD, a TPU
chip), FLOP/s of dense matrix multiplication, fp16/bf16 with fp32 accumulation (what training
uses; GeForce cards run that at half their fp16-accumulate rate), ``fp32`` the plain fp32 rate
(no TF32), ``tf32`` present only where the hardware has a TF32 mode.
"""

from __future__ import annotations

import re

#: Dense peak FLOP/s per device and precision (``fp32``, ``tf32``, ``bf16``, ``fp16``).
#: Sparse datasheet figures ("with sparsity", marked *) are halved.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # NVIDIA H100 Tensor Core GPU architecture whitepaper, table 3 (H100 SXM5, boost clock).
    "H100 SXM": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},
    # Same whitepaper, H100 PCIe column (datasheet: FP32 51, TF32 756*, BF16 1513*).
    "H100 PCIe": {"fp32": 51.2e12, "tf32": 378e12, "bf16": 756e12, "fp16": 756e12},
    # NVIDIA H100 datasheet (per-GPU H100 NVL column): FP32 60, TF32 835*, BF16/FP16 1671*.
    "H100 NVL": {"fp32": 60e12, "tf32": 835e12 / 2, "bf16": 1671e12 / 2, "fp16": 1671e12 / 2},
    # NVIDIA H200 datasheet, H200 SXM column: the H100 SXM compute (FP32 67, BF16 1979*).
    "H200": {"fp32": 66.9e12, "tf32": 494.7e12, "bf16": 989.4e12, "fp16": 989.4e12},
    # NVIDIA H200 datasheet, H200 NVL column: FP32 60, TF32 835*, BF16/FP16 1671*.
    "H200 NVL": {"fp32": 60e12, "tf32": 835e12 / 2, "bf16": 1671e12 / 2, "fp16": 1671e12 / 2},
    # NVIDIA GH200 Grace Hopper datasheet, GPU part: FP32 67, TF32 989*, BF16/FP16 1979*.
    "GH200": {"fp32": 67e12, "tf32": 989e12 / 2, "bf16": 1979e12 / 2, "fp16": 1979e12 / 2},
    # NVIDIA HGX B200 (8 GPUs): FP32 600 TF, TF32 18 PF*, BF16/FP16 36 PF*; per GPU.
    "B200": {"fp32": 600e12 / 8, "tf32": 18e15 / 16, "bf16": 36e15 / 16, "fp16": 36e15 / 16},
    # NVIDIA A100 datasheet (40/80 GB, SXM and PCIe alike): FP32 19.5, TF32 156, BF16/FP16 312.
    "A100": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12, "fp16": 312e12},
    # NVIDIA A10 datasheet: FP32 31.2, TF32 62.5, BF16/FP16 125.
    "A10": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12},
    # AWS's A10G has no NVIDIA datasheet; the A10 datasheet figures (as PyTorch Lightning's
    # throughput utilities use them). Its clocks are lower than the A10's: an upper bound.
    "A10G": {"fp32": 31.2e12, "tf32": 62.5e12, "bf16": 125e12, "fp16": 125e12},
    # NVIDIA L4 datasheet: FP32 30.3, TF32 120*, BF16/FP16 242*.
    "L4": {"fp32": 30.3e12, "tf32": 60e12, "bf16": 121e12, "fp16": 121e12},
    # NVIDIA L40S datasheet: FP32 91.6, TF32 183, BF16/FP16 362.05.
    "L40S": {"fp32": 91.6e12, "tf32": 183e12, "bf16": 362.05e12, "fp16": 362.05e12},
    # NVIDIA L40 datasheet: FP32 90.5, TF32 90.5, BF16/FP16 181.05.
    "L40": {"fp32": 90.5e12, "tf32": 90.5e12, "bf16": 181.05e12, "fp16": 181.05e12},
    # NVIDIA V100 datasheet: SXM2 FP32 15.7, tensor (FP16) 125; PCIe 14 / 112; V100S 16.4 / 130.
    # Volta has neither BF16 nor TF32.
    "V100 SXM2": {"fp32": 15.7e12, "fp16": 125e12},
    "V100 PCIe": {"fp32": 14e12, "fp16": 112e12},
    "V100S PCIe": {"fp32": 16.4e12, "fp16": 130e12},
    # NVIDIA T4 datasheet: FP32 8.1, mixed precision (FP16/FP32) 65. No BF16, no TF32.
    "T4": {"fp32": 8.1e12, "fp16": 65e12},
    # NVIDIA Ada GPU architecture whitepaper, appendix (RTX 4090): FP32 82.6, TF32 82.6 (165.2*),
    # FP16/BF16 tensor with FP32 accumulate 165.2 (330.3 with FP16 accumulate).
    "RTX 4090": {"fp32": 82.6e12, "tf32": 82.6e12, "bf16": 165.2e12, "fp16": 165.2e12},
    # NVIDIA Ampere GA102 whitepaper, appendix (RTX 3090): FP32 35.6, TF32 35.6 (71*),
    # FP16/BF16 tensor with FP32 accumulate 71 (142 with FP16 accumulate).
    "RTX 3090": {"fp32": 35.6e12, "tf32": 35.6e12, "bf16": 71e12, "fp16": 71e12},
    # AMD Instinct MI300X datasheet: FP32 matrix 163.4, TF32 653.7, BF16/FP16 1307.4 (dense).
    "MI300X": {"fp32": 163.4e12, "tf32": 653.7e12, "bf16": 1307.4e12, "fp16": 1307.4e12},
    # AMD Instinct MI250X datasheet (one OAM = 2 GCDs, and the framework sees each GCD as a
    # device): FP32 matrix 95.7, BF16/FP16 383 per OAM, halved per GCD. No TF32.
    "MI250X": {"fp32": 95.7e12 / 2, "bf16": 383e12 / 2, "fp16": 383e12 / 2},
    # Google Cloud TPU system architecture pages, per chip, bf16 only (the MXU multiplies bf16;
    # fp32 matmuls are several bf16 passes, so there is no single fp32 peak).
    "TPU v4": {"bf16": 275e12},
    "TPU v5e": {"bf16": 197e12},
    "TPU v5p": {"bf16": 459e12},
    "TPU v6e": {"bf16": 918e12},
    # Huawei publishes no per-SKU Ascend 910B figure; 354 TFLOPS FP16/BF16 is the value verl's
    # FLOPs counter uses for every 910B bin. Treat MFU on Ascend as approximate.
    "Ascend 910B": {"bf16": 354e12, "fp16": 354e12},
    # Intel Data Center GPU Max 1550 product brief (whole card, both stacks): FP32 52,
    # TF32 419, BF16/FP16 839 (XMX). With ZE_FLAT_DEVICE_HIERARCHY=FLAT each stack is a device
    # with half of this.
    "Max 1550": {"fp32": 52e12, "tf32": 419e12, "bf16": 839e12, "fp16": 839e12},
}

# (pattern, table key), tried in order on the reported device name, case-insensitively; the
# first match wins. More specific names come before the names they contain ("H100 NVL" before
# "H100", "L40S" before "L40" before "L4"); word boundaries keep "A100" from matching "A10",
# "GH200" from matching "H200" and "GB200" from matching "B200".
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), key)
    for p, key in (
        (r"\bGH200\b", "GH200"),
        (r"\bH200\b.*\bNVL\b", "H200 NVL"),
        (r"\bH200\b", "H200"),
        (r"\bH100\b.*\bNVL\b", "H100 NVL"),
        (r"\bH100\b.*\b(?:PCIe|HBM2e)\b", "H100 PCIe"),
        (r"\bH100\b", "H100 SXM"),  # "NVIDIA H100 80GB HBM3", "H100 SXM5"
        (r"\bB200\b", "B200"),
        (r"\bA100\b", "A100"),  # "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe"
        (r"\bA10G\b", "A10G"),
        (r"\bA10\b", "A10"),
        (r"\bL40S\b", "L40S"),
        (r"\bL40\b", "L40"),
        (r"\bL4\b", "L4"),
        (r"\bV100S\b", "V100S PCIe"),
        (r"\bV100\b.*\bPCIe\b", "V100 PCIe"),
        (r"\bV100\b", "V100 SXM2"),  # "Tesla V100-SXM2-16GB", "-SXM2-32GB", "-SXM3-32GB"
        (r"\bT4\b", "T4"),
        # Laptop parts and the export "RTX 4090 D" share the name but not the clocks.
        (r"\bRTX\s*4090\b(?!\s*D\b)(?!.*\b(?:Laptop|Mobile|Max-Q)\b)", "RTX 4090"),
        (r"\bRTX\s*3090\b(?!\s*Ti\b)(?!.*\b(?:Laptop|Mobile|Max-Q)\b)", "RTX 3090"),
        (r"\bMI300X\b", "MI300X"),
        (r"\bMI250X\b", "MI250X"),
        # TPUs: JAX/torch_xla report "TPU v4", "TPU v5 lite" (v5e), "TPU v5" or "TPU v5p",
        # "TPU v6 lite" (v6e); accelerator types read "v5litepod-8", "v4-8".
        (r"(?:\bTPU[\s_-]*|^)v6\s*(?:e|lite)", "TPU v6e"),
        (r"(?:\bTPU[\s_-]*|^)v5\s*(?:e\b|lite)", "TPU v5e"),
        (r"(?:\bTPU[\s_-]*|^)v5\s*p?\b", "TPU v5p"),
        (r"(?:\bTPU[\s_-]*|^)v4\b", "TPU v4"),
        (r"(?:\bAscend[\s_-]*|^)910B\d?\b", "Ascend 910B"),  # "Ascend910B2", "Ascend910B4"
        (r"\bMax\s*1550\b", "Max 1550"),  # "Intel(R) Data Center GPU Max 1550"
    )
)

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")


def table_key(device_name: str) -> str | None:
    """The :data:`PEAK_FLOPS` key of a reported device name (or of a key itself), or ``None``."""
    name = " ".join(str(device_name).split())
    for pattern, key in _PATTERNS:
        if pattern.search(name):
            return key
    return None


def lookup_peak(device_name: str, precision: str) -> tuple[float, str] | None:
    """``(peak FLOP/s, table key)`` of one device at ``precision``, or ``None``.

    ``device_name`` is what the framework reports (``torch.cuda.get_device_properties(i).name``,
    ``torch.npu.get_device_name``, a TPU's device kind...). ``precision`` is ``fp32``, ``tf32``,
    ``bf16`` or ``fp16``; ``tf32`` on a device without a TF32 mode is its ``fp32`` peak (that
    is what such a device runs). ``None`` for an unknown device, an unknown precision, or a
    precision the device has no peak for (bf16 on a V100 or T4, fp32 on a TPU).
    """
    key = table_key(device_name)
    if key is None or precision not in PRECISIONS:
        return None
    row = PEAK_FLOPS[key]
    if precision == "tf32" and "tf32" not in row:
        precision = "fp32"
    peak = row.get(precision)
    return None if peak is None else (peak, key)


def mfu(samples_per_s: float, flops_per_sample: float, peak_flops: float,
        devices: int = 1) -> float:  # fmt: skip
    """Model FLOPs utilisation: achieved FLOP/s over the peak of ``devices`` devices.

    ``samples_per_s`` is the global rate (all devices together) and ``flops_per_sample`` the
    training FLOPs of one sample (forward and backward). Raises ``ValueError`` for a
    non-positive peak or device count, or a negative rate or FLOP count.
    """
    if not peak_flops > 0:
        raise ValueError(f"peak_flops must be > 0, got {peak_flops!r}")
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices!r}")
    if samples_per_s < 0 or flops_per_sample < 0:
        raise ValueError("samples_per_s and flops_per_sample must be >= 0")
    return samples_per_s * flops_per_sample / (peak_flops * devices)


def transformer_flops_per_token(n_params: int, n_layer: int, n_head: int, head_dim: int,
                                seq_len: int) -> float:  # fmt: skip
    """Training FLOPs per token of a decoder-only transformer: ``6*N + 12*L*H*Q*T``.

    ``6*N``: forward (2) and backward (4) multiply-adds of every weight, ``N`` the non-embedding
    parameter count (nanoGPT's ``get_num_params()``, position embeddings excluded);
    ``12*L*H*Q*T``: the attention scores and weighted values over a context of ``T`` tokens.
    A sequence of ``seq_len`` tokens costs ``seq_len`` times this (PaLM, appendix B; nanoGPT's
    ``estimate_mfu``).
    """
    for name, value in (("n_params", n_params), ("n_layer", n_layer), ("n_head", n_head),
                        ("head_dim", head_dim), ("seq_len", seq_len)):  # fmt: skip
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
    return 6.0 * n_params + 12.0 * n_layer * n_head * head_dim * seq_len


__all__ = [
    "PEAK_FLOPS",
    "PRECISIONS",
    "lookup_peak",
    "mfu",
    "table_key",
    "transformer_flops_per_token",
]
