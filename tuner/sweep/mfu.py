"""Achieved FLOP/s and MFU of a measured trial."""

from __future__ import annotations

from typing import Any

from perftune.backends import get_backend
from perftune.sweep.context import SweepContext


def add_mfu(ctx: SweepContext, config: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Achieved FLOP/s and MFU (nanoGPT's way: achieved over peak) of a measured trial, from
    the workload's FLOPs per sample and the device's peak in the trial's precision: the
    vendor table when the device is in it, else a matmul measured here once per precision."""
    flops, sps = ctx.workload.get("flops_per_sample"), metrics.get("throughput_sps")
    if not flops or not sps:
        return
    if ctx.objective.measure == "infer":  # a forward pass only: about a third of a training step's
        flops = flops / 3
    peak, source = peak_flops(ctx, str(config.get("precision", "fp32")))
    achieved = float(sps) * float(flops)
    metrics["achieved_tflops"] = achieved / 1e12
    if peak:
        devices = int(metrics.get("devices_used") or 1)
        metrics["peak_tflops"] = peak * devices / 1e12
        metrics["mfu"] = achieved / (peak * devices)
        metrics["mfu_peak_source"] = source


def peak_flops(ctx: SweepContext, precision: str) -> tuple[float | None, str | None]:
    """The device's peak FLOP/s in ``precision`` and where it came from; found once."""
    from perftune.backends._flops import lookup_peak

    peaks = ctx.peaks
    if precision in peaks:
        return peaks[precision]
    found = lookup_peak(ctx.device.name, precision) if ctx.device.kind != "cpu" else None
    if found is not None:
        peaks[precision] = (found[0], f"table:{found[1]}")
    elif "peak" in get_backend(ctx.cfg.framework).measures:
        out = ctx.execute(ctx.request({"precision": precision}, seed=0, number=None,
                                      label=f"peak-{precision}", measure="peak"))  # fmt: skip
        peak = out.metrics.get("peak_flops") if out.status == "ok" else None
        peaks[precision] = (peak, "measured matmul" if peak else None)
    else:
        peaks[precision] = (None, None)
    return peaks[precision]
