"""What the GPU paths measure on a real CUDA device, without a sweep (no Optuna, MLflow or
database needed): each trial is a real trial process through the torch trial worker.

Usage::

    python benchmarks/gpu_check.py                 # prints one JSON object
    python benchmarks/gpu_check.py --device cuda:1

For the built-in ``cnn-digits`` and ``gpt-tiny`` (perftune's own loop) it times throughput
trials in fp32, tf32 and bf16 and reports samples/s, peak device memory, MFU against the
device's peak in that precision (the vendor table) and energy per sample where NVML reads it;
then a user's training function (``examples/hf_style.py``) to its target in bf16 and its
throughput; a launched script (``examples/script/train.py``) on the GPU; and the batch-size
probe. Every figure is the trial's own median over its timed windows.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from perftune.backends import TrialRequest  # noqa: E402
from perftune.backends._flops import lookup_peak  # noqa: E402
from perftune.executor import ProcessExecutor  # noqa: E402

SCRIPT = [sys.executable, str(ROOT / "examples/script/train.py"), "--batch-size", "{batch_size}",
          "--lr", "{learning_rate}", "--epochs", "200"]  # fmt: skip


def trial(ex, device: dict, workload: str, config: dict, measure: str = "throughput", **kw) -> dict:
    req = TrialRequest(workload=workload, framework="torch", device=device["spec"], config=config,
                       measure=measure, device_info=device, timeout_s=300, window_s=0.5,
                       repeats=5, **kw)  # fmt: skip
    t0 = time.perf_counter()
    out = ex.run(req)
    row = {"workload": workload.rsplit("/", 1)[-1], "measure": measure, "config": config,
           "status": out.status, "wall_s": round(time.perf_counter() - t0, 1)}  # fmt: skip
    if out.status != "ok":
        return {**row, "cause": out.cause, "message": out.message}
    m = out.metrics
    keep = ("throughput_sps", "throughput_spread", "step_time_ms", "peak_device_memory_mb",
            "joules_per_sample", "avg_power_w", "energy_source", "time_to_target_s", "reached_target",
            "final_metric", "samples", "max_batch_size", "largest_fit", "limited_by", "world_size")  # fmt: skip
    return {**row, **{k: m[k] for k in keep if k in m}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    with ProcessExecutor("torch") as ex:
        found = [d for d in ex.devices() if d["kind"] == args.device.split(":")[0]]
        if not found:
            print(json.dumps({"error": f"no {args.device} device found"}))
            return 1
        device = {**found[0], "spec": args.device}
        describe = {w: ex.describe(w) for w in ("cnn-digits", "gpt-tiny")}
        rows = []
        for workload in ("cnn-digits", "gpt-tiny"):
            for precision in ("fp32", "tf32", "bf16"):
                row = trial(ex, device, workload, {"batch_size": 256, "precision": precision})
                flops, sps = describe[workload].get("flops_per_sample"), row.get("throughput_sps")
                peak = lookup_peak(device["name"], precision)
                if flops and sps and peak:
                    row["mfu"] = sps * flops / peak[0]
                    row["peak_source"] = peak[1]
                rows.append(row)
        rows.append(trial(ex, device, "cnn-digits", {"batch_size": 256, "probe_max": 16384},
                          measure="probe"))  # fmt: skip
        hf = str(ROOT / "examples/hf_style.py:train")
        rows.append(trial(ex, device, hf, {"batch_size": 64, "learning_rate": 3e-3, "optimizer": "adamw",
                                           "precision": "bf16"}, measure="converge", budget_s=60))  # fmt: skip
        rows.append(trial(ex, device, hf, {"batch_size": 256, "precision": "bf16"}))
        script = {"batch_size": 256, "learning_rate": 3e-3}
        desc = {"name": "script-digits", "target": 0.95, "mode": "max", "budget_s": 60, "eval_interval_s": 0.25}
        rows.append(trial(ex, device, "-", script, command=SCRIPT, description=desc))
    print(json.dumps({"device": {k: device.get(k) for k in ("name", "count", "memory_bytes", "compute_capability",
                                                            "versions", "bf16", "tf32")},
                      "trials": rows}, indent=2, default=str))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
