"""Several objectives: parsing them, the Pareto front's math, and picking one point of a front."""

from __future__ import annotations

import pytest

from perftune.backends._energy import missing_meter
from perftune.errors import UsageError
from perftune.objectives import objective_name, parse_objectives
from perftune.sweep.config import SweepConfig
from perftune.sweep.pareto import dominates, non_dominated, parse_weights, pick

NAMES = ["time-to-target", "energy", "peak-memory"]
DIRS = ["minimize", "minimize", "minimize"]
POINTS = [{"values": [10.0, 5.0, 900.0]},   # fastest
          {"values": [20.0, 2.0, 800.0]},   # most efficient
          {"values": [30.0, 4.0, 300.0]},   # smallest
          {"values": [14.0, 3.0, 600.0]}]   # near the middle of each range  # fmt: skip


def test_domination():
    assert dominates([1, 1], [2, 2], ["minimize", "minimize"])
    assert not dominates([1, 1], [1, 1], ["minimize", "minimize"])  # equal: neither dominates
    assert dominates([1, 3], [1, 2], ["minimize", "maximize"])
    assert not dominates([1, 1], [2, 0], ["minimize", "minimize"])
    assert non_dominated([[1, 5], [2, 2], [3, 3], [5, 1], [1, 5]], ["minimize", "minimize"]) == [0, 1, 3, 4]
    assert non_dominated([p["values"] for p in POINTS], DIRS) == [0, 1, 2, 3]


@pytest.mark.parametrize("choice, index", [("fastest", 0), ("efficient", 1), ("smallest", 2), ("balanced", 3),
                                           (None, 3)])  # fmt: skip
def test_pick(choice, index):
    assert pick(NAMES, DIRS, POINTS, choice) == index


def test_weights_move_the_pick():
    assert pick(NAMES, DIRS, POINTS, weights="time=1") == 0
    assert pick(NAMES, DIRS, POINTS, weights="energy=1") == 1
    assert pick(NAMES, DIRS, POINTS, weights="memory=1,time=0.1") == 2
    assert parse_weights("time=1,energy=0.5", NAMES) == [1.0, 0.5, 0.0]


@pytest.mark.parametrize("weights, needle", [("speed=1", "not OBJECTIVE=WEIGHT"), ("time", "not OBJECTIVE=WEIGHT"),
                                             ("time=fast", "'fast' is not a number"), ("time=-1", ">= 0"),
                                             ("time=nan", ">= 0"), ("time=1e308", "<= 1000000"),
                                             ("time=0", "at least one weight")])  # fmt: skip
def test_bad_weights_are_one_line(weights, needle):
    with pytest.raises(UsageError) as info:
        pick(NAMES, DIRS, POINTS, weights=weights)
    assert needle in str(info.value) and str(info.value).startswith(f"--weights {weights}")


def test_a_pick_the_front_cannot_answer():
    with pytest.raises(UsageError, match="no energy objective"):
        pick(["throughput", "peak-memory"], ["maximize", "minimize"], POINTS, "efficient")
    with pytest.raises(UsageError, match="--pick fast: choose"):
        pick(NAMES, DIRS, POINTS, "fast")
    with pytest.raises(UsageError, match="give one of them"):
        pick(NAMES, DIRS, POINTS, "fastest", weights="time=1")


def test_maximized_objectives_pick_their_highest():
    points = [{"values": [100.0, 500.0]}, {"values": [300.0, 900.0]}]
    assert pick(["throughput", "peak-memory"], ["maximize", "minimize"], points, "fastest") == 1
    assert pick(["throughput", "peak-memory"], ["maximize", "minimize"], points, "smallest") == 0


def test_objective_lists():
    assert [o.name for o in parse_objectives("time-to-target,energy")] == ["time-to-target", "energy"]
    assert [o.name for o in parse_objectives("throughput-at-slo,quality")] == ["throughput-at-slo", "quality"]
    assert objective_name("throughput-at-slo,quality@p99<=5ms,drop<=0.01") == "throughput-at-slo"
    cfg = SweepConfig(workload="mlp-digits", objective="throughput, peak-memory")
    assert cfg.objective == "throughput,peak-memory" and cfg.multi and cfg.objective_key == "throughput,peak-memory"


@pytest.mark.parametrize("spec, needle", [
    ("throughput,fast", "unknown objective 'fast'"),
    ("energy", "energy needs a primary objective"),
    ("energy,throughput", "the primary objective comes first (throughput)"),
    ("time-to-target,throughput", "conflicting objectives: time-to-target and throughput"),
    ("throughput,throughput", "twice"),
    ("time-to-target,quality", "quality is measured by inference trials only"),
])  # fmt: skip
def test_bad_objective_lists_are_one_line(spec, needle):
    with pytest.raises(UsageError) as info:
        parse_objectives(spec)
    assert str(info.value).startswith(f"--objective {spec}") and needle in str(info.value)


@pytest.mark.parametrize("kwargs, flag", [({"patience": 3}, "--patience"), ({"workers": 2}, "--workers"),
                                          ({"sampler": "grid"}, "--sampler grid"),
                                          ({"sampler": "cmaes"}, "--sampler cmaes"),
                                          ({"search": "factored"}, "--search factored")])  # fmt: skip
def test_what_a_front_cannot_do(kwargs, flag):
    cfg = SweepConfig(workload="mlp-digits", objective="throughput,peak-memory", **kwargs)
    with pytest.raises(UsageError) as info:
        cfg.validate()
    assert str(info.value).startswith(flag) and "not with several objectives" in str(info.value)


def test_missing_meters_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFTUNE_RAPL_ROOT", str(tmp_path))
    assert missing_meter("cpu").startswith(f"RAPL ({tmp_path}")
    (tmp_path / "intel-rapl:0").mkdir()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("12345\n")
    assert missing_meter("cpu") is None
    assert "perftune reads RAPL on CPUs and NVML" in missing_meter("tpu")
