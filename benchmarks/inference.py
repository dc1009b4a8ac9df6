"""Inference tuning, measured (issue 14): what the stored best serves, against what it replaces.

Usage::

    python benchmarks/inference.py                          # mlp-digits, PyTorch, p99 <= 5 ms
    python benchmarks/inference.py --slo-p99-ms 2 --trials 30 --repeats 5 --json
    python benchmarks/inference.py --framework tensorflow --slo-p99-ms 20

Runs a real ``perftune sweep --task inference`` (objective ``throughput-at-slo``) in a scratch
workspace (``--home`` to keep it), then re-measures, with perftune's own trial runner and the
sweep's trained model, ``--repeats`` times each, interleaved (A B C A B C ...):

* **default**: the framework default (batch 1, fp32, no quantization, no compile, all cores);
* **batch alone**: the default with only the batch size changed, the batch size that serves the
  most samples/s within the SLO (every power of two of the space tried);
* **stored best**: the config ``perftune best`` returns;
* **each quantization** the space offers, on the stored best's batch size: its quality drop
  against the trained fp32 model (measured, never assumed).

Prints each one's median throughput with its 95% interval, p50/p99, quality drop, the stored
best's speedups over the default and over batch-alone (paired-round intervals,
:mod:`perftune.stats`), and whether the stored best's re-measured p99 stays under the SLO.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workload", default="mlp-digits")
    p.add_argument("--framework", default="torch")
    p.add_argument("--slo-p99-ms", type=float, default=5.0)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5, help="re-measurements of each config")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--home", help="workspace to sweep in (default: a scratch directory)")
    p.add_argument("--json", action="store_true")
    return p.parse_args()


def sweep(args: argparse.Namespace, home: str) -> dict[str, Any]:
    from perftune.service import sweep as run
    from perftune.settings import Workspace
    from perftune.sweep import SweepConfig

    cfg = SweepConfig(workload=args.workload, framework=args.framework, task="inference",
                      slo_p99_ms=args.slo_p99_ms, trials=args.trials, seed=args.seed)  # fmt: skip
    cfg.validate()
    report = run(cfg, Workspace.resolve(home), lambda event, data: print(f"  {event} {data}", file=sys.stderr)
                 if event in ("trial", "fitted") else None)  # fmt: skip
    if report.best is None:
        raise SystemExit(f"the sweep stored nothing: {report.warnings}")
    return report.to_dict()


class Runner:
    """Inference trials of one framework on the sweep's trained model, as the sweep runs them."""

    def __init__(self, framework: str, report: dict[str, Any]) -> None:
        from perftune.executor import make_executor

        self.framework, self.report = framework, report
        self.executor = make_executor(framework)
        self.device = next(d for d in self.executor.devices() if d["kind"] == "cpu")

    def measure(self, config: dict[str, Any], seed: int, workload: str) -> dict[str, Any]:
        from perftune.backends import TrialRequest

        req = TrialRequest(workload=workload, framework=self.framework, device="cpu", config=config,
                           measure="infer", seed=seed, device_info=self.device, timeout_s=300,
                           model_path=self.report["inference"]["model_path"], repeats=3)  # fmt: skip
        out = self.executor.run(req)
        if out.status != "ok":
            return {"failed": f"{out.cause}: {out.message}"}
        return out.metrics

    def close(self) -> None:
        self.executor.close()


def batch_alone(runner: Runner, default: dict[str, Any], sizes: list[int], slo: float, workload: str) -> dict:
    """The default config with the batch size that serves the most samples/s within the SLO."""
    fits = []
    for bs in sizes:
        m = runner.measure({**default, "batch_size": bs}, 0, workload)
        print(f"  batch {bs}: {m.get('throughput_sps', 0):,.0f} samples/s, p99 {m.get('p99_ms', float('nan')):.3g} ms",
              file=sys.stderr)  # fmt: skip
        if "failed" not in m and m["p99_ms"] <= slo:
            fits.append((m["throughput_sps"], bs))
    return {**default, "batch_size": max(fits)[1] if fits else 1}


def main() -> None:
    from perftune.objectives import median
    from perftune.search_spaces import load_space
    from perftune.stats import speedup_interval, value_interval

    args = parse()
    home = args.home or tempfile.mkdtemp(prefix="perftune-inference-bench-")
    report = sweep(args, home)
    runner = Runner(args.framework, report)
    try:
        default, best = report["baseline"]["config"], report["best"]["config"]
        space = load_space(args.framework, "cpu", resources={"cores": runner.device["cores"]}, task="inference")
        sizes = list(space.params["batch_size"].choices)
        configs = {"default": default, "batch alone": batch_alone(runner, default, sizes, args.slo_p99_ms,
                                                                   args.workload), "stored best": best}  # fmt: skip
        quant = space.params.get("quantization")
        for q in (c for c in (quant.choices if quant else ()) if c != "none"):
            extra = {"runtime": "tflite"} if args.framework == "tensorflow" else {}
            configs[f"quantized {q}"] = {**default, **extra, "batch_size": best["batch_size"], "quantization": q}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in configs}
        for r in range(args.repeats):  # interleaved rounds: drift hits every config alike
            for name, config in configs.items():
                runs[name].append(runner.measure(config, 1000 + r, args.workload))
    finally:
        runner.close()
    rows = {}
    for name, ms in runs.items():
        ok = [m for m in ms if "failed" not in m]
        sps = [m["throughput_sps"] for m in ok]
        iv = value_interval(sps)
        rows[name] = {"config": configs[name], "runs": len(ok), "failed": [m["failed"] for m in ms if "failed" in m],
                      "throughput_sps": median(sps) if sps else None,
                      "throughput_ci": (iv.low, iv.high) if iv else None,
                      "p50_ms": median([m["p50_ms"] for m in ok]) if ok else None,
                      "p99_ms": median([m["p99_ms"] for m in ok]) if ok else None,
                      "p99_ms_max": max(m["p99_ms"] for m in ok) if ok else None,
                      "quality_drop": max(m["quality_drop"] for m in ok) if ok else None}  # fmt: skip

    def paired(a: str, b: str):
        pairs = [(x["throughput_sps"], y["throughput_sps"]) for x, y in zip(runs[a], runs[b], strict=True)
                 if "failed" not in x and "failed" not in y]  # fmt: skip
        iv = speedup_interval([p[0] for p in pairs], [p[1] for p in pairs], "maximize")
        ratio = statistics.median(y / x for x, y in pairs) if pairs else None
        return {"estimate": iv.estimate if iv else ratio, "low": iv.low if iv else None, "high": iv.high if iv else None}

    best_row = rows["stored best"]
    result = {"workload": args.workload, "framework": args.framework, "slo_p99_ms": args.slo_p99_ms,
              "trials": args.trials, "repeats": args.repeats, "sweep_s": report["duration_s"],
              "sweep_speedup": report["speedup"], "configs": rows,
              "best_over_default": paired("default", "stored best"),
              "best_over_batch_alone": paired("batch alone", "stored best"),
              "best_p99_within_slo": best_row["p99_ms"] is not None and best_row["p99_ms"] <= args.slo_p99_ms}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return
    print(f"\n{args.workload} / {args.framework} / cpu, throughput at p99 <= {args.slo_p99_ms:g} ms "
          f"({args.trials} trials, {report['duration_s'] / 60:.1f} min; each config {args.repeats}x, interleaved)")  # fmt: skip
    print(f"{'config':<24}{'samples/s':>11}  {'95% CI':<17}{'p50 ms':>8}{'p99 ms':>8}{'quality drop':>14}")
    for name, row in rows.items():
        ci = row["throughput_ci"]
        print(f"{name:<24}{row['throughput_sps'] or 0:>11,.0f}  "
              f"{(f'[{ci[0]:,.0f}, {ci[1]:,.0f}]' if ci else '-'):<17}{row['p50_ms'] or 0:>8.3g}"
              f"{row['p99_ms'] or 0:>8.3g}{row['quality_drop'] if row['quality_drop'] is not None else float('nan'):>14.4f}")  # fmt: skip
    for label, key in (("over the default", "best_over_default"), ("over batch size alone", "best_over_batch_alone")):
        s = result[key]
        ci = f" (95% CI {s['low']:.2f}-{s['high']:.2f}x)" if s["low"] is not None else ""
        print(f"stored best {label}: {s['estimate']:.2f}x{ci}")
    verdict = "within" if result["best_p99_within_slo"] else "OVER"
    print(f"stored best's re-measured p99: median {best_row['p99_ms']:.3g} ms, worst {best_row['p99_ms_max']:.3g} ms: "
          f"{verdict} the {args.slo_p99_ms:g} ms SLO")  # fmt: skip
    print(f"stored best config: {json.dumps(best)}")


if __name__ == "__main__":
    main()
