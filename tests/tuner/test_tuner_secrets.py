"""Passwords in the three URLs stay secret: not printed (a tracking server that is down, bad
input, errors quoting URLs), not on a child process's command line (``ps``), not in the API's
answers, not in the tracking spool. tests/e2e/test_e2e_secrets.py checks all of it on a real
sweep; these are the fast, one-mechanism-each checks."""

from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest

from perftune import _recovery, _spool
from perftune.settings import Workspace
from perftune.sweep import SweepConfig, SweepContext
from perftune.sweep.workers import spawn_workers

PW = "Zq7Secr3t"


def _no_secret(*texts: object) -> None:
    for text in texts:
        assert PW not in str(text), text


# -- 1. a tracking server that is down, with credentials in its URL


def test_a_down_tracking_server_is_reported_without_its_password(monkeypatch, capsys):
    """What MLflow's REST client raises quotes the URL, credentials included."""
    import mlflow
    from mlflow.exceptions import MlflowException

    class DownClient:
        def __init__(self, tracking_uri):
            self.uri = tracking_uri

        def get_experiment_by_name(self, name):
            raise MlflowException(f"API request to {self.uri}/api/2.0/mlflow/experiments/get-by-name failed "
                                  "with exception HTTPConnectionPool(host='127.0.0.1', port=1): Max retries")

    class BrokenStore:
        def interrupt_sweeps(self, study_name, dead):
            raise RuntimeError(f"lost postgresql+psycopg://bob:{PW}@db/perf?sslpassword={PW}")

    monkeypatch.setattr(mlflow, "MlflowClient", DownClient)
    done = _recovery.recover_sweep(BrokenStore(), "s", f"http://alice:{PW}@127.0.0.1:1", "exp")
    err = capsys.readouterr().err
    assert "could not check the MLflow runs" in err and "http://alice:***@127.0.0.1:1/api" in err
    store_only = _recovery.recover_sweep(BrokenStore(), "s", None, "exp")
    assert "bob:***@db/perf?sslpassword=***" in store_only["error"]
    _no_secret(err, done, store_only)


# -- 2. child processes get the URLs in their environment, never on their command line


def test_workers_get_the_urls_in_their_environment(tmp_path, monkeypatch):
    ws = Workspace.resolve(tmp_path / "ws", storage=f"postgresql://bob:{PW}@db/optuna",
                           tracking_uri=f"http://alice:{PW}@mlflow:5000",
                           db=f"postgresql://bob@db/perf?sslpassword={PW}")  # fmt: skip
    ws.prepare()
    started = []

    class Popen:
        def __init__(self, args, env, **kw):
            started.append((args, env))

    monkeypatch.setattr(subprocess, "Popen", Popen)
    ctx = SweepContext(SweepConfig(workload="mlp-digits", workers=3), ws, None)
    ctx.study_name = "mlp-digits-torch-cpu-time-to-target"
    spawn_workers(ctx)
    assert [args[-1] for args, _ in started] == ["1", "2"]
    for args, env in started:
        _no_secret(" ".join(args))
        assert args[3:6] == ["worker", "--study", ctx.study_name]
        with monkeypatch.context() as m:  # the worker, in that environment, works on this workspace
            for key, value in env.items():
                m.setenv(key, value)
            assert Workspace.resolve() == ws


# -- 3. redaction everywhere a URL or an exception becomes a message


@pytest.mark.parametrize("flags", [
    ["--storage", f"postgresql://u@127.0.0.1:1/x?sslpassword={PW}"],
    ["--db", f"postgresql://u@127.0.0.1:1/x?password={PW}&sslmode=disable"],
    ["--db", f"postgresql://u:{PW}@x@127.0.0.1:1/x"],  # an "@" in the password
    ["--db", "postgresql://u:Zq7@Secr3t@127.0.0.1:1/x"],
    ["--storage", f"host=db password={PW}"],  # a conninfo, not a URL
    ["--tracking-uri", "http://u:Zq7@Secr3t@127.0.0.1:port"],
    ["--tracking-uri", f"postgresql://u@127.0.0.1:1/x?token={PW}"],
])  # fmt: skip
def test_bad_urls_are_one_line_without_the_secret(flags, tmp_path, capsys, monkeypatch):
    from perftune.cli import main

    for key in [k for k in os.environ if k.startswith("PERFTUNE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PERFTUNE_NO_PROGRESS", "1")
    code = main(["sweep", "--workload", "mlp-digits", "--home", str(tmp_path / "ws"), *flags])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"perftune: error: {flags[0]}") and err.count("\n") == 1, err
    assert "Zq7" not in err and "Secr3t" not in err and not (tmp_path / "ws").exists()


def test_the_cli_redacts_any_error_it_prints(monkeypatch, capsys):
    """An error from anywhere (here the store, failing with a driver's message) quoting a URL."""
    import perftune.service
    from perftune.cli import main

    def boom(*args, **kwargs):
        raise RuntimeError(f"driver said: connection to postgresql://bob:{PW}@db/perf?sslpassword={PW} lost")

    monkeypatch.setattr(perftune.service, "best_configs", boom)
    assert main(["best", "--workload", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("perftune: internal error: RuntimeError: driver said: connection to "
                          "postgresql://bob:***@db/perf?sslpassword=***")  # fmt: skip
    _no_secret(err)


def test_healthz_and_api_errors_hide_query_secrets(tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from perftune.server import create_app

    ws = Workspace.resolve(tmp_path / "ws", storage=f"postgresql://u@127.0.0.1:1/optuna?sslpassword={PW}",
                           tracking_uri=f"https://alice:{PW}@mlflow.example/?token={PW}",
                           db=f"postgresql://bob:Zq7@Secr3t@127.0.0.1:1/perf?password={PW}")  # fmt: skip
    with TestClient(create_app(ws)) as client:
        answers = [client.get("/healthz"), client.get("/v1/sweeps"), client.get("/v1/best-configs",
                                                                             params={"workload": "x"})]
    assert [r.status_code for r in answers] == [503, 503, 503]
    health = answers[0].json()
    assert health["storage"] == "postgresql+psycopg://u@127.0.0.1:1/optuna?sslpassword=***"
    assert health["tracking_uri"] == "https://alice:***@mlflow.example/?token=***"
    assert health["db"] == "postgresql+psycopg://bob:***@127.0.0.1:1/perf?password=***"
    for r in answers:
        assert "Zq7" not in r.text and "Secr3t" not in r.text and "***" in r.text


# -- 4. the tracking spool records references, not secrets


def _spool_bytes(home) -> bytes:
    return b"".join(p.read_bytes() for p in home.iterdir() if p.name.startswith("tracking-spool.db"))


def test_the_spool_keeps_references_and_the_delivering_process_uses_its_own_urls(tmp_path, monkeypatch):
    from perftune.tracking import SpooledTracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    storage, db = f"postgresql+psycopg://bob:{PW}@db/optuna", f"postgresql+psycopg://bob:{PW}@db/perf?sslpassword={PW}"
    uri = f"http://alice:{PW}@127.0.0.1:1"  # nothing listens: the run gets a placeholder id
    tracker = SpooledTracker(uri, tmp_path, storage=storage, db=db, start_wait_s=0.2, flush_s=0.2)
    ref = tracker.start_sweep("exp", "sweep-1", {"trials": 3}, {"study": "s"})
    tracker.log_trial("trial-0", {"batch_size": 32}, {"objective": 1.0}, {}, {"phase": "search"})
    tracker.close()
    assert ref.startswith("local-")
    spool = _spool.Spool(tmp_path)
    (row,) = spool.conn.execute("SELECT ref, uri, storage, study, db FROM fixups").fetchall()
    assert row == (ref, "http://alice:***@127.0.0.1:1", "postgresql+psycopg://bob:***@db/optuna", "s",
                   "postgresql+psycopg://bob:***@db/perf?sslpassword=***")  # fmt: skip
    assert spool.count(_spool.spool_key(uri)) >= 2
    _no_secret(_spool_bytes(tmp_path))

    applied = []
    monkeypatch.setattr(_spool, "apply_fixup", lambda *args: applied.append(args))
    key = _spool.spool_key(uri)
    spool.record_run(key, ref, "run-1")  # the server has created the run since
    other = "postgresql+psycopg://bob@elsewhere/perf"
    assert _spool.apply_fixups(spool, key, storage, other) == 0 and not applied  # not these databases
    # the same databases, another password (rotated since): the same reference
    again = (storage.replace(PW, "new"), db.replace(PW, "new"))
    assert _spool.apply_fixups(spool, key, *again) == 1
    assert applied == [(ref, "run-1", *again[:1], "s", again[1])]
    assert not spool.fixups(key)
    spool.close()


def test_a_spool_from_before_is_scrubbed_when_opened(tmp_path):
    """An earlier perftune kept the URLs as given: opening the spool rewrites them as
    references, and leaves no copy of the old pages in the file or its WAL."""
    spool = _spool.Spool(tmp_path)
    spool.conn.execute("INSERT INTO fixups (ref, uri, storage, study, db) VALUES (?, ?, ?, ?, ?)",
                       ("local-1", f"http://alice:{PW}@mlflow:5000", f"postgresql://bob:{PW}@db/optuna", "s",
                        f"postgresql://bob:{PW}@db/perf"))  # fmt: skip
    spool.append(f"http://alice:{PW}@mlflow:5000", "end", {"run": "local-1"}, "me")
    spool.close()
    assert PW.encode() in _spool_bytes(tmp_path)
    spool = _spool.Spool(tmp_path)
    assert spool.conn.execute("SELECT uri, storage, db FROM fixups").fetchall() == [
        ("http://alice:***@mlflow:5000", "postgresql://bob:***@db/optuna", "postgresql://bob:***@db/perf")]
    assert spool.count("http://alice:***@mlflow:5000") == 1
    spool.close()
    with sqlite3.connect(tmp_path / "tracking-spool.db") as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _no_secret(_spool_bytes(tmp_path))
