"""Train a workload with the config perftune tuned for this machine (or the defaults), exactly as
the sweep trained it.

After a sweep such as ``perftune sweep --workload examples/my_workload.py:make_workload``::

    python examples/train_with_best.py --workload examples/my_workload.py:make_workload
    python examples/train_with_best.py --workload mlp-digits --home /tmp/ws --vs-default

The heart of it is two calls::

    trial = perftune.Trial.from_best(workload.name, target=workload.target, mode=workload.mode)
    result = trial.run(workload)      # or trial.run(train) for a @perftune.trainable function

``Trial.from_best`` reads the stored best config (the framework's defaults when none is
stored); ``trial.run`` trains with it through perftune's own loop, the one the sweep measured,
with every knob applied: the optimizer, precision, threads, and the ranks of a ddp or fsdp
config, started as the sweep started them. It prints the speedup the sweep *measured* (with the
number of runs behind it) when one is stored, and, with ``--vs-default``, the speedup measured
now against the defaults, on this machine as it is now. It never prints a speedup it does not
know. ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import perftune


def train(workload, *, home: str | None, device: str, stored: bool, seed: int) -> tuple[dict[str, Any], Any]:
    """Train ``workload`` to its target with the stored best config (or the framework's
    defaults); return what was measured and the stored record (None if none)."""
    options = dict(framework=workload.framework, device=device, target=workload.target,
                   mode=workload.mode, seed=seed)  # fmt: skip
    if stored:
        trial = perftune.Trial.from_best(workload.name, home=home, **options)
    else:
        trial = perftune.Trial.from_config(None, **options)
    m = trial.run(workload)["metrics"]
    out = {"workload": workload.name, "source": trial.source, "config": trial.config.to_dict(),
           "reached_target": m["reached_target"], "metric": m["final_metric"],
           "target": workload.target, "train_time_s": m["train_time_s"], "steps": m["steps"]}  # fmt: skip
    return out, trial.record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train with perftune's tuned config.")
    parser.add_argument("--workload", default="mlp-digits",
                        help="a built-in workload or FILE.py:FUNCTION (default mlp-digits)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--home", default=None,
                        help="perftune workspace [env PERFTUNE_HOME; default ./.perftune]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vs-default", action="store_true",
                        help="also train with the defaults now and print the speedup measured now")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    from perftune.workload import resolve

    workload = resolve(args.workload, "torch")  # what make_workload() returns, for FILE.py:FUNC
    out, record = train(workload, home=args.home, device=args.device, stored=True, seed=args.seed)
    if record is not None and record.speedup:
        runs = len((record.metrics or {}).get("repeats") or [])
        out["stored_speedup"] = {"value": record.speedup, "runs_each": runs,
                                 "measured": "by the sweep's confirmation round"}  # fmt: skip
    if args.vs_default and out["source"] == "stored":
        base, _ = train(workload, home=args.home, device=args.device, stored=False, seed=args.seed)
        out["defaults"] = base
        both = out["reached_target"] and base["reached_target"]
        out["speedup_now"] = base["train_time_s"] / out["train_time_s"] if both else None
    if args.json:
        print(json.dumps(out, default=str))
    else:
        print(f"{workload.name}: {out['source']} config {out['config']}")
        state = "reached" if out["reached_target"] else "did not reach"
        print(f"{state} the target {out['target']} (metric {out['metric']:.4f}) after "
              f"{out['train_time_s']:.2f} s of training, {out['steps']} steps")  # fmt: skip
        if "stored_speedup" in out:
            s = out["stored_speedup"]
            print(f"the sweep measured {s['value']:.2f}x over the default (median of {s['runs_each']} runs each)")
        if out.get("speedup_now"):
            print(f"measured now: {out['speedup_now']:.2f}x over the default "
                  f"({out['defaults']['train_time_s']:.2f} s), one run each")  # fmt: skip
    return 0 if out["reached_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
