"""Shared test helpers: run the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict | None = None, timeout: float = 600,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """``perftune ARGS`` in a subprocess, as a user runs it."""
    full_env = {**os.environ, "PERFTUNE_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "tuner.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd or ROOT)  # fmt: skip


def run_json(*args: str, **kw):
    proc = run_cli(*args, "--json", **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture
def cli():
    return run_cli
