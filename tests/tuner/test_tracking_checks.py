"""``check_database``: one line naming the flag on a database that cannot be reached; a helper
worker's patience with a connection dropped while it joins (``patience_s``)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from perftune.errors import UsageError
from perftune.tracking import check_database

URL = "postgresql+psycopg://perftune:s3cret@db.example:5432/perftune"


@pytest.fixture
def drops(monkeypatch):
    """``create_engine`` whose connections fail while ``left[0]`` > 0, as a server that dropped
    them would (SQLAlchemy's OperationalError); counts the attempts."""
    left, attempts = [0], []
    real = sa.create_engine("sqlite://")

    class Engine:
        def connect(self):
            attempts.append(time.monotonic())
            if left[0] != 0:
                left[0] -= 1
                raise sa.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
            return real.connect()

        def dispose(self):
            pass

    monkeypatch.setattr(sa, "create_engine", lambda *a, **k: Engine())
    return left, attempts


def test_a_sweep_fails_at_once_on_a_dropped_connection(drops):
    left, attempts = drops
    left[0] = 1
    with pytest.raises(UsageError) as err:
        check_database(URL, "--storage")
    assert len(attempts) == 1
    message = str(err.value)
    assert message.startswith("--storage ") and "cannot reach the database" in message
    assert "server closed the connection" in message and "s3cret" not in message


def test_a_helper_worker_connects_again(drops):
    left, attempts = drops
    left[0] = 2
    check_database(URL, "--db", patience_s=10.0)
    assert len(attempts) == 3 and left[0] == 0


def test_a_helper_worker_gives_up_after_its_patience(drops):
    left, attempts = drops
    left[0] = -1  # never reachable
    started = time.monotonic()
    with pytest.raises(UsageError, match="^--db .*cannot reach the database"):
        check_database(URL, "--db", patience_s=0.5)
    assert len(attempts) >= 2 and time.monotonic() - started < 5
