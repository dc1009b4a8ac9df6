"""Shared test helpers: run the real CLI in a subprocess."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _this_checkout_first() -> None:
    """Make ``import perftune`` (here and in the CLI subprocesses, through PYTHONPATH) find this
    checkout, whatever perftune is installed (say, an editable install of another worktree).
    The checkout is not importable as it stands: ``perftune`` is its ``tuner/`` folder, with
    ``storage/`` and ``search_spaces/`` as sub-packages. So a temporary folder holds a
    ``perftune`` package made of links to those parts (as ``perftune.executor`` does for the
    trial interpreters)."""
    folder = tempfile.mkdtemp(prefix="perftune-tests-")
    package = Path(folder, "perftune")
    package.mkdir()
    for part in (*(ROOT / "tuner").iterdir(), ROOT / "storage", ROOT / "search_spaces"):
        (package / part.name).symlink_to(part)
    atexit.register(shutil.rmtree, folder, True)
    sys.path.insert(0, folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH")) if p)


_this_checkout_first()


def _consoles_read_the_width_at_each_print() -> None:
    """Rich fixes a console's width for good when ``COLUMNS`` is set as the console is made, and
    perftune's consoles are made when ``perftune.cli`` is first imported. Tests set ``COLUMNS``
    each to its own width, so the CLI is imported here, with no ``COLUMNS``: its consoles then
    read the width at every print, whatever order the tests run in (serially, or split over
    pytest-xdist workers, where a test that set ``COLUMNS=80`` could otherwise import it first)."""
    os.environ.pop("COLUMNS", None)
    import perftune.cli  # noqa: F401


_consoles_read_the_width_at_each_print()
PG_SERVER = os.environ.get("PERFTUNE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@contextlib.contextmanager
def pg_schemas(prefix: str):
    """Fresh schemas for Optuna, MLflow and perftune's store on the test PostgreSQL server,
    yielded as ``{"optuna"|"mlflow"|"store": URL}`` and dropped afterwards (skips the test if
    the server is unreachable)."""
    sa = pytest.importorskip("sqlalchemy")
    engine = sa.create_engine(PG_SERVER, connect_args={"connect_timeout": 3}, pool_pre_ping=True)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"PostgreSQL not reachable at {PG_SERVER}: {exc}")
    tag = uuid.uuid4().hex[:8]
    names = {k: f"{prefix}_{k}_{tag}" for k in ("optuna", "mlflow", "store")}
    with engine.begin() as conn:
        for name in names.values():
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
    try:
        yield {k: f"{PG_SERVER}?options=-csearch_path%3D{v}" for k, v in names.items()}
    finally:
        with engine.begin() as conn:
            for name in names.values():
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        engine.dispose()


def run_cli(*args: str, env: dict | None = None, timeout: float = 600,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """``perftune ARGS`` in a subprocess, as a user runs it."""
    full_env = {**os.environ, "PERFTUNE_NO_PROGRESS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "perftune.cli", *args], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=cwd or ROOT)  # fmt: skip


def has_module(python: str, module: str) -> bool:
    """Whether ``python`` can find ``module`` (found, not imported: TensorFlow's import costs
    seconds, and the tests that need it import it anyway)."""
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    try:
        return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def warnings_besides_load(report: dict) -> list[str]:
    """A sweep report's warnings except the one about a busy machine: the suite's own sweeps
    (and anything else running) load the machine, and the report says so, as it should."""
    return [w for w in report["warnings"] if not w.startswith("the machine was busy")]


def run_json(*args: str, **kw):
    proc = run_cli(*args, "--json", **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def cli_here(capfd, monkeypatch):
    """``perftune ARGS`` through the CLI's entry point in this process, as run_cli runs it (from the
    checkout, no progress bars), returned the same way (the output at the file descriptors: a trial
    worker's included): no interpreter start, and MLflow and the rest imported once. For the exit
    status and output of a command path that a real subprocess tests elsewhere."""
    from perftune.cli import main

    monkeypatch.setenv("PERFTUNE_NO_PROGRESS", "1")
    monkeypatch.chdir(ROOT)

    def run(*args: str) -> subprocess.CompletedProcess:
        capfd.readouterr()  # what this process printed before is not the command's output
        code = main(list(args))
        out = capfd.readouterr()
        return subprocess.CompletedProcess(list(args), code, out.out, out.err)

    return run


# Markers whose tests must run, not skip, under PERFTUNE_REQUIRE_FRAMEWORKS=1, and what installs
# what they need.
_REQUIRED_MARKERS = {"tensorflow": "make frameworks", "mindspore": "make frameworks",
                     "browser": "make browser"}  # fmt: skip


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``PERFTUNE_REQUIRE_FRAMEWORKS=1`` (``make test``, hence CI) a framework or browser
    test that skips because its interpreter or browser is missing fails instead: CI must run
    every backend and the UI test."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and os.environ.get("PERFTUNE_REQUIRE_FRAMEWORKS") == "1":
        fix = next((f for m, f in _REQUIRED_MARKERS.items() if item.get_closest_marker(m)), None)
        if fix is not None:
            reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
            rep.outcome = "failed"
            rep.longrepr = f"skipped ({reason}), but PERFTUNE_REQUIRE_FRAMEWORKS=1: run `{fix}`"
