"""Engine construction and error translation shared by the store and the migrations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, exc, pool
from sqlalchemy.engine import URL, Engine, make_url

from ._base import SchemaNotReadyError, StoreError, StoreUnavailableError
from ._urls import redact_text, redact_url

__all__ = [
    "SQLITE_BEGIN_OPTION",
    "make_engine",
    "parse_url",
    "sqlite_file",
    "is_memory_sqlite",
    "short_reason",
    "translate_error",
    "unavailable",
]

#: Connection execution option read by the SQLite "begin" hook: "DEFERRED" (default)
#: or "IMMEDIATE" (take the write lock at BEGIN, used by read-modify-write transactions).
SQLITE_BEGIN_OPTION = "perftune_sqlite_begin"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 3

_MISSING_TABLE_RE = re.compile(r"no such table|undefinedtable|relation .* does not exist", re.I)


def short_reason(error: BaseException, url: URL | None = None) -> str:
    """First meaningful line of a (DBAPI) error message, without any password (the URLs it
    quotes redacted, and ``url``'s password wherever it appears)."""
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line:
        line = type(orig).__name__
    elif isinstance(orig, ImportError | exc.NoSuchModuleError):
        line = f"{type(orig).__name__}: {line}"
    line = redact_text(line)
    if url is not None and url.password:
        line = line.replace(str(url.password), "***")
    if len(line) > 200:
        line = line[:197] + "..."
    return line


def unavailable(url: str | URL, reason: str) -> StoreUnavailableError:
    shown = redact_url(url if isinstance(url, str) else url.render_as_string(False))
    return StoreUnavailableError(f"cannot reach perftune database {shown}: {reason}")


def not_ready(url: str | URL, detail: str = "is not initialised") -> SchemaNotReadyError:
    shown = redact_url(url if isinstance(url, str) else url.render_as_string(False))
    return SchemaNotReadyError(f"perftune database at {shown} {detail}: run `perftune db upgrade`")


def translate_error(error: BaseException, url: URL) -> StoreError:
    """Map an SQLAlchemy/driver error to a one-line :class:`StoreError`."""
    if isinstance(error, StoreError):
        return error
    reason = short_reason(error, url)
    if isinstance(error, exc.DBAPIError) and _MISSING_TABLE_RE.search(reason):
        return not_ready(url)
    if (
        isinstance(
            error, exc.OperationalError | exc.InterfaceError | exc.ArgumentError | ImportError
        )
        # a bare DatabaseError: e.g. SQLite's "file is not a database"
        or type(error) is exc.DatabaseError
        or (isinstance(error, exc.DBAPIError) and error.connection_invalidated)
    ):
        return unavailable(url, reason)
    shown = redact_url(url.render_as_string(False))
    return StoreError(f"perftune database {shown}: {reason}")


def parse_url(url: str) -> URL:
    try:
        return make_url(url)
    except Exception as e:  # ArgumentError, ValueError
        raise unavailable(url, f"invalid database URL ({short_reason(e)})") from None


def is_memory_sqlite(url: URL) -> bool:
    if url.get_backend_name() != "sqlite":
        return False
    db = url.database or ""
    return db in ("", ":memory:") or "mode=memory" in db or db.startswith("file::memory:")


def sqlite_file(url: URL) -> Path | None:
    """The database file of a file-based SQLite URL, else ``None``."""
    if url.get_backend_name() != "sqlite" or is_memory_sqlite(url):
        return None
    db = url.database or ""
    if db.startswith("file:"):  # SQLite URI filename (uri=true)
        db = db[len("file:") :].split("?", 1)[0]
    return Path(db).expanduser().resolve()


def make_engine(url: URL, *, pooled: bool = True) -> Engine:
    """Create an engine with perftune's connection settings.

    SQLite: WAL journal, busy timeout, foreign keys on, and SQLAlchemy-controlled BEGIN
    (so SELECTs run inside the transaction and read-modify-write transactions can take the
    write lock up front with ``BEGIN IMMEDIATE``). In-memory SQLite uses one shared
    connection (:class:`~sqlalchemy.pool.StaticPool`). Servers: ``pool_pre_ping`` and, for
    PostgreSQL, a 3 s connect timeout. ``pooled=False`` gives a :class:`NullPool` engine
    for one-off work (migrations).

    Raises :class:`StoreUnavailableError` for an unknown dialect or a missing driver.
    """
    backend = url.get_backend_name()
    kwargs: dict[str, Any] = {}
    connect_args: dict[str, Any] = {}
    if backend == "sqlite":
        connect_args["check_same_thread"] = False
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        if is_memory_sqlite(url):
            kwargs["poolclass"] = pool.StaticPool
        elif not pooled:
            kwargs["poolclass"] = pool.NullPool
    else:
        kwargs["pool_pre_ping"] = True
        if not pooled:
            kwargs["poolclass"] = pool.NullPool
        if backend == "postgresql" and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    try:
        engine = create_engine(url, connect_args=connect_args, **kwargs)
    except Exception as e:  # NoSuchModuleError, ImportError, ArgumentError, TypeError
        raise unavailable(url, short_reason(e)) from None
    if backend == "sqlite":
        _install_sqlite_hooks(engine)
    return engine


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (see the "begin" hook below).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        if mode not in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE"):
            mode = "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")
