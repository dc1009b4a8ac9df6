"""perftune's tables and Alembic version table coexist with Optuna's in one SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest

from perftune.storage import current_revision, head_revision, open_store, upgrade

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _optuna_roundtrip(url: str, name: str) -> None:
    storage = optuna.storages.RDBStorage(url)
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        study.optimize(lambda t: (t.suggest_float("x", -1, 1)) ** 2, n_trials=3)
        loaded = optuna.load_study(study_name=name, storage=storage)
        assert len(loaded.trials) == 3 and loaded.best_value >= 0
    finally:
        storage.engine.dispose()


def _store_roundtrip(url: str, seed_store, best_kwargs) -> None:
    with open_store(url) as s:
        seed_store(s)
        rec, improved = s.save_best(**best_kwargs(value=1.0))
        assert improved and s.get_best_by_id(rec.id) == rec


def _version_tables(path: Path) -> dict[str, list[tuple[str]]]:
    with sqlite3.connect(path) as conn:
        return {
            t: conn.execute(f"SELECT version_num FROM {t}").fetchall()
            for t in ("alembic_version", "perftune_alembic_version")
        }


@pytest.mark.parametrize("optuna_first", [True, False], ids=["optuna-first", "perftune-first"])
def test_optuna_and_perftune_share_sqlite_file(
    tmp_path: Path, optuna_first: bool, seed_store, best_kwargs
) -> None:
    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    if optuna_first:
        _optuna_roundtrip(url, "before")
        upgrade(url)
    else:
        upgrade(url)
        _optuna_roundtrip(url, "before")
    _store_roundtrip(url, seed_store, best_kwargs)
    upgrade(url)  # still idempotent with Optuna's tables around
    _optuna_roundtrip(url, "after")  # Optuna re-checks its own schema version here

    versions = _version_tables(path)
    assert len(versions["alembic_version"]) == 1  # Optuna's revision, untouched by us
    assert versions["alembic_version"][0][0] != head_revision()
    assert versions["perftune_alembic_version"] == [(head_revision(),)]
    assert current_revision(url) == head_revision()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"studies", "trials", "perftune_best_configs", "perftune_devices"} <= tables
