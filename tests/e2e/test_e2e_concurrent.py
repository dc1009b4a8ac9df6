"""Two ``perftune sweep`` started at the same moment in a fresh workspace: both create or migrate
the same SQLite databases (Optuna's tables, MLflow's schema, perftune's Alembic migrations).
Without the workspace's setup lock one of them died of MLflow's schema setup ("duplicate column
name: step", "_alembic_tmp_experiments already exists") in every try."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

NOOP = str(ROOT / "benchmarks" / "noop_workload.py") + ":make_workload"


def _start(home: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "perftune.cli", "sweep", "--home", str(home), "--workload", NOOP,
           "--trials", "2", "--confirm-top", "1", "--confirm-repeats", "1", "--json", *extra]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PERFTUNE_NO_PROGRESS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_two_sweeps_started_at_once_in_a_fresh_workspace(tmp_path):
    # Two tries (the race lost in every try): two studies, then both sweeps on the same (default) one.
    for attempt, studies in enumerate([("a", "b"), (None, None)]):
        home = tmp_path / f"ws{attempt}"
        procs = [_start(home, *(["--study", s] if s else [])) for s in studies]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        for p, stderr in zip(procs, errors, strict=True):
            assert p.returncode == 0, f"attempt {attempt}: exit {p.returncode}\n{stderr[-3000:]}"
