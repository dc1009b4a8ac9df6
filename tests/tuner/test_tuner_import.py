"""Importing perftune's sweep side imports no deep-learning framework: frameworks are imported
only inside trial workers. Checked in fresh interpreters, since the test process may have
imported torch already."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

FRAMEWORKS = ("torch", "tensorflow", "mindspore", "jax", "keras")


def imported_after(code: str) -> list[str]:
    """Top-level names of the modules a fresh interpreter has loaded after running ``code``."""
    script = textwrap.dedent(code) + textwrap.dedent("""
        import json, sys
        print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_sweep_side_imports_no_framework():
    loaded = imported_after("""
        import perftune, perftune.cli, perftune.sweep, perftune.service, perftune.executor, perftune.backends
        import perftune.tracking, perftune.api, perftune.settings, perftune.devices, perftune.objectives
        from perftune import search_spaces, storage
        from perftune import Workload, best_config
    """)
    # perftune adds one top-level name: its store and search spaces are perftune's sub-packages.
    # (From the repository root a stray import of top-level storage would still work.)
    assert "perftune" in loaded
    assert [m for m in ("tuner", "storage", "search_spaces") if m in loaded] == []
    assert [m for m in FRAMEWORKS if m in loaded] == []
    assert [m for m in ("fastapi", "uvicorn", "starlette") if m in loaded] == []  # perftune serve only


def test_plain_import_is_light():
    # The package docstring: ``import perftune`` imports no framework, nor Optuna or MLflow.
    loaded = imported_after("""
        import perftune
        from perftune import Workload, best_config
    """)
    heavy = (*FRAMEWORKS, "optuna", "mlflow", "sqlalchemy", "numpy", "typer", "rich", "fastapi")
    assert [m for m in heavy if m in loaded] == []


def test_builtin_workload_factories_import_no_framework():
    loaded = imported_after("""
        from perftune.workload import resolve
        w = resolve("mlp-digits"), resolve("cnn-digits")
    """)
    assert [m for m in FRAMEWORKS if m in loaded] == []


@pytest.mark.parametrize("module", ["perftune._worker", "perftune.workload", "perftune.backends"])
def test_worker_side_is_stdlib_only(module):
    # The worker may run under a framework's own interpreter (PERFTUNE_PYTHON_<FRAMEWORK>),
    # which need not have perftune's dependencies.
    loaded = imported_after(f"import {module}")
    third_party = [m for m in loaded if m not in sys.stdlib_module_names
                   and m not in ("perftune", "__main__") and not m.startswith("_")]  # fmt: skip
    assert third_party == []
