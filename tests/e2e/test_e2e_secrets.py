"""Passwords in all three URLs, for real: a ``--workers 2`` sweep with the Optuna storage and
perftune's store on PostgreSQL through URLs with a password (trust auth accepts any, so the
processes really connect with it) and an MLflow tracking server, with credentials, where none
listens (so every tracking event waits in the spool). The password must show up nowhere: not on
the CLI's stdout or stderr, in no file of the workspace (logs, the spool), on no command line
``ps`` shows while the sweep runs, in no spooled MLflow param or tag, in no row of perftune's
store or of Optuna's tables (study and trial attributes included)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import PG_SERVER, ROOT, pg_schemas

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

NOOP = f"{ROOT / 'benchmarks' / 'noop_workload.py'}:make_workload"


class CommandLines:
    """Every process's command line as any user sees it (``ps -eww -o args``), every 0.2 s."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
            self.seen += out.splitlines()
            self._stop.wait(0.2)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rows_as_text(schema: str) -> dict[str, list[str]]:
    """Every row of every table of ``schema``, as PostgreSQL prints it."""
    import sqlalchemy as sa

    engine = sa.create_engine(PG_SERVER)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names(schema=schema)
            return {t: list(conn.execute(sa.text(f'SELECT r::text FROM "{schema}"."{t}" r')).scalars())
                    for t in tables}  # fmt: skip
    finally:
        engine.dispose()


def test_no_password_anywhere(tmp_path):
    import optuna

    secret = f"S3cret{uuid.uuid4().hex[:8]}"  # this run's own: no other process has it
    password = f"{secret}%40x"  # the password is SECRET@x, percent-encoded in the URLs
    home = tmp_path / "ws"
    with pg_schemas("perftune_sec") as urls:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERFTUNE_")}
        env.update(PERFTUNE_NO_PROGRESS="1", PERFTUNE_HOME=str(home),
                   PERFTUNE_STORAGE=urls["optuna"].replace("postgres@", f"postgres:{password}@"),
                   PERFTUNE_DB=urls["store"].replace("postgres@", f"postgres:{password}@"),
                   PERFTUNE_TRACKING_URI=f"http://alice:{password}@127.0.0.1:{_free_port()}")  # fmt: skip
        assert secret in env["PERFTUNE_STORAGE"] and secret in env["PERFTUNE_DB"]
        t0 = time.monotonic()
        with CommandLines() as ps:
            proc = subprocess.run(
                [sys.executable, "-m", "perftune.cli", "sweep", "--workload", NOOP, "--objective", "throughput",
                 "--trials", "4", "--workers", "2", "--seed", "0", "--confirm-top", "1",
                 "--confirm-repeats", "1", "--json"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        print(f"\nsweep with 2 workers: {time.monotonic() - t0:.1f} s")
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout)
        schemas = {k: url.rsplit("%3D", 1)[1] for k, url in urls.items()}
        store_rows, optuna_rows = _rows_as_text(schemas["store"]), _rows_as_text(schemas["optuna"])
        study = optuna.load_study(study_name=report["study_name"], storage=urls["optuna"])
        trials = study.get_trials()
        system = study._storage.get_study_system_attrs(study._study_id)  # no public accessor
        attrs = [study.user_attrs, system] + [a for t in trials for a in (t.user_attrs, t.system_attrs)]

    # The CLI's output: the server that is down was reported, its URL redacted.
    assert "alice:***@127.0.0.1" in proc.stderr
    assert secret not in proc.stdout and secret not in proc.stderr

    # Command lines: the helper worker ran (so ps saw it), none ever showed the password.
    assert any("perftune.cli worker" in line for line in ps.seen), "ps never saw the helper worker"
    assert [line for line in ps.seen if secret in line] == []

    # Every file of the workspace: trial and worker logs, the spool (and its WAL), the rest.
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.parent.name == "logs" for p in files) and (home / "tracking-spool.db").exists()
    assert [str(p) for p in files if secret.encode() in p.read_bytes()] == []

    # The MLflow params and tags wait in the spool (the server is down): none holds it.
    with sqlite3.connect(home / "tracking-spool.db") as conn:
        ops = conn.execute("SELECT kind, uri, body FROM ops").fetchall()
        fixups = conn.execute("SELECT uri, storage, db FROM fixups").fetchall()
    bodies = [json.loads(body) for kind, _, body in ops if kind in ("start", "trial")]
    assert {kind for kind, _, _ in ops} >= {"start", "trial"} and all("params" in b and "tags" in b for b in bodies)
    assert sum(bool(b["params"]) for b in bodies) >= 4
    assert secret not in json.dumps([list(op) for op in ops])
    assert fixups and all("***" in url for row in fixups for url in row) and secret not in str(fixups)

    # perftune's store and Optuna's tables, every row as text; Optuna's attributes, as Optuna reads them.
    assert store_rows["perftune_sweeps"] and optuna_rows["trials"] and optuna_rows["trial_user_attributes"]
    assert [(t, r) for t, rows in {**store_rows, **optuna_rows}.items() for r in rows if secret in r] == []
    assert len(trials) >= 4 and "perftune_sweep" in attrs[0] and secret not in json.dumps(attrs, default=str)
