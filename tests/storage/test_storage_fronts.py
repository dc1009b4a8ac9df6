"""Pareto fronts in the config store: stored per key, replaced by a newer one, filtered."""

from __future__ import annotations

import math

import pytest

FP = "abcdef0123456789"
NAMES, DIRS, UNITS = ["throughput", "peak-memory"], ["maximize", "minimize"], ["samples/s", "MiB"]
POINTS = [{"label": "baseline", "config": {"batch_size": 32}, "values": [100.0, 500.0],
           "intervals": [[90.0, 110.0], None], "metrics": {"peak_rss_mb": 500.0}, "trial_number": None},
          {"label": "candidate-3", "config": {"batch_size": 256}, "values": [900.0, 800.0],
           "intervals": [None, None], "metrics": {}, "trial_number": 3}]  # fmt: skip


@pytest.fixture
def seeded(store):
    store.upsert_device(FP, framework="torch", kind="cpu", name="Xeon", count=1, memory_bytes=1, info={})
    store.upsert_workload("mlp-digits", framework="torch", info={})
    return store


def save(store, points=POINTS, objective="throughput,peak-memory", **kw):
    return store.save_front(workload="mlp-digits", framework="torch", device_fingerprint=FP, objective=objective,
                            names=NAMES, directions=DIRS, units=UNITS, points=points, mlflow_run_id="r1",
                            sweep_id=None, **kw)  # fmt: skip


def test_a_front_round_trips(seeded):
    rec = save(seeded)
    assert (rec.workload, rec.framework, rec.device_kind, rec.objective) == ("mlp-digits", "torch", "cpu",
                                                                             "throughput,peak-memory")
    assert rec.names == NAMES and rec.directions == DIRS and rec.points == POINTS
    (got,) = seeded.get_fronts(workload="mlp-digits")
    assert got == rec and got.to_dict()["updated_at"].endswith("+00:00")


def test_a_newer_front_replaces_the_stored_one(seeded):
    first = save(seeded)
    second = save(seeded, points=POINTS[1:])
    assert second.id == first.id and second.points == POINTS[1:]
    assert len(seeded.get_fronts(workload=None)) == 1
    save(seeded, objective="throughput,peak-memory@x")  # another key: another front
    assert len(seeded.get_fronts(workload="mlp-digits")) == 2


def test_filters(seeded):
    save(seeded)
    assert seeded.get_fronts(workload="mlp-digits", objective="peak-memory")
    assert not seeded.get_fronts(workload="mlp-digits", objective="energy")
    assert seeded.get_fronts(workload="mlp-digits", device="xeon", framework="torch")
    assert not seeded.get_fronts(workload="mlp-digits", framework="tensorflow")
    assert not seeded.get_fronts(workload="other")


@pytest.mark.parametrize("points", [[], [{"config": {}, "values": [1.0]}],
                                    [{"config": {}, "values": [1.0, math.nan]}]])  # fmt: skip
def test_a_broken_front_is_refused_and_nothing_written(seeded, points):
    with pytest.raises(ValueError):
        save(seeded, points=points)
    assert seeded.get_fronts(workload=None) == []
