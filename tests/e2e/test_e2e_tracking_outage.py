"""The MLflow tracking server goes down during a sweep, for real: a ``python -m mlflow server``
process that the test kills mid-sweep and restarts on the same port and backend store. Trials go
on, no tracker call blocks the sweep for more than about a second, the tracking events wait in
the workspace's spool, ``perftune sync`` refuses while the server is down (spool untouched) and
delivers when it is back: every run once, nested, none left RUNNING, and the placeholder run id
of a sweep that started while the server was down replaced everywhere."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

NOOP = f"{ROOT / 'benchmarks' / 'noop_workload.py'}:make_workload"


class MlflowServer:
    """``mlflow server`` on a fixed port and SQLite backend, in its own process group."""

    def __init__(self, root: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.root, self.uri = root, f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
               "--default-artifact-root", str(self.root / "artifacts"), "--host", "127.0.0.1",
               "--port", str(self.port), "--workers", "1"]  # fmt: skip
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True,
                                     stderr=open(self.root / "server.log", "ab"))  # fmt: skip
        if wait:
            self.wait_up()

    def wait_up(self) -> None:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(self.uri + "/health", timeout=1).read()
                return
            except OSError:
                assert self.proc.poll() is None, (self.root / "server.log").read_text()[-2000:]
                assert time.time() < deadline, "mlflow server did not come up"
                time.sleep(0.2)

    def search_runs(self) -> int:
        """Trial runs in the server's backend store (read directly, not through the server)."""
        try:
            with sqlite3.connect(f"file:{self.root}/mlflow.db?mode=ro", uri=True, timeout=1) as c:
                return c.execute("SELECT count(*) FROM tags WHERE key = 'phase' AND value = 'search'").fetchone()[0]
        except sqlite3.Error:  # not created yet, or busy
            return 0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(tmp_path)
    yield srv
    srv.kill()


def _spooled(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "tracking-spool.db") as c:
        return c.execute("SELECT id, kind, body, state FROM ops ORDER BY id").fetchall()


def _sync(capsys, home: Path, uri: str) -> tuple[int, str, str]:
    """``perftune sync --json`` through the CLI's entry point, in this process (mlflow is
    imported already: a subprocess would spend seconds importing it again)."""
    from perftune.cli import main

    capsys.readouterr()  # what this process printed before is not the command's output
    code = main(["sync", "--home", str(home), "--tracking-uri", uri, "--json"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _fake_sweep(home: Path, uri: str, tmp_path: Path):
    """A sweep in this process over the fake executor (no trial process): fast."""
    sys.path.insert(0, str(ROOT / "tests" / "tuner"))
    from test_tuner_sweep_fake import FakeExecutor

    from perftune.settings import Workspace
    from perftune.sweep import SweepConfig, run_sweep

    space = tmp_path / "space.yaml"
    space.write_text("extends: none\nversion: 1\nparams:\n"
                     "  batch_size: {type: categorical, choices: [16, 32], default: 32}\n")  # fmt: skip
    ws = Workspace.resolve(home, tracking_uri=uri)
    cfg = SweepConfig(workload="mlp-digits", space=str(space), sampler="random", trials=3, confirm_top=1,
                      confirm_repeats=1)  # fmt: skip
    return ws, run_sweep(cfg, ws, executor=FakeExecutor())


def test_server_killed_mid_sweep_then_restarted(server, tmp_path, monkeypatch, capsys):
    import optuna
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    import perftune.tracking
    from perftune.storage import open_store

    for key in [k for k in os.environ if k.startswith("PERFTUNE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(perftune.tracking, "FLUSH_S", 0.5)  # for the sweep in this process
    home, home_b = tmp_path / "ws", tmp_path / "ws-b"
    # 1. A real sweep (CLI, trial processes) started with the server: its first events wait in
    #    the spool until the server is up. Once it holds 3 trial runs, the server is SIGKILLed and
    #    stays down to the sweep's end.
    server.start(wait=False)
    sweep = subprocess.Popen(
        [sys.executable, "-m", "perftune.cli", "sweep", "--workload", NOOP, "--trials", "20", "--seed", "0",
         "--confirm-top", "1", "--confirm-repeats", "1", "--home", str(home), "--tracking-uri", server.uri,
         "--json"], cwd=ROOT, env={**os.environ, "PERFTUNE_NO_PROGRESS": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    server.wait_up()
    study_a, optuna_a = "noop-torch-cpu-time-to-target", f"sqlite:///{home}/optuna.db"
    deadline = time.time() + 180
    while server.search_runs() < 3:
        assert sweep.poll() is None, "the sweep ended before the server had 3 trial runs: " + sweep.stderr.read()[-3000:]
        assert time.time() < deadline, "no trial run reached the server"
        time.sleep(0.1)
    server.kill()
    killed_at = time.time()

    # 2. Meanwhile, a sweep that starts while the server is down: a placeholder parent run id.
    ws_b, report_b = _fake_sweep(home_b, server.uri, tmp_path)
    placeholder = report_b.mlflow_run_id
    assert placeholder.startswith("local-") and report_b.tracking["max_call_s"] < 1.5
    assert report_b.tracking["pending"] > 0

    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-3000:]
    report = json.loads(out)
    tracking = report["tracking"]
    assert tracking["max_call_s"] < 1.5, tracking  # the sweep thread never waited on the server
    assert tracking["pending"] > 0 and f"{tracking['pending']} tracking events spooled in" in err
    trials = optuna.load_study(study_name=study_a, storage=optuna_a).trials
    assert sum(t.datetime_complete.timestamp() > killed_at for t in trials) >= 1  # trials went on

    # 3. perftune sync while the server is down: exit 1, one line, the spool as it was.
    before = {h: _spooled(h) for h in (home, home_b)}
    for h in (home, home_b):
        code, _, msg = _sync(capsys, h, server.uri)
        assert code == 1 and "cannot deliver to the MLflow tracking server" in msg, msg
        assert len(msg.strip().splitlines()) == 1 and _spooled(h) == before[h]

    # 4. The server comes back on the same port and backend: perftune sync delivers everything.
    server.start()
    for h in (home, home_b):
        code, stdout, msg = _sync(capsys, h, server.uri)
        assert code == 0, msg
        result = json.loads(stdout)
        assert result["delivered"] == len(before[h]) and result["pending"] == 0 and not _spooled(h)

    client = MlflowClient(server.uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              run_view_type=ViewType.ALL, max_results=1000)  # fmt: skip
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("perftune_role") == "sweep"]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)  # each once
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        names = [r.info.run_name for r in children]
        assert children and len(names) == len(set(names))  # nothing twice
        assert all("batch_size" in r.data.params and "objective" in r.data.metrics for r in children
                   if r.data.tags.get("trial_state") == "COMPLETE")  # fmt: skip
    a = next(p for p in parents if p.data.tags["study"] == study_a)
    b = next(p for p in parents if p.data.tags["study"] == report_b.study_name)
    searched = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == a.info.run_id
                and r.data.tags.get("phase") == "search"]  # fmt: skip
    # The factored search's throughput stage has a study of its own (numbers from 0 again).
    logged = [int(r.data.tags["optuna_trial_number"]) for r in searched if r.data.tags.get("stage") != "throughput"]
    assert sorted(logged) == sorted(t.number for t in trials if "wall_s" in t.user_attrs)  # every trial, once
    assert len(searched) >= 20
    artifacts = {f.path for f in client.list_artifacts(a.info.run_id)}
    assert {"best_config.yaml", "search_space.json", "plots"} <= artifacts
    with open_store(f"sqlite:///{home}/perftune.db") as store:
        assert store.get_sweep(report["sweep_id"])["mlflow_run_id"] == a.info.run_id
    # The placeholder is gone: the study and perftune's store name the real run.
    assert b.data.tags["perftune_ref"] == placeholder
    assert optuna.load_study(study_name=report_b.study_name,
                             storage=ws_b.storage).user_attrs["mlflow_run_id"] == b.info.run_id  # fmt: skip
    with open_store(ws_b.db) as store:
        assert store.get_sweep(report_b.sweep_id)["mlflow_run_id"] == b.info.run_id
        assert store.get_best_by_id(report_b.best_config_id).mlflow_run_id == b.info.run_id
