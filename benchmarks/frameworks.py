"""The same ``mlp-digits`` sweep in PyTorch, TensorFlow and MindSpore on the CPU.

Usage::

    python benchmarks/frameworks.py                       # 12 trials per framework
    python benchmarks/frameworks.py --trials 20 --json
    python benchmarks/frameworks.py --frameworks torch,tensorflow

For each framework: a real time-to-target sweep (:func:`perftune.service.sweep`, fork-server
isolation, each framework under its own interpreter, TPE, median pruner, confirmation round of
the top 2 configs and the default, 3 repeats each) in one fresh workspace, then the throughput of
the default and of the winning config measured with the same executor (warm-up, 5 timed windows
of about 1 s, median and spread). Prints, per framework, the default's and the best config's
time-to-target (median of the confirmation repeats, with spread) and throughput, and the
speedups. All three frameworks train the same model on the same data split to the same target,
so the rows compare.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perftune.backends import TrialRequest  # noqa: E402
from perftune.executor import ProcessExecutor  # noqa: E402
from perftune.objectives import summarize  # noqa: E402
from perftune.service import sweep  # noqa: E402
from perftune.settings import Workspace  # noqa: E402
from perftune.sweep import SweepConfig  # noqa: E402


def throughput(framework: str, config: dict, repeats: int) -> dict:
    with ProcessExecutor(framework) as ex:
        out = ex.run(TrialRequest("mlp-digits", framework, "cpu", config, measure="throughput",
                                  warmup_s=1.0, window_s=1.0, repeats=repeats, timeout_s=300))
    if out.status != "ok":
        return {"error": f"{out.cause}: {out.message}"}
    return {"median": out.metrics["throughput_sps"], "spread": out.metrics["throughput_spread"]}


def run(framework: str, trials: int, seed: int, home: Path) -> dict:
    cfg = SweepConfig(workload="mlp-digits", framework=framework, device="cpu", trials=trials,
                      seed=seed, confirm_top=2, confirm_repeats=3)
    t0 = time.perf_counter()
    report = sweep(cfg, Workspace.resolve(home)).to_dict()
    row = {"framework": framework, "sweep_s": time.perf_counter() - t0,
           "trials": report["trials"], "speedup_ttt": report["speedup"]}
    for label in ("baseline", "best"):
        part = report[label]
        row[label] = {"config": part["config"], "ttt": summarize(part["values"])
                      if part["values"] else None}
        row[label]["throughput"] = throughput(framework, part["config"], repeats=5)
    b, w = row["baseline"]["throughput"], row["best"]["throughput"]
    row["speedup_throughput"] = (w["median"] / b["median"]) if "median" in b and "median" in w \
        else None
    return row


def _fmt(stats: dict | None, unit: str) -> str:
    if not stats or "median" not in stats:
        return "-" if not stats else stats.get("error", "-")[:40]
    return f"{stats['median']:.2f}{unit} ±{stats['spread'] * 100:.0f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frameworks", default="torch,tensorflow,mindspore")
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", help="workspace to keep (default: a temporary one)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="perftune-bench-") as tmp:
        home = Path(args.home or tmp)
        rows = [run(fw, args.trials, args.seed, home) for fw in args.frameworks.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    head = ("framework", "default ttt", "best ttt", "ttt speedup", "default sps", "best sps",
            "sps speedup", "best config")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for r in rows:
        cfg = r["best"]["config"]
        short = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in cfg.items())
        su, st = r["speedup_ttt"], r["speedup_throughput"]
        print(" | ".join([
            r["framework"], _fmt(r["baseline"]["ttt"], " s"), _fmt(r["best"]["ttt"], " s"),
            f"{su:.2f}x" if su else "-", _fmt(r["baseline"]["throughput"], ""),
            _fmt(r["best"]["throughput"], ""), f"{st:.2f}x" if st else "-", short]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
