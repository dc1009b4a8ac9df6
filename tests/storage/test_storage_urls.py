"""URL normalisation/redaction and the errors for unreachable databases."""

from __future__ import annotations

import os
import time

import pytest

from storage import (
    StoreUnavailableError,
    current_revision,
    normalize_url,
    open_store,
    redact_url,
    upgrade,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/perf", "postgresql+psycopg://u:p@db:5432/perf"),
        ("postgres://u@db/perf", "postgresql+psycopg://u@db/perf"),
        ("postgresql+psycopg://u@db/perf", "postgresql+psycopg://u@db/perf"),
        ("postgresql+psycopg2://u@db/perf", "postgresql+psycopg2://u@db/perf"),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
        ("sqlite://", "sqlite://"),
        ("mysql+pymysql://u@h/d", "mysql+pymysql://u@h/d"),
        ("  postgres://h/d \n", "postgresql+psycopg://h/d"),
    ],
)
def test_normalize_url(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


def test_normalize_bare_paths(tmp_path, monkeypatch) -> None:
    assert normalize_url(str(tmp_path / "x.db")) == f"sqlite:///{tmp_path / 'x.db'}"
    monkeypatch.chdir(tmp_path)
    assert normalize_url("rel/p.db") == f"sqlite:///{tmp_path / 'rel' / 'p.db'}"
    home = os.path.expanduser("~")
    assert normalize_url("~/perftune.db") == f"sqlite:///{home}/perftune.db"
    with pytest.raises(ValueError):
        normalize_url("  ")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "postgresql+psycopg://bob:s3cr%40t@db:5432/perf",
            "postgresql+psycopg://bob:***@db:5432/perf",
        ),
        ("postgresql://bob@db/perf", "postgresql://bob@db/perf"),
        ("sqlite:////tmp/a.db", "sqlite:////tmp/a.db"),
    ],
)
def test_redact_url(given: str, expected: str) -> None:
    assert redact_url(given) == expected


def test_redact_url_password_in_query() -> None:
    out = redact_url("postgresql://db/perf?user=bob&password=hunter2")
    assert "hunter2" not in out and "password=***" in out and "user=bob" in out


def test_redact_url_never_raises_and_falls_back_to_regex() -> None:
    out = redact_url("postgresql://bob:hunter2@db:notaport/x")  # make_url rejects the port
    assert "hunter2" not in out and "bob:***@db" in out
    assert redact_url("") == ""
    assert "hunter2" not in redact_url("::://bob:hunter2@")
    assert isinstance(redact_url(None), str)  # type: ignore[arg-type]


def test_unreachable_postgres_is_reported_quickly_and_redacted() -> None:
    url = "postgresql://perf:hunter2@127.0.0.1:1/perftune"
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        open_store(url)
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert "hunter2" not in msg and "***" in msg
    assert msg.startswith(
        "cannot reach perftune database postgresql+psycopg://perf:***@127.0.0.1:1"
    )
    assert "\n" not in msg and "Traceback" not in msg
    for fn in (upgrade, current_revision):
        with pytest.raises(StoreUnavailableError, match="cannot reach") as info:
            fn(url)
        assert "hunter2" not in str(info.value)


def test_bad_url_and_missing_driver_are_unavailable() -> None:
    with pytest.raises(StoreUnavailableError, match="cannot reach") as info:
        open_store("nosuchdialect://u:hunter2@h/d")
    assert "hunter2" not in str(info.value)
    with pytest.raises(StoreUnavailableError, match="invalid database URL"):
        open_store("postgresql://u@h:port/d")


def test_unreadable_sqlite_file_is_unavailable(tmp_path) -> None:
    bogus = tmp_path / "not-a-db.db"
    bogus.write_bytes(b"this is not a sqlite database, just text" * 100)
    with pytest.raises(StoreUnavailableError, match="cannot reach"):
        open_store(str(bogus))
