"""Schema migrations through Alembic's Python API (no ``alembic.ini`` needed at runtime).

Our revision is recorded in ``perftune_alembic_version``; Optuna and MLflow keep theirs in
``alembic_version``, so all three can share one database or PostgreSQL schema.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import exc, text
from sqlalchemy.engine import URL, Connection, Engine

from ._base import StoreError
from ._engine import (
    SQLITE_BEGIN_OPTION,
    make_engine,
    parse_url,
    sqlite_file,
    translate_error,
)
from ._models import VERSION_TABLE
from ._urls import normalize_url, redact_text, redact_url

__all__ = ["upgrade", "current_revision", "head_revision", "MIGRATIONS_DIR"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_xact_lock key serialising concurrent `perftune db upgrade` runs.
_PG_MIGRATION_LOCK = 0x70657266  # "perf"


def _alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision shipped with this perftune."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(_alembic_config())
    return {rev.revision for rev in script.walk_revisions()}


def _sqlite_fk(conn: Connection, on: bool) -> None:
    # PRAGMA foreign_keys is a no-op inside a transaction, and any SQLAlchemy-level
    # execute would autobegin one; go through the raw DBAPI connection instead.
    raw = conn.connection.dbapi_connection
    assert raw is not None
    raw.execute(f"PRAGMA foreign_keys = {'ON' if on else 'OFF'}")


def upgrade_engine(engine: Engine, revision: str = "head") -> None:
    """Run the migrations on ``engine`` in one transaction (serialised across processes:
    ``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL)."""
    with engine.connect() as conn:
        is_sqlite = conn.dialect.name == "sqlite"
        if is_sqlite:
            # Batch migrations recreate tables; foreign keys must be off meanwhile.
            _sqlite_fk(conn, False)
            conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK}
                    )
                command.upgrade(_alembic_config(conn), revision)
        finally:
            if is_sqlite and not conn.invalidated:
                _sqlite_fk(conn, True)


def revision_of(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def _prepare(url: str) -> URL:
    return parse_url(normalize_url(url))


def upgrade(url: str, revision: str = "head") -> None:
    """Apply perftune's migrations to the database at ``url`` (up to ``revision``).

    Idempotent; creates a SQLite file (and its parent directory) if needed. Safe to run
    concurrently from several processes. Raises :class:`StoreUnavailableError` when the
    database cannot be reached.
    """
    u = _prepare(url)
    path = sqlite_file(u)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(u, pooled=False)
    try:
        upgrade_engine(engine, revision)
    except (exc.SQLAlchemyError, ImportError) as e:
        raise translate_error(e, u) from None
    except CommandError as e:  # e.g. the database is at a revision this perftune lacks
        raise StoreError(f"cannot migrate perftune database {redact_url(str(url))}: {redact_text(e)}") from None
    finally:
        engine.dispose()


def current_revision(url: str) -> str | None:
    """The perftune schema revision of the database, ``None`` if not initialised.

    Never creates anything: a SQLite file that does not exist gives ``None``.
    """
    u = _prepare(url)
    path = sqlite_file(u)
    if path is not None and not path.exists():
        return None
    engine = make_engine(u, pooled=False)
    try:
        with engine.connect() as conn:
            return revision_of(conn)
    except (exc.SQLAlchemyError, ImportError) as e:
        raise translate_error(e, u) from None
    finally:
        engine.dispose()
