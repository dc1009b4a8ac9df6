"""Tune PyTorch workloads on one device and report how close the result gets to the hardware.

Usage::

    python benchmarks/accelerators.py                                  # the best device found here
    python benchmarks/accelerators.py --device cuda --trials 24 --json
    python benchmarks/accelerators.py --device cpu --workloads cnn-digits --objective time-to-target
    python benchmarks/accelerators.py --workloads gpt-tiny,examples/gpt_gpu.py:gpt_gpu

For each workload: a real sweep (:func:`perftune.service.sweep`: the batch-size probe first, TPE,
median pruner, confirmation round of the top 2 configs and the default, 3 repeats each) in one
fresh workspace. Prints per workload the default's and the best config's objective (median and
spread of the confirmation repeats), throughput, MFU (achieved FLOP/s over the device's peak in
the config's precision: the vendor table, or a matmul measured here for unknown devices and the
CPU), energy per sample where NVML or RAPL can be read, the probe's batch bound and the speedup.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perftune.service import list_devices, sweep  # noqa: E402
from perftune.settings import Workspace  # noqa: E402
from perftune.sweep import SweepConfig  # noqa: E402


def pick_device() -> str:
    kinds = [d["kind"] for d in list_devices(["torch"]) if d.get("kind")]
    return next((k for k in ("cuda", "npu", "xpu", "tpu", "mps") if k in kinds), "cpu")


def run_one(workload: str, device: str, args, home: Path) -> dict:
    cfg = SweepConfig(workload=workload, framework="torch", device=device, objective=args.objective,
                      trials=args.trials, seed=args.seed, budget_s=args.budget,
                      batch_probe="on")  # fmt: skip
    t0 = time.monotonic()
    report = sweep(cfg, Workspace.resolve(home / workload.replace("/", "_").replace(":", "_")))
    best, base = report.best or {}, report.baseline or {}
    bm, dm = best.get("metrics") or {}, base.get("metrics") or {}
    return {
        "workload": report.workload, "device": report.device["name"], "objective": report.objective,
        "unit": report.unit, "default": (base.get("stats") or {}).get("median"),
        "default_spread": (base.get("stats") or {}).get("spread"),
        "best": (best.get("stats") or {}).get("median"), "best_spread": (best.get("stats") or {}).get("spread"),
        "speedup": report.speedup, "best_config": best.get("config"),
        "default_throughput_sps": dm.get("throughput_sps"), "best_throughput_sps": bm.get("throughput_sps"),
        "default_mfu": dm.get("mfu"), "best_mfu": bm.get("mfu"), "mfu_peak_source": bm.get("mfu_peak_source"),
        "best_joules_per_sample": bm.get("joules_per_sample"), "best_avg_power_w": bm.get("avg_power_w"),
        "energy_source": bm.get("energy_source"),
        "max_batch_size": (report.batch_probe or {}).get("max_batch_size"),
        "trials": report.trials, "minutes": round((time.monotonic() - t0) / 60, 1),
    }  # fmt: skip


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best found)")
    ap.add_argument("--workloads", default="gpt-tiny,cnn-digits")
    ap.add_argument("--objective", default="throughput", choices=["throughput", "time-to-target"])
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=None, help="training seconds cap per trial")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = args.device or pick_device()
    rows = []
    with tempfile.TemporaryDirectory(prefix="perftune-bench-") as tmp:
        for wl in args.workloads.split(","):
            rows.append(run_one(wl, device, args, Path(tmp)))
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return
    for r in rows:
        print(f"\n{r['workload']} on {r['device']} ({r['objective']}, {r['minutes']} min, trials {r['trials']})")
        print(f"  default: {r['default']:.4g} {r['unit']} ±{100 * (r['default_spread'] or 0):.0f}%, "
              f"MFU {_pct(r['default_mfu'])}")
        print(f"  best:    {r['best']:.4g} {r['unit']} ±{100 * (r['best_spread'] or 0):.0f}%, "
              f"MFU {_pct(r['best_mfu'])} ({r['mfu_peak_source']}), speedup {r['speedup']:.2f}x")
        if r["best_throughput_sps"]:
            print(f"  throughput: {r['default_throughput_sps'] or 0:,.0f} -> {r['best_throughput_sps']:,.0f} samples/s")
        energy = (f"{r['best_joules_per_sample']:.3g} J/sample at {r['best_avg_power_w']:.0f} W ({r['energy_source']})"
                  if r["best_joules_per_sample"] is not None else f"energy {r['energy_source'] or 'unavailable'}")  # fmt: skip
        print(f"  {energy}; batch size bounded at {r['max_batch_size']} by the probe")
        print(f"  best config: {r['best_config']}")


if __name__ == "__main__":
    main()
