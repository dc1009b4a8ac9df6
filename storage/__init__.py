"""perftune's config store: devices, workloads, sweeps and the best config per key.

A small abstract interface (:class:`BaseConfigStore`) with one SQLAlchemy implementation
(:class:`SQLConfigStore`) that runs on an embedded SQLite file (the default) or on
PostgreSQL (``postgresql+psycopg://...``), possibly in the same database as Optuna's and
MLflow's tables: all our tables are prefixed ``perftune_`` and our Alembic revision lives in
``perftune_alembic_version``.

Typical use::

    from perftune.storage import open_store

    with open_store("~/.perftune/perftune.db", create=True) as store:
        dev = store.upsert_device(fp, framework="torch", kind="cpu", name="AMD EPYC 7B13",
                                  count=1, memory_bytes=None, info={})
        ...
        rec, improved = store.save_best(...)

Servers are migrated explicitly (``perftune db upgrade`` -> :func:`upgrade`); opening a store
with ``create=False`` never changes the database.
"""

from ._base import (
    FINAL_SWEEP_STATES,
    SWEEP_STATES,
    BaseConfigStore,
    BestConfigRecord,
    ParetoFrontRecord,
    SchemaNotReadyError,
    StoreError,
    StoreUnavailableError,
    SweepStateError,
)
from ._urls import normalize_url, redact_text, redact_url

#: What needs SQLAlchemy or Alembic loads on first use (PEP 562), so ``from perftune import storage`` stays
#: light: the CLI imports it to build every ``--help`` and each shell completion.
_LAZY = {"SQLConfigStore": "._store", "open_store": "._store", "upgrade": "._migrate",
         "current_revision": "._migrate", "head_revision": "._migrate"}  # fmt: skip


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name], __name__), name)

__all__ = [
    "BaseConfigStore",
    "SQLConfigStore",
    "BestConfigRecord",
    "ParetoFrontRecord",
    "open_store",
    "upgrade",
    "current_revision",
    "head_revision",
    "StoreError",
    "StoreUnavailableError",
    "SchemaNotReadyError",
    "SweepStateError",
    "SWEEP_STATES",
    "FINAL_SWEEP_STATES",
    "normalize_url",
    "redact_url",
    "redact_text",
]
