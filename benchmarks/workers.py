"""Trials per second with 1..N workers on one PostgreSQL-backed study (a near-no-op workload).

Usage::

    python benchmarks/workers.py                          # 1, 2, 4 and 8 workers, 1,000 trials each
    python benchmarks/workers.py --workers 1,8 --trials 200

Each run is a real ``perftune sweep --workers N`` over ``benchmarks/noop_workload.py`` (a trial
is one optimizer step and one evaluation, so what is timed is perftune's own loop: Optuna's
ask/tell on PostgreSQL, the trial process, MLflow logging), with Optuna, MLflow and perftune's
store each in a fresh schema of ``PERFTUNE_TEST_PG`` (default: the local server's ``test``
database), dropped afterwards. Prints trials per second over the search phase (the report's
duration minus the confirmation round is not separable, so the whole sweep is timed and the
confirmation is kept minimal), and counts failed trials and lock or deadlock errors in the
workers' logs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("PERFTUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def run(workers: int, trials: int) -> dict:
    import sqlalchemy as sa

    tag = uuid.uuid4().hex[:8]
    names = {k: f"perftune_wbench_{k}_{tag}" for k in ("optuna", "mlflow", "store")}
    engine = sa.create_engine(PG)
    with engine.begin() as conn:
        for name in names.values():
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        with tempfile.TemporaryDirectory() as home:
            urls = {k: f"{PG}?options=-csearch_path%3D{v}" for k, v in names.items()}
            cmd = [sys.executable, "-m", "perftune.cli", "sweep", "--workload",
                   f"{ROOT / 'benchmarks' / 'noop_workload.py'}:make_workload", "--workers", str(workers),
                   "--trials", str(trials), "--seed", "0", "--sampler", "random", "--pruner", "none",
                   "--confirm-top", "1", "--confirm-repeats", "1", "--storage", urls["optuna"],
                   "--tracking-uri", urls["mlflow"], "--db", urls["store"], "--home", home, "--json"]  # fmt: skip
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                  env={**os.environ, "PERFTUNE_NO_PROGRESS": "1"})  # fmt: skip
            wall = time.perf_counter() - t
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-2000:])
            report = json.loads(proc.stdout)
            logs = " ".join(p.read_text(errors="replace") for p in Path(home, "logs").glob("*worker-*.log"))
            text = (proc.stderr + logs).lower()
            return {"workers": workers, "trials": trials, "wall_s": wall,
                    "trials_per_s": trials / wall, "counts": report["trials"],
                    "failures": len(report["failures"]),
                    "lock_errors": text.count("database is locked") + text.count("deadlock")}  # fmt: skip
    finally:
        with engine.begin() as conn:
            for name in names.values():
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--trials", type=int, default=1000)
    args = ap.parse_args()
    rows = [run(int(w), args.trials) for w in args.workers.split(",")]
    base = rows[0]["trials_per_s"]
    for r in rows:
        print(f"{r['workers']} worker(s): {r['trials']} trials in {r['wall_s']:.1f} s = {r['trials_per_s']:.2f} "
              f"trials/s ({r['trials_per_s'] / base:.2f}x of {rows[0]['workers']}); trials {r['counts']}; "
              f"failed trials {r['failures']}, lock/deadlock errors {r['lock_errors']}")  # fmt: skip


if __name__ == "__main__":
    main()
