"""URL normalisation/redaction and the errors for unreachable databases."""

from __future__ import annotations

import os
import time
from urllib.parse import quote

import pytest

from perftune.storage import (
    StoreUnavailableError,
    current_revision,
    normalize_url,
    open_store,
    redact_text,
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


# -- what redact_url hides, and that the secret never survives -----------------------------

SECRET = "Zq7Secr3t"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # a password with "@" and ":" inside, raw and percent-encoded
        ("postgresql://bob:Zq7@Secr3t@db:5432/perf", "postgresql://bob:***@db:5432/perf"),
        ("postgresql://bob:Zq7%40Secr3t@db:5432/perf", "postgresql://bob:***@db:5432/perf"),
        ("postgresql://bob:Zq7:Secr3t@db/perf", "postgresql://bob:***@db/perf"),
        ("postgresql://bob:Zq7%3ASecr3t%40x@db/perf", "postgresql://bob:***@db/perf"),
        ("postgresql://bob:a@b:c@Zq7@db/perf?x=y@z", "postgresql://bob:***@db/perf?x=y@z"),
        ("postgresql://bob:Zq7/Se?c#r3t@db/perf", "postgresql://bob:***@db/perf"),
        ("postgresql+psycopg://bob:Zq7@h1:5432,h2:5433/perf", "postgresql+psycopg://bob:***@h1:5432,h2:5433/perf"),
        # query keys that name secrets (and keys that do not)
        ("postgresql://bob@db/perf?password=Zq7&user=bob", "postgresql://bob@db/perf?password=***&user=bob"),
        ("postgresql://db/perf?sslmode=require&sslpassword=Zq7", "postgresql://db/perf?sslmode=require&sslpassword=***"),
        ("postgresql://db/p?options=-csearch_path%3Dx&PASSWD=Zq7", "postgresql://db/p?options=-csearch_path%3Dx&PASSWD=***"),
        ("mysql+pymysql://u@h/d?pwd=Zq7;charset=utf8", "mysql+pymysql://u@h/d?pwd=***;charset=utf8"),
        ("https://mlflow.example/api?token=Zq7&access_key=Zq8&api%5Fkey=Zq9&q=1",
         "https://mlflow.example/api?token=***&access_key=***&api%5Fkey=***&q=1"),
        ("https://h/x?X-Amz-Signature=Zq7&X-Amz-Credential=Zq8&secret=Zq9",
         "https://h/x?X-Amz-Signature=***&X-Amz-Credential=***&secret=***"),
        # http(s) userinfo, the fragment
        ("http://alice:Zq7@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
        ("https://alice:Zq7@Secr3t@mlflow.example/#/experiments?access_token=Zq8",
         "https://alice:***@mlflow.example/#/experiments?access_token=***"),
        ("http://alice@127.0.0.1:5000/", "http://alice@127.0.0.1:5000/"),
        ("http://host/a:b@c", "http://host/a:b@c"),  # a path, not a userinfo
        # a libpq conninfo, and things that are no URL at all
        ("host=db user=bob password=Zq7 dbname=perf", "host=db user=bob password=*** dbname=perf"),
        ("host=db password='Zq7 Secr3t' port=5432", "host=db password=*** port=5432"),
        ("/var/lib/perftune.db", "/var/lib/perftune.db"),
        ("journal:///tmp/optuna.journal", "journal:///tmp/optuna.journal"),
        ("not a url: at all @ : //", "not a url: at all @ : //"),
    ],
)
def test_redact_url_hides_every_secret(given: str, expected: str) -> None:
    assert redact_url(given) == expected
    assert redact_url(expected) == expected  # idempotent


def test_redact_text_redacts_the_urls_inside_a_message() -> None:
    message = ("could not check the MLflow runs (API request to http://alice:Zq7@Secr3t@127.0.0.1:5999"
               "/api/2.0/mlflow/experiments/get-by-name failed with exception HTTPConnectionPool("
               "host='127.0.0.1', port=5999)); storage 'postgresql+psycopg://bob:Zq7%40x@db/optuna"
               "?sslpassword=Zq8' failed, conninfo password=Zq9")  # fmt: skip
    out = redact_text(message)
    assert "Zq" not in out and "Secr3t" not in out
    assert "http://alice:***@127.0.0.1:5999/api/2.0/mlflow/experiments/get-by-name failed" in out
    # a secret value runs to the next separator: a quote right after it goes too (never a secret)
    assert "'postgresql+psycopg://bob:***@db/optuna?sslpassword=*** failed" in out
    assert out.endswith("conninfo password=***") and redact_text(out) == out
    assert redact_text("no URL here: 3 @ 4, a=b") == "no URL here: 3 @ 4, a=b"
    assert isinstance(redact_text(ValueError("x")), str)


def _urls_with(password: str) -> list[str]:
    encoded = quote(password, safe="")
    return [f"{scheme}://{user}:{pw}@{host}{path}"
            for scheme in ("postgresql", "postgresql+psycopg", "mysql+pymysql", "http", "https")
            for user in ("bob", "", "b.o-b")
            for pw in (password, encoded)
            for host in ("db", "db:5432", "127.0.0.1:5000", "[::1]:5432")
            for path in ("", "/", "/perf", "/perf?options=-csearch_path%3Dx", "?x=1#f")]  # fmt: skip


@pytest.mark.parametrize("password", ["Zq7Secr3t", "Zq7@Secr3t", "Zq7:Secr3t@x", "Zq7/Secr3t", "Zq7%Secr3t",
                                      "Zq7 Secr3t", "Zq7?Secr3t#x", "@Zq7Secr3t@", "Zq7:@:@Secr3t"])  # fmt: skip
def test_a_redacted_url_never_contains_the_secret(password: str) -> None:
    """Every combination of scheme, user, host and path, the password raw and percent-encoded:
    no part of it survives, alone or in a message (where a URL ends at whitespace, so a raw
    space in a password cannot be told from the URL's end: only encoded there)."""
    from sqlalchemy.engine import make_url

    for url in _urls_with(password):
        outs = [redact_url(url), redact_url(redact_url(url))]
        if " " not in url:
            outs.append(redact_text(f"failed: {url} (retrying)"))
        for out in outs:
            assert "Zq7" not in out and "Secr3t" not in out and "***" in out, (url, out)
        try:  # what SQLAlchemy would send as the password is hidden too
            sent = make_url(url).password
        except Exception:  # noqa: BLE001 - not every combination parses
            continue
        assert not sent or str(sent) not in redact_url(url).replace("***", ""), url


def test_normalize_url_encodes_a_raw_at_in_the_password() -> None:
    """So that SQLAlchemy connects with the password as written, to the right host (it would
    take ``p`` for the password and ``ss@db`` for the host, and quote that host in errors)."""
    from sqlalchemy.engine import make_url

    url = normalize_url("postgresql://bob:p@ss:w@db:5432/perf")
    assert url == "postgresql+psycopg://bob:p%40ss%3Aw@db:5432/perf"
    parsed = make_url(url)
    assert (parsed.password, parsed.host, parsed.port) == ("p@ss:w", "db", 5432)
    assert normalize_url("postgresql://bob:p%40ss@db/perf") == "postgresql+psycopg://bob:p%40ss@db/perf"
    assert normalize_url("http://a:b@c/d") == "http://a:b@c/d"


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
