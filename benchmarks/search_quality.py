"""How good is the search? Measure a grid once, then replay sweeps against it (issue 16, item 5).

Usage::

    python benchmarks/search_quality.py build  --workload mlp-digits      # ~30 min on 2 cores, resumable
    python benchmarks/search_quality.py replay --workload mlp-digits      # no training; minutes
    python benchmarks/search_quality.py replay --seeds 5 --policies joint,random --json
    python benchmarks/search_quality.py real   --workload mlp-digits      # a real sweep vs the grid best

``build`` measures, with perftune's own trial runner (``make_executor("torch", isolate=True)``,
the requests built as ``SweepContext.request`` builds them), two tables, cached as JSON under
``benchmarks/search_quality/<workload>.json`` (resumable: cells already there are skipped):

* **throughput**: every valid systems config of ``cpu.yaml`` on this machine (parallel_strategy x
  world_size x num_threads within ``cores // world_size`` x precision) x batch_size, measure
  ``"throughput"``, training knobs at their defaults, 3 seeds;
* **samples**: batch_size x optimizer x learning_rate (a log grid over the space's range), measure
  ``"converge"`` with the default systems config, 2 seeds: samples to the target (None when the
  budget ran out first), time to target, training time;

then a **validation**: random full configs measured for real (time to target) against the
prediction ``samples / throughput`` of the tables, which is the factorisation the replay relies
on. Every cell records the machine's load, the date, the torch version and the cores.

``replay`` runs ``run_sweep`` many times against a :class:`TableExecutor` that answers requests
from the table (no training), for several search policies and seeds, and reports how fast each
finds a config near the grid best, and how good its confirmed best is.

``real`` runs one real ``perftune sweep`` and re-measures its stored best against the grid best
by the same runner.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import itertools
import json
import math
import os
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from perftune.backends import TrialOutcome, TrialRequest  # noqa: E402
from perftune.executor import Executor  # noqa: E402

TABLES = ROOT / "benchmarks" / "search_quality"
#: The log file of a confirmation run (``confirm.py``'s labels): not a search evaluation.
CONFIRMATION = re.compile(r"-(baseline|candidate-\d+)-r\d+\.log$")
SYSTEMS = ("parallel_strategy", "world_size", "num_threads", "precision")
BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512)
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_RANGE = (1e-4, 3e-2)
LR_POINTS = 6
#: An optimizer the table lacks, answered with the nearest one it has (replay only).
NEAREST_OPTIMIZER = {"rmsprop": "sgd", "adagrad": "sgd"}
#: Held at their defaults in the replay's space, so only the grid's knobs vary.
FIXED = {"momentum": (0.9, ("sgd", "rmsprop")), "beta1": (0.9, ("adam", "adamw")),
         "beta2": (0.999, ("adam", "adamw")), "weight_decay": (0.01, ("adamw",))}


def lr_grid(n: int = LR_POINTS, lo: float = LR_RANGE[0], hi: float = LR_RANGE[1]) -> list[float]:
    return [float(f"{lo * (hi / lo) ** (i / (n - 1)):.4g}") for i in range(n)]


def sys_key(cfg: dict[str, Any]) -> str:
    return "/".join(str(cfg[k]) for k in SYSTEMS)


def tp_key(cfg: dict[str, Any]) -> str:
    return f"{sys_key(cfg)}|bs={cfg['batch_size']}"


def sm_key(bs: int, opt: str, lr: float) -> str:
    return f"bs={bs}|{opt}|lr={lr:.4g}"


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------- build
class Builder:
    """Measures cells with perftune's trial runner and keeps the table file up to date."""

    def __init__(self, workload: str, path: Path, budget_s: float) -> None:
        from perftune.devices import Device, select
        from perftune.executor import make_executor
        from perftune.search_spaces import load_space

        self.workload, self.path, self.budget_s = workload, path, budget_s
        self.executor = make_executor("torch", isolate=True)
        self.describe = self.executor.describe(workload)
        self.device = select([Device.from_discovery("torch", d) for d in self.executor.devices()], "cpu")
        self.space = load_space("torch", "cpu", resources=self.device.resources)
        self.defaults = self.space.defaults()
        self.logs = Path(tempfile.mkdtemp(prefix="perftune-sq-"))
        self.table = json.loads(path.read_text()) if path.is_file() else {}
        import torch  # the trials' framework, for the record

        self.torch = torch.__version__

    def machine(self) -> dict[str, Any]:
        return {"cores": self.device.cores, "cpu": self.device.name, "torch": self.torch,
                "python": sys.version.split()[0]}  # fmt: skip

    def systems(self, drop: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every systems config the space admits on this machine (``drop``: strategies left out)."""
        cores = self.device.cores
        strategies = [s for s in self.space.params["parallel_strategy"].choices if s not in drop]
        out = []
        for strat in strategies:
            worlds = [1] if strat == "single" else range(2, cores + 1)
            for ws in worlds:
                for nt in range(1, cores // ws + 1):
                    for prec in self.space.params["precision"].choices:
                        cfg = {**self.defaults, "parallel_strategy": strat, "world_size": ws,
                               "num_threads": nt, "precision": prec}  # fmt: skip
                        if not self.space.violations(cfg):
                            out.append({k: cfg[k] for k in SYSTEMS})
        return out

    def run(self, config: dict[str, Any], measure: str, seed: int, budget_s: float | None = None) -> dict[str, Any]:
        from perftune._load import measure_load, start_load

        req = TrialRequest(workload=self.workload, framework="torch", device="cpu", config=config,
                           measure=measure, seed=seed, device_info=self.device.to_dict(),
                           budget_s=budget_s, timeout_s=180.0,
                           log_path=str(self.logs / f"{measure}-{seed}.log"),
                           warmup_s=0.3, window_s=0.3, repeats=3)  # fmt: skip
        started = start_load()
        t0 = time.perf_counter()
        out = self.executor.run(req)
        wall = time.perf_counter() - t0
        m = out.metrics
        rec = {"seed": seed, "status": out.status, "cause": out.cause, "wall_s": round(wall, 3),
               "date": _now(), **measure_load(started)}  # fmt: skip
        if out.status != "ok":
            rec["message"] = (out.message or "")[:300]
            return rec
        rec["throughput_sps"] = m.get("throughput_sps")
        if measure == "converge":
            reached = bool(m.get("reached_target"))
            rec.update(reached_target=reached, time_to_target_s=m.get("time_to_target_s") if reached else None,
                       train_time_s=m.get("train_time_s"),
                       samples=m.get("samples") if reached else None)  # fmt: skip
        return rec

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.table, indent=1, sort_keys=False) + "\n")
        tmp.replace(self.path)


def _eta(done: int, total: int, t0: float) -> str:
    if not done:
        return "?"
    left = (time.monotonic() - t0) / done * (total - done)
    return f"{left / 60:.1f} min"


def build(args: argparse.Namespace) -> int:
    path = TABLES / f"{args.workload}.json"
    b = Builder(args.workload, path, args.budget)
    t = b.table
    drop = tuple(s for s in args.drop_strategies.split(",") if s)
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    # the default's rate too (when the grid misses it): the replay's baseline is its cell
    lrs = sorted({*lr_grid(args.lr_points), *(float(x) for x in args.extra_lr or [])})
    systems = b.systems(drop)
    t.setdefault("workload", args.workload)
    t.setdefault("framework", "torch")
    t.setdefault("device", "cpu")
    t["machine"] = b.machine()
    t["target"] = b.describe.get("target")
    t["mode"] = b.describe.get("mode", "max")
    t["defaults"] = b.defaults
    t["grid"] = {"systems": systems, "batch_sizes": batch_sizes, "optimizers": list(OPTIMIZERS),
                 "learning_rates": lrs, "throughput_repeats": args.tp_repeats,
                 "samples_seeds": args.sm_seeds, "converge_budget_s": args.budget,
                 "throughput_request": {"warmup_s": 0.3, "window_s": 0.3, "repeats": 3}}  # fmt: skip
    t.setdefault("notes", [])
    for note in args.note or []:
        if note not in t["notes"]:
            t["notes"].append(note)
    tp, sm = t.setdefault("throughput", {}), t.setdefault("samples", {})
    # The systems config of the samples table: the default unless --samples-threads says (samples
    # to the target do not depend on it; only whether the budget suffices does).
    samples_sys = {k: b.defaults[k] for k in SYSTEMS}
    if args.samples_threads:
        samples_sys["num_threads"] = args.samples_threads
    t["grid"]["samples_systems"] = samples_sys
    jobs: list[tuple[str, Any]] = []
    if "throughput" in args.parts:
        for s, bs in itertools.product(systems, batch_sizes):
            cfg = full_config(b.space, b.defaults, {**s, "batch_size": bs})
            have = {r["seed"] for r in tp.get(tp_key(cfg), {}).get("runs", [])}
            jobs += [("throughput", (cfg, seed)) for seed in range(args.tp_repeats) if seed not in have]
    if "samples" in args.parts:
        # Seed-major: every cell's first seed, then the other seeds only of the cells whose first
        # seed reached the target (a cell with a seed short of it is predicted infeasible anyway).
        for seed in range(args.sm_seeds):
            for bs, opt, lr in itertools.product(batch_sizes, OPTIMIZERS, lrs):
                cfg = full_config(b.space, b.defaults, {**samples_sys, "batch_size": bs, "optimizer": opt,
                                                        "learning_rate": lr})  # fmt: skip
                runs = sm.get(sm_key(bs, opt, lr), {}).get("runs", [])
                if seed in {r["seed"] for r in runs}:
                    continue
                if seed > 0 and any(r["seed"] == 0 and r.get("samples") is None for r in runs):
                    continue
                jobs.append(("samples", (cfg, seed)))
    if args.limit:
        jobs = jobs[: args.limit]
    print(f"build {args.workload}: {len(systems)} systems configs x {len(batch_sizes)} batch sizes; "
          f"{len(jobs)} cells to measure (machine: {b.machine()})", flush=True)  # fmt: skip
    t0 = time.monotonic()
    try:
        for i, (kind, (cfg, seed)) in enumerate(jobs):
            if kind == "throughput":
                rec = b.run(cfg, "throughput", seed)
                cell = tp.setdefault(tp_key(cfg), {"config": {k: cfg[k] for k in (*SYSTEMS, "batch_size")}, "runs": []})
                what = f"{rec.get('throughput_sps') or 0:8.0f} sps"
            else:
                runs = sm.get(sm_key(cfg["batch_size"], cfg["optimizer"], cfg["learning_rate"]), {}).get("runs", [])
                if seed > 0 and any(r["seed"] == 0 and r.get("samples") is None for r in runs):
                    print(f"[{i + 1}/{len(jobs)}] samples: skipped seed {seed} (seed 0 missed the target)")
                    continue
                rec = b.run(cfg, "converge", 1000 + seed, budget_s=args.budget)
                key = sm_key(cfg["batch_size"], cfg["optimizer"], cfg["learning_rate"])
                cell = sm.setdefault(key, {"config": {"batch_size": cfg["batch_size"], "optimizer": cfg["optimizer"],
                                                      "learning_rate": cfg["learning_rate"]}, "runs": []})  # fmt: skip
                rec["seed"] = seed
                what = f"samples {rec.get('samples')}, ttt {rec.get('time_to_target_s')}"
            cell["runs"].append(rec)
            b.save()
            key = tp_key(cfg) if kind == "throughput" else key
            print(f"[{i + 1}/{len(jobs)}] {kind} {key} seed {seed}: {rec['status']} {what} "
                  f"({rec['wall_s']:.1f} s, load {rec.get('load_avg_1m')}; ETA {_eta(i + 1, len(jobs), t0)})",
                  flush=True)  # fmt: skip
        t.setdefault("build_s", {})
        for part in args.parts:
            t["build_s"][part] = round(t["build_s"].get(part, 0.0) + (time.monotonic() - t0) / len(args.parts), 1)
        if "validation" in args.parts:
            validate(b, args)
        b.save()
    finally:
        b.executor.close()
    return 0


def full_config(space, defaults: dict[str, Any], cell: dict[str, Any]) -> dict[str, Any]:
    """``cell`` completed with the defaults: every parameter active under it (a conditional one,
    momentum for sgd say, at its own default; an inactive one with ``otherwise`` at that)."""
    base = {**{n: s.default for n, s in space.params.items() if not isinstance(s.default, str)},
            **defaults, **cell}  # fmt: skip
    out = {}
    for name, spec in space.params.items():
        active = all(base.get(k) in v for k, v in spec.when.items())
        if active:
            out[name] = base[name]
        elif spec.has_otherwise:
            out[name] = spec.otherwise
    return out


def validate(b: Builder, args: argparse.Namespace) -> None:
    """Real time to target of random full configs against ``samples / throughput``."""
    table = b.table
    grid = Grid(table)
    rng = random.Random(args.validation_seed)
    val = table.setdefault("validation", {"cells": []})
    t0 = time.monotonic()
    feasible = [c for c in grid.cells() if grid.predict(c) is not None]
    while len(val["cells"]) < args.validation_configs:
        cell = rng.choice(feasible)
        cfg = full_config(b.space, b.defaults, cell)
        runs = [b.run(cfg, "converge", 2000 + s, budget_s=args.budget) for s in range(2)]
        times = [r["time_to_target_s"] for r in runs if r.get("time_to_target_s")]
        pred = grid.predict(cell)
        ratio = statistics.median(times) / pred if times else None
        val["cells"].append({"config": cell, "predicted_s": round(pred, 3), "runs": runs,
                             "measured_s": round(statistics.median(times), 3) if times else None,
                             "ratio": round(ratio, 3) if ratio else None})  # fmt: skip
        b.save()
        print(f"validation [{len(val['cells'])}/{args.validation_configs}] {Grid.key(cell)}: predicted "
              f"{pred:.2f} s, measured {times} -> ratio {ratio if ratio is None else round(ratio, 2)}", flush=True)  # fmt: skip
    ratios = [c["ratio"] for c in val["cells"] if c["ratio"] is not None]
    val["median_ratio"] = round(statistics.median(ratios), 3) if ratios else None
    val["range"] = [min(ratios), max(ratios)] if ratios else None
    val["not_reached"] = sum(c["ratio"] is None for c in val["cells"])
    table.setdefault("build_s", {})["validation"] = round(table.get("build_s", {}).get("validation", 0)
                                                          + time.monotonic() - t0, 1)  # fmt: skip
    print(f"validation: measured / predicted time to target, median {val['median_ratio']} "
          f"(range {val['range']}, {val['not_reached']} not reached)", flush=True)  # fmt: skip


# ----------------------------------------------------------------------------------------- table
class Grid:
    """The two tables, and the predicted time to target of a full config: the median samples
    of its (batch size, optimizer, learning rate) cell over the median throughput of its
    (systems, batch size) cell."""

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = table
        g = table["grid"]
        self.systems = [dict(s) for s in g["systems"]]
        self.batch_sizes, self.optimizers, self.lrs = g["batch_sizes"], g["optimizers"], g["learning_rates"]
        self.tp = {k: [r["throughput_sps"] for r in c["runs"] if r.get("throughput_sps")]
                   for k, c in table["throughput"].items()}  # fmt: skip
        self.sm = {k: [r.get("samples") for r in c["runs"] if r.get("status") == "ok"]
                   for k, c in table["samples"].items()}  # fmt: skip
        self.defaults = table["defaults"]

    @staticmethod
    def key(cell: dict[str, Any]) -> str:
        return f"{tp_key(cell)}|{cell['optimizer']}|lr={cell['learning_rate']:.4g}"

    def cells(self) -> list[dict[str, Any]]:
        return [{**s, "batch_size": bs, "optimizer": o, "learning_rate": lr}
                for s in self.systems for bs in self.batch_sizes for o in self.optimizers for lr in self.lrs]  # fmt: skip

    def snap_lr(self, lr: float) -> float:
        return min(self.lrs, key=lambda g: abs(math.log(g) - math.log(lr)))

    def snap(self, config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The grid cell nearest ``config``, and what was substituted."""
        notes = []
        opt = config["optimizer"]
        if opt not in self.optimizers:
            opt = NEAREST_OPTIMIZER.get(opt, self.optimizers[0])
            notes.append(f"optimizer {config['optimizer']} -> {opt}")
        bs = config["batch_size"]
        if bs not in self.batch_sizes:
            bs = min(self.batch_sizes, key=lambda g: abs(math.log2(g) - math.log2(bs)))
            notes.append(f"batch_size {config['batch_size']} -> {bs}")
        cell = {**{k: config[k] for k in SYSTEMS}, "batch_size": bs, "optimizer": opt,
                "learning_rate": self.snap_lr(float(config["learning_rate"]))}  # fmt: skip
        return cell, notes

    def throughputs(self, cell: dict[str, Any]) -> list[float]:
        return self.tp.get(tp_key(cell), [])

    def samples(self, cell: dict[str, Any]) -> list[int | None]:
        return self.sm.get(sm_key(cell["batch_size"], cell["optimizer"], cell["learning_rate"]), [])

    def predict(self, cell: dict[str, Any]) -> float | None:
        """Predicted time to target (s): median samples / median throughput; None when a
        seed did not reach the target or a cell is missing."""
        tps, sms = self.throughputs(cell), self.samples(cell)
        if not tps or not sms or any(s is None for s in sms):
            return None
        return statistics.median(sms) / statistics.median(tps)

    def best(self) -> tuple[dict[str, Any], float]:
        scored = [(p, c) for c in self.cells() if (p := self.predict(c)) is not None]
        p, c = min(scored, key=lambda pc: pc[0])
        return c, p

    def default_cell(self) -> dict[str, Any]:
        return self.snap(self.defaults)[0]


# ---------------------------------------------------------------------------------------- replay
class TableExecutor(Executor):
    """Answers a sweep's requests from the table, no training. ``throughput``: one of the
    (systems, batch size) cell's repeats; ``converge``: the learning rate snapped to the nearest
    grid value (log distance), an optimizer the table lacks replaced by the nearest one
    (:data:`NEAREST_OPTIMIZER`, counted in ``substitutions``), samples from one of the (batch
    size, optimizer, learning rate) cell's seeds over a throughput from one of the (systems,
    batch size) cell's repeats. Which repeat and which seed: a hash of the request's seed,
    trial number and log file (reproducible, different for each trial and confirmation run).

    Each answer also says what the trial would have cost (its ``wall_s``): a throughput trial
    its warm-up and windows, a converge trial its training time (to the target, or the whole
    budget), each plus the median overhead of the table's own runs of that kind (start-up,
    evaluations)."""

    framework = "torch"

    def __init__(self, grid: Grid, describe: dict[str, Any] | None = None) -> None:
        self.grid = grid
        self.describe_ = describe or {"name": grid.table["workload"], "framework": "torch",
                                      "target": grid.table.get("target"), "mode": grid.table.get("mode", "max"),
                                      "budget_s": grid.table["grid"].get("converge_budget_s", 30.0),
                                      "eval_interval_s": 0.2}  # fmt: skip
        self.requests: list[tuple[TrialRequest, dict[str, Any], float]] = []  # (request, cell, cost s)
        self.substitutions: dict[str, int] = {}
        self.overhead = overheads(grid.table)

    def describe(self, workload: str) -> dict[str, Any]:
        return dict(self.describe_)

    def devices(self) -> list[dict[str, Any]]:
        m = self.grid.table["machine"]
        return [{"kind": "cpu", "name": m.get("cpu", "table CPU"), "count": 1, "memory_bytes": 2**34,
                 "cores": m["cores"]}]  # fmt: skip

    @staticmethod
    def _pick(values: list, request: TrialRequest, salt: str) -> Any:
        h = hashlib.sha256(f"{request.seed}|{request.trial_number}|{os.path.basename(request.log_path or '')}|{salt}".encode())
        return values[int.from_bytes(h.digest()[:4], "big") % len(values)]

    def run(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        cell, notes = self.grid.snap(request.config)
        for n in notes:
            self.substitutions[n] = self.substitutions.get(n, 0) + 1
        tps = self.grid.throughputs(cell)
        if not tps:
            return TrialOutcome("failed", cause="crash", message=f"no throughput measured for {tp_key(cell)}",
                                wall_s=0.0)  # fmt: skip
        tput = self._pick(tps, request, "tp")
        metrics: dict[str, Any] = {"throughput_sps": tput}
        cost = request.warmup_s + request.repeats * request.window_s + self.overhead["throughput"]
        if request.measure == "converge":
            sms = self.grid.samples(cell)
            if not sms:
                return TrialOutcome("failed", cause="crash", message=f"no samples measured for {Grid.key(cell)}",
                                    wall_s=0.0)  # fmt: skip
            samples = self._pick(sms, request, "sm")
            budget = request.budget_s or self.describe_["budget_s"]
            ttt = samples / tput if samples is not None else None
            reached = ttt is not None and ttt <= budget
            metrics.update(reached_target=reached, samples=samples if reached else None,
                           time_to_target_s=ttt if reached else None,
                           train_time_s=ttt if reached else budget)  # fmt: skip
            cost = metrics["train_time_s"] + self.overhead["converge"]
        self.requests.append((request, cell, cost))
        return TrialOutcome("ok", metrics=metrics, wall_s=cost)


def overheads(table: dict[str, Any]) -> dict[str, float]:
    """Seconds a trial costs beyond what it measures, the median over the table's runs: a
    throughput run's wall time less its warm-up and windows, a converge run's less its training
    time (0.1 s and 0.9 s, this machine's figures, where the table has no runs to tell)."""
    req = table["grid"].get("throughput_request") or {}
    timed = req.get("warmup_s", 0.5) + req.get("repeats", 5) * req.get("window_s", 0.5)
    tp = [r["wall_s"] - timed for c in table["throughput"].values() for r in c["runs"] if r.get("wall_s")]
    cv = [r["wall_s"] - r["train_time_s"] for c in table["samples"].values() for r in c["runs"]
          if r.get("wall_s") and r.get("train_time_s") is not None]  # fmt: skip
    return {"throughput": max(0.0, statistics.median(tp)) if tp else 0.1,
            "converge": max(0.0, statistics.median(cv)) if cv else 0.9}


def _fixed_space(grid: Grid, folder: Path) -> Path:
    """The built-in CPU space with only the grid's knobs free: batch size, optimizer and parallel
    strategy among the grid's (a strategy the table left out would only crash),
    momentum/beta1/beta2/weight_decay held at their defaults (:data:`FIXED`)."""
    strategies = list(dict.fromkeys(s["parallel_strategy"] for s in grid.table["grid"]["systems"]))
    lines = ["# search_quality.py replay: the built-in CPU space, only the grid's knobs free.", "version: 1",
             "params:", f"  batch_size: {{type: categorical, choices: {list(grid.batch_sizes)}, default: 32}}",
             f"  optimizer: {{type: categorical, choices: {list(grid.optimizers)}, default: adam}}",
             f"  parallel_strategy: {{type: categorical, choices: {strategies}, default: single}}"]  # fmt: skip
    for name, (value, users) in FIXED.items():
        users = [o for o in users if o in grid.optimizers]
        lines.append(f"  {name}: {{type: categorical, choices: [{value}], default: {value}, when: {{optimizer: {users}}}}}"
                     if users else f"  {name}: null")  # fmt: skip
    path = folder / "replay-space.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _search_supported() -> bool:
    from perftune.sweep import SweepConfig

    return "search" in SweepConfig.__dataclass_fields__


POLICIES = {"joint": {"sampler": "tpe", "search": "joint"}, "random": {"sampler": "random", "search": "joint"},
            "factored": {"sampler": "tpe", "search": "factored"}}  # fmt: skip


def replay_one(grid: Grid, policy: str, seed: int, trials: int, space: str | None, folder: Path,
               confirm_top: int = 2, confirm_repeats: int = 3) -> dict[str, Any]:  # fmt: skip
    """One sweep against the table: the metrics of :func:`score`."""
    import optuna

    from perftune.settings import Workspace
    from perftune.sweep import SweepConfig, run_sweep

    spec = POLICIES[policy]
    kw: dict[str, Any] = {}
    if _search_supported():
        kw["search"] = spec["search"]
    elif spec["search"] != "joint":
        raise SystemExit(f"policy {policy}: this perftune has no SweepConfig.search")
    cfg = SweepConfig(workload=grid.table["workload"], framework="torch", space=space, sampler=spec["sampler"],
                      seed=seed, trials=trials, confirm_top=confirm_top, confirm_repeats=confirm_repeats,
                      track=False, warm_start="off", isolate=False, **kw)  # fmt: skip
    ex = TableExecutor(grid)
    ws = Workspace.resolve(folder / f"{policy}-{seed}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    report = run_sweep(cfg, ws, executor=ex)
    wall = time.perf_counter() - t0
    return score(grid, ex, report, trials) | {"policy": policy, "seed": seed, "wall_s": round(wall, 2)}


def score(grid: Grid, ex: TableExecutor, report, trials: int, within: float = 0.05) -> dict[str, Any]:
    """Evaluations until a config within ``within`` of the grid best's predicted time to target
    was first tried (search trials of every kind counted, in order; only ``converge`` trials try
    a full config); the confirmed best's predicted time to target, and its share of the grid-best
    speedup: (default / best) / (default / grid best) = grid best / best (1.0: the grid best)."""
    _, best_pred = grid.best()
    default_pred = grid.predict(grid.default_cell())
    search = [(r, c, cost) for r, c, cost in ex.requests if r.measure in ("converge", "throughput")
              and not CONFIRMATION.search(r.log_path or "")]  # fmt: skip
    first = first_cost = None
    for i, (r, c, _) in enumerate(search, 1):
        if r.measure != "converge":
            continue
        p = grid.predict(c)
        if p is not None and p <= best_pred * (1 + within):
            first, first_cost = i, sum(cost for _, _, cost in search[:i])
            break
    chosen = (report.best or {}).get("config") or grid.defaults
    chosen_pred = grid.predict(grid.snap(chosen)[0])
    share = best_pred / chosen_pred if chosen_pred else 0.0
    return {"evaluations": len(search), "first_near_best": first, "first_near_best_cost_s": first_cost,
            "search_cost_s": sum(cost for _, _, cost in search), "best_config": grid.snap(chosen)[0],
            "best_pred_s": chosen_pred, "grid_best_pred_s": best_pred, "default_pred_s": default_pred,
            "share_of_grid_speedup": share, "ratio_to_grid_best": (chosen_pred / best_pred) if chosen_pred else None,
            "reported_speedup": report.speedup, "substitutions": dict(ex.substitutions)}  # fmt: skip


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summarize(runs: list[dict[str, Any]], trials: int) -> dict[str, Any]:
    """Median and the 10th-90th percentiles over seeds. A run that never tried a near-best config
    counts as ``trials + 1`` evaluations (censored: the median is then a lower bound)."""
    firsts = [r["first_near_best"] if r["first_near_best"] is not None else trials + 1 for r in runs]
    shares = [r["share_of_grid_speedup"] for r in runs]
    total = [r["search_cost_s"] for r in runs]
    # never found: the whole search's cost (censored like the evaluations)
    costs = [r["first_near_best_cost_s"] if r["first_near_best"] is not None else r["search_cost_s"] for r in runs]
    ratios = [r["ratio_to_grid_best"] if r["ratio_to_grid_best"] is not None else math.inf for r in runs]

    def stat(xs: list[float]) -> dict[str, float]:
        return {"median": statistics.median(xs), "p10": _pct(xs, 0.1), "p90": _pct(xs, 0.9)}

    return {"runs": len(runs), "evaluations_to_near_best": stat(firsts),
            "trial_seconds_to_near_best": stat(costs), "trial_seconds_per_sweep": stat(total),
            "found_near_best": sum(r["first_near_best"] is not None for r in runs),
            "share_of_grid_speedup": stat(shares), "ratio_to_grid_best": stat(ratios),
            "within_1_25x": sum(x <= 1.25 for x in ratios), "share_ge_95": sum(s >= 0.95 for s in shares),
            "wall_s": round(sum(r["wall_s"] for r in runs), 1)}  # fmt: skip


def replay(args: argparse.Namespace) -> int:
    table = json.loads(Path(args.table or TABLES / f"{args.workload}.json").read_text())
    out = run_replay(table, policies=args.policies.split(","), seeds=args.seeds, trials=args.trials,
                     share=args.share, confirm_top=args.confirm_top, confirm_repeats=args.confirm_repeats,
                     fixed=not args.full_space, space=args.space,
                     log=None if args.json else print)  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=1, default=str))
    else:
        print_replay(out)
    return 0


def run_replay(table: dict[str, Any], *, policies: list[str], seeds: int, trials: int | None = None,
               share: float = 0.15, confirm_top: int = 2, confirm_repeats: int = 3, fixed: bool = True,
               space: str | None = None, log=None) -> dict[str, Any]:  # fmt: skip
    grid = Grid(table)
    cells = len(grid.cells())
    trials = trials or max(2, round(share * cells))
    best_cell, best_pred = grid.best()
    default_pred = grid.predict(grid.default_cell())
    if not _search_supported() and "factored" in policies:
        policies = [p for p in policies if p != "factored"]
        if log:
            log("factored: left out (this perftune's SweepConfig has no `search` yet)")
    out: dict[str, Any] = {
        "workload": table["workload"], "grid_cells": cells, "trials": trials,
        "grid_best": {"config": best_cell, "predicted_s": best_pred},
        "default": {"config": grid.default_cell(), "predicted_s": default_pred},
        "grid_best_speedup": default_pred / best_pred if default_pred else None,
        "search_supported": _search_supported(), "policies": {}, "runs": [],
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="perftune-replay-") as tmp:
        folder = Path(tmp)
        space_path = space or (str(_fixed_space(grid, folder)) if fixed else None)
        for policy in policies:
            runs = []
            for seed in range(seeds):
                r = replay_one(grid, policy, seed, trials, space_path, folder, confirm_top, confirm_repeats)
                runs.append(r)
                if log:
                    log(f"{policy} seed {seed}: first near-best at {r['first_near_best']}, best "
                        f"{_fmt(r['best_pred_s'])} s ({r['share_of_grid_speedup']:.0%} of the grid-best speedup), "
                        f"{r['wall_s']:.1f} s")  # fmt: skip
            out["runs"] += runs
            out["policies"][policy] = summarize(runs, trials)
    return out


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def print_replay(out: dict[str, Any]) -> None:
    t = out["trials"]
    print(f"\n{out['workload']}: {out['grid_cells']} grid cells, {t} trials per sweep (15%); grid best "
          f"{out['grid_best']['predicted_s']:.2f} s ({Grid.key(out['grid_best']['config'])}), default "
          f"{_fmt(out['default']['predicted_s'])} s: grid-best speedup {_fmt(out['grid_best_speedup'])}x")  # fmt: skip
    print("| policy | runs | evals to within 5% of grid best (p10-p90) | trial seconds to it (p10-p90) | found "
          "| share of grid-best speedup (p10-p90) | >= 95% | best / grid best (p10-p90) | <= 1.25x "
          "| trial seconds per sweep |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in out["policies"].items():
        e, sh, r = s["evaluations_to_near_best"], s["share_of_grid_speedup"], s["ratio_to_grid_best"]
        c, tot = s["trial_seconds_to_near_best"], s["trial_seconds_per_sweep"]
        print(f"| {name} | {s['runs']} | {e['median']:.0f} ({e['p10']:.0f}-{e['p90']:.0f}) | {c['median']:.0f} "
              f"({c['p10']:.0f}-{c['p90']:.0f}) | {s['found_near_best']}/{s['runs']} | {sh['median']:.0%} "
              f"({sh['p10']:.0%}-{sh['p90']:.0%}) | {s['share_ge_95']}/{s['runs']} | {r['median']:.2f} "
              f"({r['p10']:.2f}-{r['p90']:.2f}) | {s['within_1_25x']}/{s['runs']} | {tot['median']:.0f} |")  # fmt: skip
    pol = out["policies"]
    if "random" in pol:
        rnd = pol["random"]["evaluations_to_near_best"]["median"]
        for name, s in pol.items():
            if name != "random":
                print(f"{name}: {rnd / s['evaluations_to_near_best']['median']:.2f}x fewer evaluations than "
                      "random to within 5% of the grid best (target: >= 2x)")  # fmt: skip
    print("targets: share of the grid-best speedup >= 95% within 15% of the grid's evaluations; stored best "
          "within 1.25x of the grid best's time to target")  # fmt: skip


# ------------------------------------------------------------------------------------------ real
def median_with_misses(times: list[float | None], budget: float) -> float | None:
    """The median time to target of repeated runs, a run that missed the target (None) counted
    as the budget: a lower bound on its time, so a miss weighs against its config instead of
    dropping out of the median."""
    return _median([budget if t is None else t for t in times])


def real(args: argparse.Namespace) -> int:
    """A real sweep; then its stored best and the grid best re-measured by the same runner."""
    table = json.loads((TABLES / f"{args.workload}.json").read_text())
    grid = Grid(table)
    trials = args.trials or round(0.15 * len(grid.cells()))
    with tempfile.TemporaryDirectory(prefix="perftune-sq-real-") as tmp:
        from perftune.settings import Workspace
        from perftune.sweep import SweepConfig, run_sweep

        cfg = SweepConfig(workload=args.workload, framework="torch", trials=trials, seed=args.seed, track=False,
                          warm_start="off", search=args.search, confirm_max_repeats=args.confirm_max_repeats)  # fmt: skip
        t0 = time.monotonic()
        report = run_sweep(cfg, Workspace.resolve(Path(tmp) / "ws"))
        sweep_s = time.monotonic() - t0
    best_cell, best_pred = grid.best()
    budget = max(30.0, table["grid"].get("converge_budget_s", 0.0))  # the table's, when longer
    b = Builder(args.workload, Path(tmp) / "unused.json", budget)
    stored = report.best["config"]
    grid_cfg = full_config(b.space, b.defaults, best_cell)
    try:
        times: dict[str, list] = {"stored": [], "grid": []}
        for s in range(args.runs):  # interleaved
            for name, c in (("stored", stored), ("grid", grid_cfg)):
                times[name].append(b.run(c, "converge", 3000 + s, budget_s=budget).get("time_to_target_s"))
    finally:
        b.executor.close()
    med = {k: median_with_misses(v, budget) for k, v in times.items()}
    reached = {k: sum(x is not None for x in v) for k, v in times.items()}
    ratio = med["stored"] / med["grid"] if med["stored"] and med["grid"] else None
    out = {
        "search": report.search, "trials": trials, "trial_counts": report.trials, "sweep_s": round(sweep_s, 1),
        "reported_speedup": report.speedup, "speedup_interval": report.speedup_interval,
        "stored_config": stored, "grid_best": best_cell, "times": times, "reached": reached, "budget_s": budget,
        "median_s": med, "ratio_stored_to_grid_best": ratio, "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(out, indent=1, default=str) if args.json else
          f"real sweep ({trials} trials, {sweep_s:.0f} s): stored best {med['stored']} s vs grid best "
          f"{med['grid']} s (a miss counts as the {budget:g} s budget; reached: {reached}) -> ratio {ratio} "
          f"(target <= 1.25); {_speedup_text(report)}; runs {times}")  # fmt: skip
    return 0


def _speedup_text(report) -> str:
    """The sweep's reported speedup with its interval and the interval's half-width (target: 10%)."""
    iv = report.speedup_interval
    if report.speedup is None or iv is None:
        return f"reported speedup {report.speedup} (no interval)"
    return (f"reported speedup {report.speedup:.2f}x (95% CI {iv['low']:.2f}-{iv['high']:.2f}x, half-width "
            f"{iv['half_width']:.1%}, target <= 10%, {report.confirm_rounds} paired rounds)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    bp = sub.add_parser("build", help="measure the tables (resumable)")
    bp.add_argument("--workload", default="mlp-digits")
    bp.add_argument("--parts", default="throughput,samples,validation",
                    type=lambda s: [x for x in s.split(",") if x])  # fmt: skip
    bp.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    bp.add_argument("--drop-strategies", default="", help="e.g. fsdp")
    bp.add_argument("--lr-points", type=int, default=LR_POINTS)
    bp.add_argument("--extra-lr", action="append", help="a learning rate added to the grid's (e.g. the default's)")
    bp.add_argument("--tp-repeats", type=int, default=3)
    bp.add_argument("--sm-seeds", type=int, default=2)
    bp.add_argument("--budget", type=float, default=8.0, help="training seconds of a converge cell")
    bp.add_argument("--samples-threads", type=int, default=0,
                    help="num_threads of the samples table's runs (default: the default's)")
    bp.add_argument("--validation-configs", type=int, default=8)
    bp.add_argument("--validation-seed", type=int, default=0)
    bp.add_argument("--limit", type=int, default=0, help="measure at most N cells (timing)")
    bp.add_argument("--note", action="append", help="a note stored in the table (what was shrunk)")
    rp = sub.add_parser("replay", help="replay sweeps against the table")
    rp.add_argument("--workload", default="mlp-digits")
    rp.add_argument("--table", help="a table file (default: benchmarks/search_quality/WORKLOAD.json)")
    rp.add_argument("--policies", default="joint,random,factored")
    rp.add_argument("--seeds", type=int, default=20)
    rp.add_argument("--trials", type=int, default=None, help="default: --share of the grid's cells")
    rp.add_argument("--share", type=float, default=0.15)
    rp.add_argument("--confirm-top", type=int, default=2)
    rp.add_argument("--confirm-repeats", type=int, default=3)
    rp.add_argument("--space", help="a search-space override file (default: the grid's knobs free, "
                    "momentum/beta1/beta2/weight_decay at their defaults)")  # fmt: skip
    rp.add_argument("--full-space", action="store_true", help="the built-in space, every knob free")
    rp.add_argument("--json", action="store_true")
    rl = sub.add_parser("real", help="a real sweep against the grid best")
    rl.add_argument("--workload", default="mlp-digits")
    rl.add_argument("--trials", type=int, default=None)
    rl.add_argument("--runs", type=int, default=3)
    rl.add_argument("--search", default="auto", help="the sweep's --search (auto, joint, factored)")
    rl.add_argument("--seed", type=int, default=0, help="the sweep's --seed")
    rl.add_argument("--confirm-max-repeats", type=int, default=None,
                    help="the sweep's --confirm-max-repeats (default: the sweep's, 6 rounds)")  # fmt: skip
    rl.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with contextlib.suppress(BrokenPipeError):
        return {"build": build, "replay": replay, "real": real}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
