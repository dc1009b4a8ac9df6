"""The store on PostgreSQL (psycopg 3), in a throw-away schema selected by search_path."""

from __future__ import annotations

import threading

import optuna
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from perftune.storage import (
    SchemaNotReadyError,
    current_revision,
    head_revision,
    normalize_url,
    open_store,
    upgrade,
)
from perftune.storage._models import VERSION_TABLE, Base

pytestmark = pytest.mark.postgres


def _schema_of(url: str) -> str:
    return url.rsplit("%3D", 1)[1]


def _tables(url: str, schema: str) -> set[str]:
    engine = sa.create_engine(normalize_url(url))
    try:
        with engine.connect() as conn:
            return set(
                conn.execute(
                    sa.text(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"
                    ),
                    {"s": schema},
                ).scalars()
            )
    finally:
        engine.dispose()


def test_upgrade_in_search_path_schema(pg_url: str) -> None:
    schema = _schema_of(pg_url)
    with pytest.raises(SchemaNotReadyError, match="is not initialised"):
        open_store(pg_url)
    assert current_revision(pg_url) is None
    upgrade(pg_url)
    upgrade(pg_url)  # idempotent
    assert current_revision(pg_url) == head_revision()
    assert _tables(pg_url, schema) == {
        "perftune_alembic_version",
        "perftune_devices",
        "perftune_workloads",
        "perftune_sweeps",
        "perftune_best_configs",
        "perftune_best_config_history",
        "perftune_pareto_fronts",
    }
    assert "perftune_devices" not in _tables(pg_url, "public")

    engine = sa.create_engine(normalize_url(pg_url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn,
                opts={
                    "version_table": VERSION_TABLE,
                    "compare_type": True,
                    "include_name": lambda n, t, p: t != "table" or n.startswith("perftune_"),
                },
            )
            assert compare_metadata(ctx, Base.metadata) == []
            kinds = dict(
                conn.execute(
                    sa.text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = :s AND table_name = 'perftune_best_configs'"
                    ),
                    {"s": schema},
                ).all()
            )
        assert kinds["created_at"] == "timestamp with time zone"
        assert kinds["value"] == "double precision" and kinds["config"] == "json"
    finally:
        engine.dispose()


def test_postgres_round_trip(pg_store, seed_store, fp, best_kwargs) -> None:
    seed_store(pg_store)
    assert seed_store(pg_store)["cpu"] == seed_store(pg_store)["cpu"]  # idempotent upserts
    sid = pg_store.start_sweep(
        study_name="s",
        workload="mlp-digits",
        framework="torch",
        device_fingerprint=fp.gpu,
        objective="step_time",
        settings={"trials": 4},
    )
    pg_store.finish_sweep(sid, state="completed", n_trials=4, n_complete=4, summary={"ok": 1})
    sweep = pg_store.get_sweep(sid)
    assert sweep is not None and sweep["state"] == "completed" and sweep["summary"] == {"ok": 1}

    for v in (3.0, 2.0, 5.0):
        rec, _ = pg_store.save_best(
            **best_kwargs(value=v, device_fingerprint=fp.gpu, sweep_id=sid, baseline_config=None)
        )
    assert rec.value == 2.0 and rec.study_name == "s" and rec.baseline_config is None
    assert [(h["value"], h["reason"]) for h in rec.history] == [
        (5.0, "not_better"),
        (3.0, "replaced"),
    ]
    assert rec.created_at.tzinfo is not None and rec.created_at.utcoffset().total_seconds() == 0
    pg_store.save_best(**best_kwargs(value=7.0))  # the CPU
    got = pg_store.get_best(workload="mlp-digits", device=fp.gpu[:6])
    assert [r.value for r in got] == [2.0]
    assert [r.value for r in pg_store.get_best(workload="mlp-digits")] == [2.0, 7.0]
    assert [r.device_kind for r in pg_store.get_best(workload="mlp-digits", device="CPU")] == [
        "cpu"
    ]
    assert (
        pg_store.get_best_by_id(rec.id)
        == pg_store.get_best(workload="mlp-digits", device="cuda")[0]
    )


@pytest.mark.parametrize("direction", ["minimize", "maximize"])
def test_postgres_concurrent_save_best(pg_store, pg_url, seed_store, best_kwargs, direction):
    seed_store(pg_store)
    n = 8
    values = [float(10 + i) for i in range(n)]
    stores = [pg_store, open_store(pg_url)]  # a shared store and a second engine
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        try:
            barrier.wait()
            stores[i % 2].save_best(
                **best_kwargs(direction=direction, value=values[i], config={"i": i})
            )
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        stores[1].close()
    assert errors == []
    (rec,) = pg_store.get_best(workload="mlp-digits")
    want = min(values) if direction == "minimize" else max(values)
    assert rec.value == want and rec.config == {"i": values.index(want)}
    assert sorted(h["value"] for h in rec.history) == sorted(v for v in values if v != want)
    with pg_store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM perftune_best_configs").scalar() == 1


def test_optuna_shares_postgres_schema(pg_url: str, seed_store, best_kwargs) -> None:
    schema = _schema_of(pg_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(pg_url)
    try:
        study = optuna.create_study(study_name="pg", storage=storage)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
        upgrade(pg_url)
        with open_store(pg_url) as s:
            seed_store(s)
            assert s.save_best(**best_kwargs())[1] is True
        assert len(optuna.load_study(study_name="pg", storage=storage).trials) == 2
    finally:
        storage.engine.dispose()
    tables = _tables(pg_url, schema)
    assert {"alembic_version", "perftune_alembic_version", "studies", "perftune_devices"} <= tables
