"""Alembic environment of the perftune config store.

Normally driven from :mod:`perftune.storage._migrate`, which passes an open connection in
``config.attributes["connection"]`` (inside a transaction it owns). For development the
Alembic CLI works too::

    PERFTUNE_DB_URL=sqlite:////tmp/dev.db alembic -c storage/alembic.ini revision \
        --autogenerate -m "add something"

Our revision is kept in ``perftune_alembic_version`` and autogenerate only looks at tables
named ``perftune_*``, so Optuna's and MLflow's tables (and their ``alembic_version``) in the
same database are never touched.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from perftune.storage._models import TABLE_PREFIX, VERSION_TABLE, Base
from perftune.storage._urls import normalize_url

config = context.config
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Only consider perftune's own tables during autogenerate."""
    if type_ == "table":
        return bool(name) and name.startswith(TABLE_PREFIX)
    return True


def _options(dialect_name: str) -> dict[str, object]:
    return {
        "target_metadata": target_metadata,
        "version_table": VERSION_TABLE,  # "perftune_alembic_version"
        "render_as_batch": dialect_name == "sqlite",
        "include_name": include_name,
        "compare_type": True,
    }


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("PERFTUNE_DB_URL")
    if not url:
        raise RuntimeError("set sqlalchemy.url in alembic.ini or the PERFTUNE_DB_URL variable")
    return normalize_url(url)


def run_migrations_offline() -> None:
    url = _url()
    dialect_name = url.split(":", 1)[0].split("+", 1)[0]
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(dialect_name),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
