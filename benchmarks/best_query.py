"""Best-config query latency with many stored configs (SQLite and PostgreSQL).

Usage::

    python benchmarks/best_query.py                       # 10,000 configs, SQLite and PostgreSQL
    python benchmarks/best_query.py --configs 10000 --queries 2000 --backends postgresql

Stores ``--configs`` best configs (100 workloads x N devices x 2 frameworks x 2 objectives, each
a realistic config and metrics) through :class:`perftune.storage.SQLConfigStore`, then times
``get_best(workload, framework, device, objective)`` (what ``perftune best`` and
``perftune.best_config`` run) for random keys, and ``get_best(workload)`` (every best of one
workload), and prints p50/p99. PostgreSQL: a fresh schema in ``PERFTUNE_TEST_PG`` (default the
local server's ``test`` database), dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perftune.storage import open_store  # noqa: E402

PG = os.environ.get("PERFTUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def fill(store, n: int) -> list[tuple[str, str, str, str]]:
    workloads = [f"wl-{i:03d}" for i in range(100)]
    per_workload = max(1, n // 100)
    devices = [hashlib.sha256(f"dev{i}".encode()).hexdigest() for i in range(max(1, per_workload // 4))]
    for i, fp in enumerate(devices):
        store.upsert_device(fp, framework="torch", kind="cuda", name=f"GPU {i}", count=1,
                            memory_bytes=80 * 2**30, info={"i": i})  # fmt: skip
    keys = []
    for wl in workloads:
        for fw in ("torch", "tensorflow"):
            store.upsert_workload(wl, framework=fw, info={"name": wl})
        for fp in devices:
            for fw in ("torch", "tensorflow"):
                for obj, direction, unit in (("time-to-target", "minimize", "s"),
                                             ("throughput", "maximize", "samples/s")):  # fmt: skip
                    store.save_best(workload=wl, framework=fw, device_fingerprint=fp, objective=obj,
                                    direction=direction, unit=unit,
                                    config={"batch_size": 256, "learning_rate": 3e-3, "optimizer": "adamw",
                                            "precision": "bf16", "parallel_strategy": "ddp", "world_size": 8},
                                    value=random.uniform(1, 100), spread=0.05,
                                    metrics={"throughput_sps": 1e4, "mfu": 0.41, "repeats": [1.0, 1.1, 0.9]},
                                    baseline_config={"batch_size": 32}, baseline_value=100.0, speedup=2.0,
                                    mlflow_run_id=uuid.uuid4().hex, sweep_id=None)  # fmt: skip
                    keys.append((wl, fw, fp, obj))
                    if len(keys) >= n:
                        return keys
    return keys


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def bench(url: str, label: str, n: int, queries: int) -> None:
    store = open_store(url, create=True)
    try:
        t = time.perf_counter()
        keys = fill(store, n)
        fill_s = time.perf_counter() - t
        one, many = [], []
        for _ in range(queries):
            wl, fw, fp, obj = random.choice(keys)
            t = time.perf_counter()
            found = store.get_best(workload=wl, framework=fw, device=fp[:12], objective=obj)
            one.append(time.perf_counter() - t)
            assert len(found) == 1
            t = time.perf_counter()
            store.get_best(workload=wl)
            many.append(time.perf_counter() - t)
        ms = 1000.0
        print(f"{label}: {len(keys):,} configs stored in {fill_s:.1f} s; "
              f"one key p50 {statistics.median(one) * ms:.2f} ms, p99 {pct(one, 99) * ms:.2f} ms; "
              f"all of a workload ({len(keys) // 100} rows) p50 {statistics.median(many) * ms:.2f} ms, "
              f"p99 {pct(many, 99) * ms:.2f} ms ({queries} queries each)")  # fmt: skip
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", type=int, default=10_000)
    ap.add_argument("--queries", type=int, default=1_000)
    ap.add_argument("--backends", default="sqlite,postgresql")
    args = ap.parse_args()
    random.seed(0)
    if "sqlite" in args.backends:
        with tempfile.TemporaryDirectory() as tmp:
            bench(f"sqlite:///{tmp}/perftune.db", "SQLite", args.configs, args.queries)
    if "postgresql" in args.backends:
        import sqlalchemy as sa

        schema = f"perftune_bench_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(PG)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        try:
            bench(f"{PG}?options=-csearch_path%3D{schema}", "PostgreSQL", args.configs, args.queries)
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
            engine.dispose()


if __name__ == "__main__":
    main()
