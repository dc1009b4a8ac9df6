"""``benchmarks/search_quality.py replay`` on a tiny synthetic table: 2 systems configs x 2 batch
sizes x 2 optimizers x 2 learning rates, 2 seeds per policy, no training."""

from __future__ import annotations

import importlib.util
import itertools
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sq():
    spec = importlib.util.spec_from_file_location("search_quality", ROOT / "benchmarks" / "search_quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_quality"] = module
    spec.loader.exec_module(module)
    return module


SYSTEMS = [{"parallel_strategy": "single", "world_size": 1, "num_threads": t, "precision": "fp32"} for t in (1, 2)]
BATCH, OPTS, LRS = [32, 64], ["adam", "sgd"], [1e-3, 1e-2]


def tiny_table(sq) -> dict:
    """Throughput grows with threads and batch size; adam at 1e-2 needs the fewest samples;
    sgd at 1e-3 never reaches the target. The grid best: 2 threads, bs 64, adam, 1e-2."""
    tp, sm = {}, {}
    for s, bs in itertools.product(SYSTEMS, BATCH):
        cfg = {**s, "batch_size": bs}
        base = 1000.0 * s["num_threads"] * (1.5 if bs == 64 else 1.0)
        tp[sq.tp_key(cfg)] = {"config": cfg, "runs": [{"seed": i, "status": "ok", "throughput_sps": base * f}
                                                      for i, f in enumerate((0.97, 1.0, 1.03))]}  # fmt: skip
    for bs, opt, lr in itertools.product(BATCH, OPTS, LRS):
        n = None if (opt, lr) == ("sgd", 1e-3) else (2000 if (opt, lr) == ("adam", 1e-2) else 6000) * (bs / 32) ** 0.5
        sm[sq.sm_key(bs, opt, lr)] = {"config": {"batch_size": bs, "optimizer": opt, "learning_rate": lr},
                                      "runs": [{"seed": i, "status": "ok", "samples": n and n * (1 + 0.02 * i)}
                                               for i in range(2)]}  # fmt: skip
    defaults = {"batch_size": 32, "learning_rate": 1e-3, "optimizer": "adam", "beta1": 0.9, "beta2": 0.999,
                **SYSTEMS[1]}  # fmt: skip
    return {"workload": "mlp-digits", "framework": "torch", "device": "cpu", "target": 0.96,
            "machine": {"cores": 2, "cpu": "synthetic"}, "defaults": defaults,
            "grid": {"systems": SYSTEMS, "batch_sizes": BATCH, "optimizers": OPTS, "learning_rates": LRS,
                     "converge_budget_s": 30.0},
            "throughput": tp, "samples": sm}  # fmt: skip


@pytest.fixture
def space(tmp_path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(f"""
        extends: none
        version: 1
        params:
          batch_size: {{type: categorical, choices: {BATCH}, default: 32}}
          learning_rate: {{type: float, low: 1.0e-4, high: 3.0e-2, log: true, default: 1.0e-3}}
          optimizer: {{type: categorical, choices: [sgd, adam, rmsprop], default: adam}}
          parallel_strategy: {{type: categorical, choices: [single], default: single}}
          world_size: {{type: categorical, choices: [1], default: 1}}
          num_threads: {{type: int, low: 1, high: 2, default: 2}}
          precision: {{type: categorical, choices: [fp32], default: fp32}}
    """).lstrip())  # fmt: skip
    return str(path)


def test_grid_prediction(sq):
    grid = sq.Grid(tiny_table(sq))
    assert len(grid.cells()) == 16
    best, pred = grid.best()
    assert best == {**SYSTEMS[1], "batch_size": 64, "optimizer": "adam", "learning_rate": 1e-2}
    assert pred == pytest.approx(2000 * 2**0.5 * 1.01 / 3000)
    assert grid.predict({**SYSTEMS[0], "batch_size": 32, "optimizer": "sgd", "learning_rate": 1e-3}) is None
    cell, notes = grid.snap({**SYSTEMS[0], "batch_size": 32, "optimizer": "rmsprop", "learning_rate": 4e-3})
    assert (cell["optimizer"], cell["learning_rate"], notes) == ("sgd", 1e-2, ["optimizer rmsprop -> sgd"])


def test_replay_structure_and_ranges(sq, space):
    out = sq.run_replay(tiny_table(sq), policies=["joint", "factored", "random"], seeds=2, trials=6, confirm_top=1,
                        confirm_repeats=1, space=space)  # fmt: skip
    assert out["grid_cells"] == 16 and out["trials"] == 6
    assert out["grid_best_speedup"] == pytest.approx((6000 * 1.01 / 2000) / (2000 * 2**0.5 * 1.01 / 3000))
    assert set(out["policies"]) == {"joint", "factored", "random"} and len(out["runs"]) == 6
    for run in out["runs"]:
        assert run["evaluations"] == 6
        assert run["first_near_best"] is None or 1 <= run["first_near_best"] <= 6
        assert 0.0 < run["share_of_grid_speedup"] <= 1.0 + 1e-9
        assert run["ratio_to_grid_best"] >= 1.0 - 1e-9
        # what the trials would have cost: up to the first near-best config, and in all
        assert run["search_cost_s"] > 0
        if run["first_near_best"] is not None:
            assert 0 < run["first_near_best_cost_s"] <= run["search_cost_s"]
    for s in out["policies"].values():
        assert s["runs"] == 2 and 0 <= s["found_near_best"] <= 2 and 0 <= s["within_1_25x"] <= 2
        for k in ("evaluations_to_near_best", "share_of_grid_speedup", "ratio_to_grid_best",
                  "trial_seconds_to_near_best", "trial_seconds_per_sweep"):
            assert s[k]["p10"] <= s[k]["median"] <= s[k]["p90"]
        assert 1 <= s["evaluations_to_near_best"]["median"] <= 7  # 7: never found (trials + 1)


def test_the_factored_search_replays_both_stages(sq, space):
    """Stage 1's throughput trials come first (4 of 10: they try no full config), then stage 2
    reaches the grid best (seed 0), and the confirmation stores it."""
    from perftune.sweep.factored import split

    run = sq.run_replay(tiny_table(sq), policies=["factored"], seeds=1, trials=10, confirm_top=1,
                        confirm_repeats=1, space=space)["runs"][0]  # fmt: skip
    assert split(10) == (4, 6) and run["evaluations"] == 10
    assert 4 < run["first_near_best"] <= 10 and run["share_of_grid_speedup"] == pytest.approx(1.0)


def test_a_trial_costs_its_warm_up_and_windows_or_its_training_plus_the_tables_overhead(sq):
    from perftune.backends import TrialRequest

    table = tiny_table(sq)
    ex = sq.TableExecutor(sq.Grid(table))
    assert ex.overhead == {"throughput": 0.1, "converge": 0.9}  # the tiny table has no wall times
    cell = {**SYSTEMS[1], "batch_size": 32, "optimizer": "adam", "learning_rate": 1e-3}
    base = {"workload": "mlp-digits", "framework": "torch", "device": "cpu", "log_path": "x-trial-1.log"}
    tp = ex.run(TrialRequest(**base, config=cell, measure="throughput", warmup_s=0.5, window_s=0.5, repeats=5))
    assert tp.wall_s == pytest.approx(0.5 + 5 * 0.5 + 0.1)
    fast = ex.run(TrialRequest(**base, config={**cell, "learning_rate": 1e-2}))
    assert fast.wall_s == pytest.approx(fast.metrics["time_to_target_s"] + 0.9)
    never = ex.run(TrialRequest(**base, config={**cell, "optimizer": "sgd", "learning_rate": 1e-3}, budget_s=7.0))
    assert never.wall_s == pytest.approx(7.0 + 0.9) and not never.metrics["reached_target"]
    runs = {"throughput": {"a": {"runs": [{"wall_s": 1.5}, {"wall_s": 1.7}]}}, "samples": {"b": {"runs": [
        {"wall_s": 5.0, "train_time_s": 4.0}, {"wall_s": 3.0, "train_time_s": 2.5}]}},
        "grid": {"throughput_request": {"warmup_s": 0.3, "window_s": 0.3, "repeats": 3}}}  # fmt: skip
    assert sq.overheads(runs) == pytest.approx({"throughput": 0.4, "converge": 0.75})


def test_a_policy_that_reaches_the_grid_best_gets_full_credit(sq, tmp_path):
    """With only the grid best's knobs free (the rest fixed at the best's values), every sweep
    tries it and confirms it: 100% of the grid-best speedup, found at the first or second trial."""
    path = tmp_path / "best.yaml"
    path.write_text(textwrap.dedent("""
        extends: none
        version: 1
        params:
          batch_size: {type: categorical, choices: [32, 64], default: 32}
          learning_rate: {type: categorical, choices: [0.001, 0.01], default: 0.001}
          optimizer: {type: categorical, choices: [adam], default: adam}
          parallel_strategy: {type: categorical, choices: [single], default: single}
          world_size: {type: categorical, choices: [1], default: 1}
          num_threads: {type: categorical, choices: [2], default: 2}
          precision: {type: categorical, choices: [fp32], default: fp32}
    """).lstrip())  # fmt: skip
    out = sq.run_replay(tiny_table(sq), policies=["random"], seeds=1, trials=12, confirm_top=4,
                        confirm_repeats=1, space=str(path))  # fmt: skip
    run = out["runs"][0]
    assert run["best_config"] == out["grid_best"]["config"]
    assert run["share_of_grid_speedup"] == pytest.approx(1.0)
    assert run["first_near_best"] is not None
    s = out["policies"]["random"]
    assert s["share_ge_95"] == 1 and s["within_1_25x"] == 1


@pytest.mark.parametrize("table", sorted((ROOT / "benchmarks" / "search_quality").glob("*.json")), ids=lambda p: p.stem)
def test_every_committed_table_can_be_replayed(sq, table):
    """Each table in the repo names its workload, target and direction, covers its grid, and has a
    finite grid best that beats or equals every other predicted cell."""
    import json

    t = json.loads(table.read_text())
    assert t["workload"] == table.stem and t["mode"] in ("max", "min") and isinstance(t["target"], float)
    grid = sq.Grid(t)
    g = t["grid"]
    assert len(grid.cells()) == len(g["systems"]) * len(g["batch_sizes"]) * len(g["optimizers"]) * len(g["learning_rates"])
    assert all(grid.throughputs(c) for c in grid.cells())  # every (systems, batch size) measured
    assert all(grid.samples(c) for c in grid.cells())  # every training cell measured
    best, predicted = grid.best()
    assert 0 < predicted < g["converge_budget_s"]
    assert all(p >= predicted for c in grid.cells() if (p := grid.predict(c)) is not None)
    assert sq.TableExecutor(grid).describe(t["workload"])["mode"] == t["mode"]


def test_a_real_run_that_missed_the_target_counts_as_the_budget(sq):
    assert sq.median_with_misses([2.4, None, None], 40.0) == 40.0  # two misses of three: the budget
    assert sq.median_with_misses([3.0, 2.8, 5.8], 40.0) == 3.0
    assert sq.median_with_misses([2.0, None], 40.0) == 21.0
    assert sq.median_with_misses([], 40.0) is None


def test_a_real_run_prints_the_speedup_with_its_half_width(sq):
    from types import SimpleNamespace

    r = SimpleNamespace(speedup=1.65, speedup_interval={"low": 1.51, "high": 1.8, "half_width": 0.089}, confirm_rounds=6)
    assert sq._speedup_text(r) == ("reported speedup 1.65x (95% CI 1.51-1.80x, half-width 8.9%, target <= 10%, "
                                   "6 paired rounds)")  # fmt: skip
    assert sq._speedup_text(SimpleNamespace(speedup=None, speedup_interval=None, confirm_rounds=0)).endswith("(no interval)")
