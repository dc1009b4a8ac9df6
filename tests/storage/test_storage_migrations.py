"""Alembic migrations on a real SQLite file, and open_store's schema checks."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from perftune import storage
from perftune.storage import (
    SchemaNotReadyError,
    _migrate,
    current_revision,
    head_revision,
    open_store,
    upgrade,
)
from perftune.storage._models import VERSION_TABLE, Base

PERFTUNE_TABLES = {
    "perftune_devices",
    "perftune_workloads",
    "perftune_sweeps",
    "perftune_best_configs",
    "perftune_best_config_history",
    "perftune_pareto_fronts",
}


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_public_api_is_reexported() -> None:
    for name in (
        "BaseConfigStore",
        "SQLConfigStore",
        "BestConfigRecord",
        "open_store",
        "upgrade",
        "current_revision",
        "StoreError",
        "StoreUnavailableError",
        "SchemaNotReadyError",
        "normalize_url",
        "redact_url",
    ):
        assert name in storage.__all__ and hasattr(storage, name)
    assert issubclass(storage.StoreUnavailableError, storage.StoreError)
    assert issubclass(storage.SchemaNotReadyError, storage.StoreError)
    assert issubclass(storage.SQLConfigStore, storage.BaseConfigStore)


def test_upgrade_creates_tables_and_own_version_table(db_path: Path, sqlite_url: str) -> None:
    assert VERSION_TABLE == "perftune_alembic_version"
    assert not db_path.parent.exists()
    upgrade(sqlite_url)  # also creates the parent directory
    tables = _tables(db_path)
    assert tables == PERFTUNE_TABLES | {"perftune_alembic_version"}
    assert "alembic_version" not in tables
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT version_num FROM perftune_alembic_version").fetchall()
        assert rows == [(head_revision(),)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert current_revision(sqlite_url) == head_revision() == "0004"


def test_upgrade_is_idempotent_and_keeps_data(db_path: Path, sqlite_url: str) -> None:
    upgrade(str(db_path))  # a bare path works too
    with open_store(sqlite_url) as s:
        s.upsert_workload("w", framework="torch", info={})
    upgrade(sqlite_url)
    upgrade(sqlite_url, "head")
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM perftune_alembic_version").fetchone() == (1,)
        assert conn.execute("SELECT name FROM perftune_workloads").fetchall() == [("w",)]


def test_open_store_on_missing_file_raises_and_creates_nothing(db_path: Path) -> None:
    with pytest.raises(SchemaNotReadyError) as info:
        open_store(str(db_path))
    assert str(info.value) == (
        f"perftune database at sqlite:///{db_path} is not initialised: run `perftune db upgrade`"
    )
    assert not db_path.exists() and not db_path.parent.exists()
    assert current_revision(str(db_path)) is None
    assert not db_path.exists()


def test_open_store_on_foreign_database_raises(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TABLE other (x INTEGER)")
    with pytest.raises(SchemaNotReadyError, match="is not initialised"):
        open_store(str(db_path))
    assert _tables(db_path) == {"other"}  # nothing was created


def test_open_store_rejects_unknown_revision(db_path: Path, sqlite_url: str) -> None:
    upgrade(sqlite_url)
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE perftune_alembic_version SET version_num = '9999'")
    assert current_revision(sqlite_url) == "9999"
    with pytest.raises(SchemaNotReadyError, match="unknown to this perftune"):
        open_store(sqlite_url)


def test_open_store_create_initialises(db_path: Path) -> None:
    with open_store(str(db_path), create=True) as s:
        assert s.get_best(workload="nothing") == []
    assert current_revision(str(db_path)) == head_revision()
    with open_store(str(db_path)) as s:  # now create=False is fine
        assert s.get_best_by_id(1) is None


def test_in_memory_sqlite_with_create() -> None:
    with pytest.raises(SchemaNotReadyError):
        open_store("sqlite://")
    with open_store("sqlite://", create=True) as s:
        wid = s.upsert_workload("w", framework="torch", info={})
        assert s.upsert_workload("w", framework="torch", info={}) == wid


def test_models_match_migrations(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = sa.create_engine(sqlite_url)
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
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(db_path: Path, sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            command.downgrade(_migrate._alembic_config(conn), "base")
    finally:
        engine.dispose()
    assert _tables(db_path) == {"perftune_alembic_version"}
    assert current_revision(sqlite_url) is None
    upgrade(sqlite_url)
    assert _tables(db_path) >= PERFTUNE_TABLES


def test_upgrade_does_not_need_script_template(tmp_path: Path, monkeypatch) -> None:
    """Only the .py files are package data: script.py.mako is for authoring revisions."""
    copy = tmp_path / "migrations"
    shutil.copytree(
        _migrate.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("*.mako", "__pycache__")
    )
    assert not (copy / "script.py.mako").exists()
    monkeypatch.setattr(_migrate, "MIGRATIONS_DIR", copy)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    assert current_revision(url) == head_revision()
