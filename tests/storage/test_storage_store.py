"""SQLConfigStore round trips on a real SQLite file."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from perftune.storage import BestConfigRecord, SQLConfigStore, StoreError, open_store

# -- devices & workloads ------------------------------------------------------------


def test_upsert_device_is_idempotent_and_updates(store: SQLConfigStore, fp) -> None:
    kw = dict(framework="torch", kind="cuda", name="NVIDIA H100", count=1, memory_bytes=2**36)
    first = store.upsert_device(fp.gpu, info={"cc": "9.0"}, **kw)
    second = store.upsert_device(fp.gpu.upper(), info={"cc": "9.0", "driver": "550"}, **kw)
    assert first == second
    other = store.upsert_device(
        fp.cpu, framework="torch", kind="cpu", name="EPYC", count=1, memory_bytes=None, info={}
    )
    assert other != first
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT fingerprint, info, memory_bytes, first_seen, last_seen FROM perftune_devices "
            "ORDER BY id"
        ).all()
    assert len(rows) == 2
    assert rows[0][0] == fp.gpu and json.loads(rows[0][1]) == {"cc": "9.0", "driver": "550"}
    assert rows[0][2] == 2**36 and rows[1][2] is None
    assert rows[0][4] >= rows[0][3]


def test_upsert_workload_is_idempotent_per_framework(store: SQLConfigStore) -> None:
    a = store.upsert_workload("resnet", framework="torch", info={"metric": "throughput"})
    assert store.upsert_workload("resnet", framework="torch", info={"metric": "t2"}) == a
    b = store.upsert_workload("resnet", framework="tensorflow", info={})
    assert b != a
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT name, framework, info FROM perftune_workloads ORDER BY id"
        ).all()
    assert [(r[0], r[1], json.loads(r[2])) for r in rows] == [
        ("resnet", "torch", {"metric": "t2"}),
        ("resnet", "tensorflow", {}),
    ]


# -- sweeps -------------------------------------------------------------------------


def test_sweep_start_and_finish(store: SQLConfigStore, seeded, fp) -> None:
    sid = store.start_sweep(
        study_name="mlp-digits-torch-cpu",
        workload="mlp-digits",
        framework="torch",
        device_fingerprint=fp.cpu,
        objective="step_time",
        settings={"trials": 16, "seed": 0},
    )
    sw = store.get_sweep(sid)
    assert sw is not None
    assert sw["state"] == "running" and sw["finished_at"] is None
    assert sw["workload"] == "mlp-digits" and sw["framework"] == "torch"
    assert sw["device_kind"] == "cpu" and sw["device_fingerprint"] == fp.cpu
    assert sw["settings"] == {"trials": 16, "seed": 0} and sw["summary"] is None
    store.finish_sweep(
        sid,
        state="completed",
        n_trials=16,
        n_complete=14,
        summary={"best": 0.5, "pruned": 2},
        mlflow_run_id="abc123",
    )
    sw = store.get_sweep(sid)
    assert sw is not None
    assert sw["state"] == "completed" and (sw["n_trials"], sw["n_complete"]) == (16, 14)
    assert sw["summary"] == {"best": 0.5, "pruned": 2} and sw["mlflow_run_id"] == "abc123"
    started = datetime.fromisoformat(sw["started_at"])
    finished = datetime.fromisoformat(sw["finished_at"])
    assert started.tzinfo is not None and finished >= started
    json.dumps(sw)
    assert store.get_sweep(sid + 1000) is None


def test_sweep_errors(store: SQLConfigStore, seeded, fp) -> None:
    common = dict(study_name="s", framework="torch", objective="t", settings={})
    with pytest.raises(StoreError, match="unknown workload 'nope'"):
        store.start_sweep(workload="nope", device_fingerprint=fp.cpu, **common)
    with pytest.raises(StoreError, match="unknown device"):
        store.start_sweep(workload="mlp-digits", device_fingerprint="deadbeef", **common)
    with pytest.raises(StoreError, match="unknown sweep id 999"):
        store.finish_sweep(999, state="failed", n_trials=0, n_complete=0)
    sid = store.start_sweep(workload="mlp-digits", device_fingerprint=fp.cpu, **common)
    with pytest.raises(ValueError, match="sweep state"):
        store.finish_sweep(sid, state="exploded", n_trials=0, n_complete=0)
    store.finish_sweep(sid, state="interrupted", n_trials=3, n_complete=1)
    sw = store.get_sweep(sid)
    assert sw is not None and sw["state"] == "interrupted" and sw["summary"] is None


# -- save_best ----------------------------------------------------------------------


def test_save_best_insert(store: SQLConfigStore, seeded, fp, best_kwargs) -> None:
    sid = store.start_sweep(
        study_name="study-1",
        workload="mlp-digits",
        framework="torch",
        device_fingerprint=fp.cpu,
        objective="step_time",
        settings={},
    )
    rec, improved = store.save_best(**best_kwargs(value=0.5, sweep_id=sid, mlflow_run_id="r1"))
    assert improved is True
    assert isinstance(rec, BestConfigRecord)
    assert (rec.workload, rec.framework, rec.objective) == ("mlp-digits", "torch", "step_time")
    assert (rec.device_kind, rec.device_name, rec.device_fingerprint) == (
        "cpu",
        "AMD EPYC 7B13",
        fp.cpu,
    )
    assert rec.value == 0.5 and rec.config == {"batch_size": 64} and rec.unit == "s"
    assert rec.baseline_config == {"batch_size": 32} and rec.baseline_value == 2.0
    assert rec.study_name == "study-1" and rec.sweep_id == sid and rec.mlflow_run_id == "r1"
    assert rec.history == []
    assert rec.created_at.tzinfo is not None and rec.created_at.utcoffset().total_seconds() == 0
    assert store.get_best_by_id(rec.id) == rec
    assert store.get_best_by_id(rec.id + 1) is None


@pytest.mark.parametrize(
    ("direction", "values", "best", "reasons"),
    [
        # minimise: 3 -> 2 replaces, 5 kept out, 1 replaces
        (
            "minimize",
            [3.0, 2.0, 5.0, 1.0],
            1.0,
            [(2.0, "replaced"), (5.0, "not_better"), (3.0, "replaced")],
        ),
        # maximise: 100 -> 150 replaces, 120 kept out, 150 (equal) replaces
        (
            "maximize",
            [100.0, 150.0, 120.0, 150.0],
            150.0,
            [(150.0, "replaced"), (120.0, "not_better"), (100.0, "replaced")],
        ),
    ],
)
def test_save_best_replace_and_keep(store, seeded, best_kwargs, direction, values, best, reasons):
    results = []
    for i, v in enumerate(values):
        rec, improved = store.save_best(
            **best_kwargs(
                objective="throughput" if direction == "maximize" else "step_time",
                direction=direction,
                value=v,
                config={"trial": i},
                mlflow_run_id=f"run{i}",
                speedup=None if i == 0 else v / 100,
            )
        )
        results.append(improved)
        if not improved:
            assert rec.value != v  # the stored best is returned
    assert results == [True, True, False, True]
    assert rec.value == best and rec.config == {"trial": 3} and rec.mlflow_run_id == "run3"
    assert [(h["value"], h["reason"]) for h in rec.history] == reasons
    assert rec.history[0]["config"] == {"trial": 1} and rec.history[0]["mlflow_run_id"] == "run1"
    assert rec.history[-1]["speedup"] is None
    stamps = [h["recorded_at"] for h in rec.history]
    assert stamps == sorted(stamps, reverse=True)
    assert rec.updated_at >= rec.created_at
    # still exactly one row for the key
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM perftune_best_configs").scalar() == 1
        assert (
            conn.exec_driver_sql("SELECT count(*) FROM perftune_best_config_history").scalar() == 3
        )


def test_save_best_keep_when_worse_leaves_best_untouched(store, seeded, best_kwargs) -> None:
    first, _ = store.save_best(**best_kwargs(value=1.0, config={"a": 1}))
    kept, improved = store.save_best(**best_kwargs(value=1.5, config={"a": 2}, metrics={"x": 1}))
    assert improved is False
    assert kept.config == {"a": 1} and kept.value == 1.0 and kept.updated_at == first.updated_at
    assert kept.history == [
        {
            **kept.history[0],
            "config": {"a": 2},
            "value": 1.5,
            "metrics": {"x": 1},
            "reason": "not_better",
        }
    ]


def test_save_best_validation(store, seeded, best_kwargs) -> None:
    with pytest.raises(ValueError, match="direction"):
        store.save_best(**best_kwargs(direction="down"))
    with pytest.raises(ValueError, match="finite"):
        store.save_best(**best_kwargs(value=float("nan")))
    with pytest.raises(StoreError, match="unknown workload"):
        store.save_best(**best_kwargs(workload="ghost"))
    with pytest.raises(StoreError, match="unknown device"):
        store.save_best(**best_kwargs(device_fingerprint="0123456789"))
    with pytest.raises(StoreError, match="unknown sweep id 42"):
        store.save_best(**best_kwargs(sweep_id=42))
    store.save_best(**best_kwargs())
    with pytest.raises(StoreError, match="direction"):
        store.save_best(**best_kwargs(direction="maximize"))
    assert len(store.get_best(workload="mlp-digits")) == 1


def test_save_best_sanitises_json(store, seeded, best_kwargs) -> None:
    rec, _ = store.save_best(
        **best_kwargs(
            config={"lr": np.float32(0.5), "sizes": (1, 2), "amp": np.bool_(True)},
            metrics={"samples": np.arange(3), "bad": float("inf")},
            spread=float("nan"),
        )
    )
    assert rec.config == {"lr": 0.5, "sizes": [1, 2], "amp": True}
    assert rec.metrics == {"samples": [0, 1, 2], "bad": None}
    assert rec.spread is None


# -- get_best -----------------------------------------------------------------------


def test_get_best_filters_and_ordering(store, seeded, fp, best_kwargs) -> None:
    store.save_best(**best_kwargs(value=2.0))  # cpu, step_time
    store.save_best(**best_kwargs(value=0.5, device_fingerprint=fp.gpu))  # gpu, step_time
    store.save_best(
        **best_kwargs(objective="throughput", direction="maximize", unit="samples/s", value=1000.0)
    )  # cpu
    store.save_best(
        **best_kwargs(
            objective="throughput",
            direction="maximize",
            unit="samples/s",
            value=9000.0,
            device_fingerprint=fp.gpu,
        )
    )  # gpu
    store.upsert_workload("other", framework="torch", info={})
    store.save_best(**best_kwargs(workload="other", value=0.1))

    allrecs = store.get_best(workload="mlp-digits")
    assert [(r.objective, r.value) for r in allrecs] == [
        ("step_time", 0.5),
        ("step_time", 2.0),  # minimise: lowest first
        ("throughput", 9000.0),
        ("throughput", 1000.0),  # maximise: highest first
    ]
    by_kind = store.get_best(workload="mlp-digits", device="cuda")
    assert {r.device_fingerprint for r in by_kind} == {fp.gpu} and len(by_kind) == 2
    by_name = store.get_best(workload="mlp-digits", device="amd epyc 7b13")
    assert {r.device_kind for r in by_name} == {"cpu"} and len(by_name) == 2
    by_fp = store.get_best(workload="mlp-digits", device=fp.gpu[:8].upper())
    assert {r.device_fingerprint for r in by_fp} == {fp.gpu}
    assert store.get_best(workload="mlp-digits", device=fp.gpu[:5]) == []  # prefix too short
    assert store.get_best(workload="mlp-digits", device="tpu") == []
    only = store.get_best(workload="mlp-digits", objective="throughput", device="cpu")
    assert [(r.objective, r.value) for r in only] == [("throughput", 1000.0)]
    assert store.get_best(workload="mlp-digits", framework="tensorflow") == []
    assert len(store.get_best(workload="mlp-digits", framework="torch")) == 4
    assert [r.value for r in store.get_best(workload="other")] == [0.1]
    assert store.get_best(workload="unknown") == []
    every = store.get_best(workload=None)  # every workload's, by workload
    assert [(r.workload, r.value) for r in every] == [*((r.workload, r.value) for r in allrecs), ("other", 0.1)]
    assert [r.workload for r in store.get_best(workload=None, device="cuda")] == ["mlp-digits"] * 2


def test_get_best_includes_history_and_to_dict_is_json(store, seeded, best_kwargs) -> None:
    store.save_best(**best_kwargs(value=3.0))
    store.save_best(**best_kwargs(value=2.0))
    (rec,) = store.get_best(workload="mlp-digits")
    assert [h["value"] for h in rec.history] == [3.0]
    d = rec.to_dict()
    text = json.dumps(d)
    back = json.loads(text)
    assert back["value"] == 2.0 and back["history"][0]["reason"] == "replaced"
    assert datetime.fromisoformat(back["created_at"]) == rec.created_at
    assert datetime.fromisoformat(back["history"][0]["recorded_at"]).tzinfo == timezone.utc
    assert set(d) >= {
        "id",
        "workload",
        "device_kind",
        "device_name",
        "device_fingerprint",
        "speedup",
        "study_name",
        "updated_at",
        "history",
    }


# -- concurrency and lifecycle --------------------------------------------------------


def _hammer(stores, best_kwargs, n: int = 8):
    values = [float(10 + i) for i in range(n)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        try:
            barrier.wait()
            stores[i % len(stores)].save_best(
                **best_kwargs(value=values[i], config={"i": i}, mlflow_run_id=f"r{i}")
            )
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return values, errors


def _check_hammer(store, values, errors) -> None:
    assert errors == []
    (rec,) = store.get_best(workload="mlp-digits")
    assert rec.value == min(values) and rec.config == {"i": 0}
    assert sorted(h["value"] for h in rec.history) == sorted(values)[1:]
    reasons = {h["reason"] for h in rec.history}
    assert reasons <= {"replaced", "not_better"}


def test_concurrent_save_best_shared_store(store, seeded, best_kwargs) -> None:
    values, errors = _hammer([store], best_kwargs)
    _check_hammer(store, values, errors)


def test_concurrent_save_best_separate_stores(store, sqlite_url, seeded, best_kwargs) -> None:
    """Separate engines on one file behave like separate processes."""
    others = [open_store(sqlite_url) for _ in range(4)]
    try:
        values, errors = _hammer(others, best_kwargs)
    finally:
        for o in others:
            o.close()
    _check_hammer(store, values, errors)


def test_close_is_idempotent_and_final(sqlite_url: str) -> None:
    s = open_store(sqlite_url, create=True)
    with s:
        assert "sqlite" in repr(s)
    s.close()
    with pytest.raises(StoreError, match="closed"):
        s.upsert_workload("w", framework="torch", info={})


def test_timestamps_are_utc(store: SQLConfigStore, seeded, best_kwargs) -> None:
    before = datetime.now(timezone.utc)
    time.sleep(0.001)
    rec, _ = store.save_best(**best_kwargs())
    assert rec.created_at.tzinfo == timezone.utc
    assert before <= rec.created_at <= datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("direction", "offers", "replaced"),
    [
        # stored 10 s: a 9 s median whose interval reaches 10.5 s is not better beyond doubt
        ("minimize", [(9.0, (8.0, 10.5)), (9.0, (8.5, 9.8))], [False, True]),
        ("maximize", [(110.0, (95.0, 120.0)), (110.0, (101.0, 118.0))], [False, True]),
    ],
)
def test_save_best_replaces_only_when_better_beyond_its_interval(
    store, seeded, best_kwargs, direction, offers, replaced
) -> None:
    first = 10.0 if direction == "minimize" else 100.0
    store.save_best(**best_kwargs(direction=direction, value=first, value_interval=(first, first)))
    got = []
    for i, (value, interval) in enumerate(offers):
        rec, improved = store.save_best(
            **best_kwargs(direction=direction, value=value, value_interval=interval,
                          speedup_interval=(1.5, 2.5), config={"offer": i})  # fmt: skip
        )
        got.append(improved)
    assert got == replaced
    assert rec.config == {"offer": 1} and rec.value_interval == offers[1][1]
    assert rec.speedup_interval == (1.5, 2.5)
    kept = rec.history[1]  # the first offer, not better beyond its interval
    assert kept["reason"] == "not_better" and kept["value_interval"] == offers[0][1]
    assert rec.history[0]["reason"] == "replaced" and rec.history[0]["value_interval"] == (
        first,
        first,
    )
    assert json.loads(json.dumps(rec.to_dict()))["value_interval"] == list(offers[1][1])


@pytest.mark.parametrize("interval", [(2.0, 1.0), (float("nan"), 1.0), (0.0, float("inf"))])
def test_save_best_refuses_a_malformed_interval(store, seeded, best_kwargs, interval) -> None:
    with pytest.raises(ValueError, match="value_interval"):
        store.save_best(**best_kwargs(value_interval=interval))
    assert store.get_best(workload="mlp-digits") == []


def test_results_stored_without_an_interval_keep_the_old_rule(store, seeded, best_kwargs) -> None:
    store.save_best(**best_kwargs(value=2.0))
    rec, improved = store.save_best(**best_kwargs(value=2.0, config={"tie": 1}))
    assert improved and rec.value_interval is None and rec.speedup_interval is None
