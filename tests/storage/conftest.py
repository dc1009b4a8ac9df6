"""Fixtures of the storage tests: a real SQLite file per test and, when the local server
answers, a throw-away PostgreSQL schema (``perftune_t_<random>`` in database ``test``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from perftune.storage import SQLConfigStore, open_store

# The local test server (trust auth); override with PERFTUNE_TEST_PG_URL (no query string).
PG_ADMIN_URL = os.environ.get(
    "PERFTUNE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
FP_CPU = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"
FP_GPU = "ffee0011223344556677889900aabbccddeeff00112233445566778899aabbcc"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db" / "perftune.db"


@pytest.fixture
def sqlite_url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


@pytest.fixture
def store(sqlite_url: str) -> Iterator[SQLConfigStore]:
    s = open_store(sqlite_url, create=True)
    try:
        yield s
    finally:
        s.close()


def _seed(store: SQLConfigStore) -> dict[str, Any]:
    """A workload on two devices (a CPU and a GPU), both frameworks 'torch'."""
    cpu = store.upsert_device(
        FP_CPU,
        framework="torch",
        kind="cpu",
        name="AMD EPYC 7B13",
        count=1,
        memory_bytes=None,
        info={"cores": 16},
    )
    gpu = store.upsert_device(
        FP_GPU,
        framework="torch",
        kind="cuda",
        name="NVIDIA H100 80GB HBM3",
        count=1,
        memory_bytes=80 * 2**30,
        info={"capability": [9, 0]},
    )
    wl = store.upsert_workload(
        "mlp-digits", framework="torch", info={"metric": "step_time", "mode": "train"}
    )
    return {"cpu": cpu, "gpu": gpu, "workload": wl}


@pytest.fixture
def seed_store() -> Callable[[SQLConfigStore], dict[str, Any]]:
    """``seed_store(store)`` upserts the workload and both devices; returns their ids."""
    return _seed


@pytest.fixture
def seeded(store: SQLConfigStore) -> dict[str, Any]:
    return _seed(store)


@pytest.fixture
def fp() -> SimpleNamespace:
    """The seeded device fingerprints."""
    return SimpleNamespace(cpu=FP_CPU, gpu=FP_GPU)


@pytest.fixture
def best_kwargs() -> Callable[..., dict[str, Any]]:
    """``best_kwargs(**overrides)``: arguments of a save_best call."""
    return _best_kwargs


def _best_kwargs(**over: Any) -> dict[str, Any]:
    """Arguments of save_best for the seeded workload on the CPU, minimising seconds."""
    kw: dict[str, Any] = dict(
        workload="mlp-digits",
        framework="torch",
        device_fingerprint=FP_CPU,
        objective="step_time",
        direction="minimize",
        unit="s",
        config={"batch_size": 64},
        value=1.0,
        spread=0.02,
        metrics={"p50": 1.0},
        baseline_config={"batch_size": 32},
        baseline_value=2.0,
        speedup=2.0,
        mlflow_run_id=None,
        sweep_id=None,
    )
    kw.update(over)
    return kw


def _pg_reachable() -> str | None:
    engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except Exception as e:  # server down, driver missing, ...
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_available() -> None:
    why = _pg_reachable()
    if why is not None:
        pytest.skip(f"PostgreSQL test server unreachable: {why}")


@pytest.fixture
def pg_url(pg_available: None) -> Iterator[str]:
    """URL of a fresh schema selected through ``search_path``; dropped afterwards."""
    schema = f"perftune_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[SQLConfigStore]:
    s = open_store(pg_url, create=True)
    try:
        yield s
    finally:
        s.close()
