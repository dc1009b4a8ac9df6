"""Does the tuned result reach the user's own training? Sweep, then run the stored best again
outside the sweep, the way a user runs it, and compare.

Usage::

    python benchmarks/transfer.py                       # all cases, 8 trials each, 3 runs each
    python benchmarks/transfer.py --cases hf-style,script --trials 12 --runs 5 --json

For each case (``hf-style``: a ``@perftune.trainable`` function, ``examples/hf_style.py``;
``script``: an argparse script perftune launches, ``examples/script/train.py``; ``torchrun``:
the same script under torchrun on 2 CPU ranks; ``keras``: ``model.fit`` through the callback,
``examples/keras_fit.py``, when a TensorFlow interpreter is found):

1. a real ``perftune sweep`` (time to target) in a fresh workspace;
2. the stored best run again outside the sweep, in a fresh process each time (the function
   through ``perftune.Trial.from_best(...).run(train)``, a script through ``perftune run``), and
   the defaults likewise, interleaved (best, default, best, default, ...) so drift on the
   machine hits both alike;
3. prints the stored value (the sweep's confirmed median) and the speedup the sweep reported
   (``kept``: it found nothing better than the default and stored the default), the median of
   the runs outside it, their ratio (the tuned config is as fast outside as inside when it is
   near 1; the target is at most 1.25), and the speedup over the defaults measured now.

The times are wall-clock training seconds to the target (evaluation excluded): run it on an
idle machine; the load average at the start and the end is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SCRIPT = ["examples/script/train.py", "--batch-size", "{batch_size}", "--lr", "{learning_rate}", "--epochs", "500"]
CASES = {
    "hf-style": {"sweep": ["--workload", "examples/hf_style.py:train"], "name": "hf-style",
                 "module": "examples/hf_style.py", "target": 0.98},
    "script": {"sweep": ["--name", "script-digits", "--target", "0.97", "--eval-interval", "0.1", "--space",
                         "examples/script/space.yaml"], "name": "script-digits",
               "command": [PY, *SCRIPT]},
    "torchrun": {"sweep": ["--name", "script-ddp", "--target", "0.97", "--eval-interval", "0.1", "--space",
                           "examples/script/space-ddp.yaml"], "name": "script-ddp",
                 "command": [PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                             "{world_size}", *SCRIPT]},
    "keras": {"sweep": ["--workload", "examples/keras_fit.py:train"], "name": "keras-digits",
              "module": "examples/keras_fit.py", "target": 0.95, "framework": "tensorflow"},
}  # fmt: skip

RUN_FUNCTION = """
import json, runpy, sys, perftune
ns = runpy.run_path(sys.argv[1])
fw, target, stored = sys.argv[2], float(sys.argv[3]), sys.argv[4] == "stored"
trial = (perftune.Trial.from_best(ns["train"].name, framework=fw, target=target) if stored
         else perftune.Trial.from_config(None, framework=fw, target=target))
m = trial.run(ns["train"])["metrics"]
print(json.dumps({"source": trial.source, "reached": m["reached_target"], "time": m["train_time_s"]}))
"""


def cli(*args: str, env: dict, timeout: float = 3600) -> dict:
    proc = subprocess.run([PY, "-m", "perftune.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"perftune {' '.join(args[:3])} failed: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def run_once(case: dict, stored: bool, env: dict) -> float | None:
    """Training seconds to the target of one run outside the sweep (None: not reached)."""
    if "command" in case:
        args = ["run", "--name", case["name"], "--json"] + ([] if stored else ["--defaults"])
        space = case["sweep"][case["sweep"].index("--space") + 1]
        target = case["sweep"][case["sweep"].index("--target") + 1]
        args += ["--space", space, "--target", target, "--eval-interval", "0.1", "--", *case["command"]]
        for attempt in range(2):  # torchrun's standalone rendezvous can lose its port race once
            proc = subprocess.run([PY, "-m", "perftune.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True)
            if proc.returncode in (0, 1) and proc.stdout.strip():
                break
            print(f"perftune run failed (attempt {attempt + 1}): {proc.stderr.strip()[-300:]}", file=sys.stderr)
        else:
            raise SystemExit("perftune run failed twice")
        m = json.loads(proc.stdout)["metrics"]
        return m["train_time_s"] if m["reached_target"] else None
    python = interpreter(case.get("framework", "torch"))
    proc = subprocess.run([python, "-c", RUN_FUNCTION, case["module"], case.get("framework", "torch"),
                           str(case["target"]), "stored" if stored else "defaults"],
                          cwd=ROOT, env=env, capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{case['module']} failed: {proc.stderr.strip()[-500:]}")
    out = json.loads(proc.stdout.splitlines()[-1])
    return out["time"] if out["reached"] else None


def interpreter(framework: str) -> str:
    from perftune.executor import python_for

    return python_for(framework)


def measure(name: str, case: dict, trials: int, runs: int) -> dict:
    from perftune.executor import _perftune_path

    home = tempfile.mkdtemp(prefix=f"perftune-transfer-{name}-")
    # perftune (with perftune.storage) for every interpreter, the framework's own ones included.
    env = {**os.environ, "PERFTUNE_HOME": home, "PERFTUNE_NO_PROGRESS": "1", "PYTHONPATH": _perftune_path()}
    args = ["sweep", *case["sweep"], "--trials", str(trials), "--seed", "0", "--json"]
    report = cli(*args, *(["--", *case["command"]] if "command" in case else []), env=env)
    if report["best"] is None:
        return {"case": name, "error": "the sweep found no config that reached the target"}
    best, default = [], []
    for _ in range(runs):  # interleaved: best, default, best, default...
        best.append(run_once(case, True, env))
        default.append(run_once(case, False, env))
    reached_best = [t for t in best if t is not None]
    reached_default = [t for t in default if t is not None]
    stored = report["best"]["stats"]["median"]
    med_best = statistics.median(reached_best) if reached_best else None
    med_default = statistics.median(reached_default) if reached_default else None
    kept = report["best"]["label"] == "baseline"  # the sweep found nothing better than the default
    return {"case": name, "stored_s": stored, "sweep_speedup": report["speedup"], "kept_default": kept,
            "rerun_s": best, "default_s": default, "rerun_median_s": med_best,
            "ratio_to_stored": med_best / stored if med_best else None,
            "speedup_now": med_default / med_best if med_best and med_default else None,
            "config": report["best"]["config"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    results = []
    for name in args.cases.split(","):
        if name == "keras" and interpreter("tensorflow") == sys.executable and not _importable("tensorflow"):
            results.append({"case": name, "error": "no TensorFlow interpreter"})
            continue
        results.append(measure(name, CASES[name], args.trials, args.runs))
    loads = {"load_start": load, "load_end": os.getloadavg()[0]}
    if args.json:
        print(json.dumps({"results": results, **loads}, indent=2))
        return 0
    print(f"load average: {loads['load_start']:.1f} at the start, {loads['load_end']:.1f} at the end")
    print(f"{'case':10} {'stored':>8} {'sweep':>6} {'rerun':>8} {'ratio':>6} {'default':>8} {'now':>6}  runs (s)")
    for r in results:
        if "error" in r:
            print(f"{r['case']:10} {r['error']}")
            continue
        fmt = lambda v: f"{v:.2f}" if v is not None else "-"  # noqa: E731
        default = statistics.median([t for t in r["default_s"] if t]) if any(r["default_s"]) else None
        sweep = "kept" if r["kept_default"] else fmt(r["sweep_speedup"])
        print(f"{r['case']:10} {fmt(r['stored_s']):>8} {sweep:>6} {fmt(r['rerun_median_s']):>8} "
              f"{fmt(r['ratio_to_stored']):>6} {fmt(default):>8} {fmt(r['speedup_now']):>6}  "
              f"best {[fmt(t) for t in r['rerun_s']]} default {[fmt(t) for t in r['default_s']]}")  # fmt: skip
    return 0


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
