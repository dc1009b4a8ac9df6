"""Inference objectives and the sweep settings that go with them: limits, keys, validation."""

from __future__ import annotations

import math

import pytest

from perftune.errors import UsageError
from perftune.objectives import OBJECTIVES, TASKS, get_objective, objective_name
from perftune.sweep.config import DEFAULT_MAX_QUALITY_DROP, SweepConfig


def test_throughput_at_slo_reads_throughput_and_breaks_limits():
    o = get_objective("throughput-at-slo")
    assert (o.direction, o.task, o.measure, o.unit) == ("maximize", "inference", "infer", "samples/s")
    m = {"throughput_sps": 900.0, "p99_ms": 4.0, "quality": 0.95, "quality_reference": 0.96,
         "quality_drop": 0.01}  # fmt: skip
    assert o.value(m) == 900.0
    assert o.violations(m, {"slo_p99_ms": 5.0, "max_quality_drop": 0.01}) == {}
    broken = o.violations(m, {"slo_p99_ms": 3.0, "max_quality_drop": 0.005})
    assert set(broken) == {"slo", "quality"}
    assert "4 ms over the 3 ms target" in broken["slo"]
    assert "0.01" in broken["quality"] and "0.95" in broken["quality"]
    assert o.value({"throughput_sps": math.nan}) is None


def test_latency_is_the_p99_and_ignores_the_slo():
    o = get_objective("latency")
    assert (o.direction, o.unit) == ("minimize", "ms")
    assert o.value({"p99_ms": 2.5}) == 2.5 and o.value({}) is None
    assert o.violations({"p99_ms": 50.0, "quality_drop": 0.0}, {"slo_p99_ms": 1.0, "max_quality_drop": 0.01}) == {}
    assert set(o.violations({"p99_ms": 1.0, "quality_drop": 0.2}, {"max_quality_drop": 0.01})) == {"quality"}


def test_training_objectives_break_no_limit():
    for name in ("time-to-target", "throughput"):
        assert OBJECTIVES[name].task == "training"
        assert OBJECTIVES[name].violations({"p99_ms": 1e9, "quality_drop": 1.0}, {"slo_p99_ms": 1.0}) == {}


def test_every_task_default_is_an_objective_of_that_task():
    for task, name in TASKS.items():
        assert OBJECTIVES[name].task == task


def test_config_resolves_task_and_objective():
    assert (SweepConfig(workload="mlp-digits").objective, SweepConfig(workload="mlp-digits").task) == (
        "time-to-target", "training")
    cfg = SweepConfig(workload="mlp-digits", task="inference", slo_p99_ms=5)
    assert (cfg.objective, cfg.task) == ("throughput-at-slo", "inference")
    cfg.validate()
    assert SweepConfig(workload="mlp-digits", objective="latency").task == "inference"


def test_objective_key_names_the_limits_and_reads_back():
    cfg = SweepConfig(workload="mlp-digits", task="inference", slo_p99_ms=5)
    assert cfg.objective_key == f"throughput-at-slo@p99<=5ms,drop<={DEFAULT_MAX_QUALITY_DROP:g}"
    assert cfg.limits == {"slo_p99_ms": 5, "max_quality_drop": DEFAULT_MAX_QUALITY_DROP}
    lat = SweepConfig(workload="mlp-digits", objective="latency", request_rate=200, max_quality_drop=0)
    assert lat.objective_key == "latency@rate=200/s,drop<=0"
    assert objective_name(cfg.objective_key) == "throughput-at-slo"
    assert SweepConfig(workload="mlp-digits").objective_key == "time-to-target"
    assert objective_name("time-to-target") == "time-to-target"
    assert SweepConfig(workload="mlp-digits").limits["max_quality_drop"] is None  # training: no limit


@pytest.mark.parametrize("kwargs, needle", [
    ({"task": "inference"}, "--slo-p99-ms"),
    ({"task": "inference", "slo_p99_ms": 0}, "--slo-p99-ms 0"),
    ({"task": "inference", "slo_p99_ms": math.inf}, "--slo-p99-ms inf"),
    ({"task": "inference", "slo_p99_ms": True}, "--slo-p99-ms True"),
    ({"max_quality_drop": 0.1}, "only with --task inference"),
    ({"objective": "throughput", "task": "inference"}, "not one for --task inference"),
    ({"task": "inference", "slo_p99_ms": 5, "command": ["python", "x.py"], "workload": None, "name": "x"},
     "--task inference"),
])  # fmt: skip
def test_config_refuses_what_does_not_fit(kwargs, needle):
    cfg = SweepConfig(**{"workload": "mlp-digits", **kwargs})
    with pytest.raises(UsageError, match=None) as info:
        cfg.validate()
    assert needle in str(info.value)
