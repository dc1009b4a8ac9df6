"""PostgreSQL drops every connection of a running ``perftune sweep --workers 2`` (twice): the
workers reconnect and finish the study, with every trial accounted for.

The connections are dropped with ``pg_terminate_backend``, picked by the ``application_name``
the test gives the sweep's URLs, so tests running at the same time against the same server are
not hit. ``PERFTUNE_TEST_PG_RESTART=1`` (as root, with Debian's ``pg_ctlcluster``) restarts
the server for real instead of the second drop (``PERFTUNE_TEST_PG_CLUSTER``, default
``15 main``); that drops every connection to the server, other tests' too."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from conftest import PG_SERVER, ROOT, pg_schemas

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WORKLOAD = str(ROOT / "tests" / "e2e" / "workloads" / "sleepy.py") + ":half_second"
STUDY = "sleepy-torch-cpu-time-to-target"
TRIALS = 6
CLUSTER = os.environ.get("PERFTUNE_TEST_PG_CLUSTER", "15 main").split()


def _trials(url: str):
    import optuna

    try:
        return optuna.load_study(study_name=STUDY, storage=url).get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001 - not created yet, or the connection was just dropped
        return []


def _sql(query: str, **params):
    import sqlalchemy as sa

    engine = sa.create_engine(PG_SERVER, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query), params).scalar()
    finally:
        engine.dispose()


def _drop_connections(app: str) -> int:
    """Terminate the sweep's connections; how many there were."""
    return int(_sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = 'test' AND pid <> pg_backend_pid() "
                    "AND application_name LIKE :app", app=app + "%"))  # fmt: skip


def _reconnected_since(app: str, when: float) -> bool:
    """Has the sweep opened a connection since ``when`` (epoch seconds)?"""
    return bool(_sql("SELECT count(*) FROM pg_stat_activity WHERE datname = 'test' "
                     "AND application_name LIKE :app AND backend_start > to_timestamp(:when)",
                     app=app + "%", when=when))  # fmt: skip


def _restart_server() -> None:
    from sqlalchemy.engine import make_url

    url = make_url(PG_SERVER)
    try:
        subprocess.run(["pg_ctlcluster", *CLUSTER, "restart"], check=True, timeout=60)
    finally:  # the server is up again before the test goes on, whatever happened
        deadline = time.time() + 60
        ready = ["pg_isready", "-q", "-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
        while subprocess.run(ready).returncode != 0:
            assert time.time() < deadline, "PostgreSQL did not come back"
            time.sleep(0.5)


def _restart_wanted() -> bool:
    if os.environ.get("PERFTUNE_TEST_PG_RESTART") != "1":
        return False
    if os.geteuid() != 0 or not shutil.which("pg_ctlcluster") or not shutil.which("pg_isready"):
        pytest.skip("PERFTUNE_TEST_PG_RESTART=1 needs root, pg_ctlcluster and pg_isready")
    return True


def test_workers_survive_dropped_connections(tmp_path):
    import mlflow
    from optuna.trial import TrialState

    restart = _restart_wanted()
    app = f"perftune_pgr_{uuid.uuid4().hex[:8]}"
    with pg_schemas("perftune_pgr") as urls:
        urls = {k: f"{v}&application_name={app}_{k}" for k, v in urls.items()}
        cmd = [sys.executable, "-m", "perftune.cli", "sweep", "--workload", WORKLOAD, "--workers", "2",
               "--trials", str(TRIALS), "--seed", "0", "--confirm-top", "1", "--confirm-repeats", "1",
               "--storage", urls["optuna"], "--tracking-uri", urls["mlflow"], "--db", urls["store"],
               "--home", str(tmp_path / "ws"), "--json"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PERFTUNE_NO_PROGRESS": "1"},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            dropped = []
            for fault, after in (("drop", 1), ("restart" if restart else "drop", 4)):
                deadline = time.time() + 120
                while sum(t.state == TrialState.COMPLETE for t in _trials(urls["optuna"])) < after:
                    assert proc.poll() is None, proc.communicate()[1][-3000:]
                    assert time.time() < deadline, "the sweep made no progress"
                    time.sleep(0.2)
                if fault == "restart":
                    _restart_server()
                    dropped.append(-1)
                else:
                    at = time.time()
                    dropped.append(_drop_connections(app))
                    # the sweep's workers connect again (a query in flight fails and is retried,
                    # printing "database connection lost"; an idle pooled one is pre-pinged)
                    while not _reconnected_since(app, at):
                        assert proc.poll() is None, proc.communicate()[1][-3000:]
                        assert time.time() < deadline, "the sweep never reconnected"
                        time.sleep(0.2)
            out, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, err[-3000:]
        assert dropped[0] > 0  # it really was hit (and reconnected, above)
        report = json.loads(out)
        trials = _trials(urls["optuna"])
        assert not [t for t in trials if t.state == TrialState.RUNNING]
        counted = [t for t in trials if t.state.is_finished() and t.user_attrs.get("cause")
                   not in ("invalid", "surplus") and not (t.state == TrialState.FAIL
                                                          and "cause" not in t.user_attrs)]  # fmt: skip
        assert len(counted) == TRIALS, [(t.number, t.state, t.user_attrs.get("cause")) for t in trials]
        assert report["stored"] is True and report["best"] is not None
        assert not [f for f in report["failures"] if f["cause"] == "worker"]  # the helper: exit 0
        mlflow.set_tracking_uri(urls["mlflow"])
        runs = mlflow.search_runs(experiment_names=["sleepy"], output_format="list")
        assert not [r for r in runs if r.info.status == "RUNNING"]
        searched = [r for r in runs if r.data.tags.get("phase") == "search"]
        assert len(searched) >= TRIALS
