"""perftune installs one top-level name, ``perftune`` (issue 13): its ``tuner/`` folder, with
``storage/`` and ``search_spaces/`` as the sub-packages ``perftune.storage`` and
``perftune.search_spaces``. A user's own ``storage``, ``tuner`` or ``search_spaces`` module
therefore neither shadows perftune's nor is shadowed by it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from perftune.executor import _perftune_path

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[2]

USER_TRAIN = """
import importlib, json, sys

# This project's own storage, tuner and search_spaces, found first (sys.path[0] is its folder).
storage, tuner, search_spaces = map(importlib.import_module, ("storage", "tuner", "search_spaces"))
import perftune
import perftune.search_spaces
from perftune.settings import Workspace
from perftune.storage import open_store

home = sys.argv[1]
with open_store(Workspace.resolve(home).db, create=True) as store:  # perftune's store
    store.upsert_device("fp-cpu", framework="torch", kind="cpu", name="cpu", count=1,
                        memory_bytes=None, info={})
    store.upsert_workload("user-model", framework="torch", info={})
    store.save_best(workload="user-model", framework="torch", device_fingerprint="fp-cpu",
                    objective="time-to-target", direction="minimize", unit="s",
                    config={"batch_size": 48}, value=1.0, spread=None, metrics={},
                    baseline_config=None, baseline_value=None, speedup=None,
                    mlflow_run_id=None, sweep_id=None)
trial = perftune.Trial.from_best("user-model", home=home)
space = perftune.search_spaces.load_space("torch", "cpu", resources={"cores": 2, "device_count": 1, "memory_gib": 4})
print(json.dumps({"own": [storage.save(), tuner.NAME, search_spaces.NAME],
                  "perftune": [trial.source, trial.config["batch_size"], "batch_size" in space.params]}))
"""


def test_every_package_folder_is_installed():
    """pyproject.toml's explicit package list covers every package folder of the three trees,
    each under its perftune name (a forgotten one would be missing from the wheel)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"perftune": "tuner", "perftune.storage": "storage",
                                   "perftune.search_spaces": "search_spaces"}  # fmt: skip
    found = set()
    for name, folder in tool["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *parts)))
    assert sorted(tool["packages"]) == sorted(found)


def test_a_user_project_with_the_same_module_names(tmp_path):
    """A training script in a project that has its own ``storage/`` package and ``tuner`` and
    ``search_spaces`` modules uses those and perftune's store, search spaces and Trial."""
    project = tmp_path / "project"
    (project / "storage").mkdir(parents=True)
    (project / "storage" / "__init__.py").write_text("def save():\n    return 'user storage'\n")
    (project / "tuner.py").write_text("NAME = 'user tuner'\n")
    (project / "search_spaces.py").write_text("NAME = 'user spaces'\n")
    (project / "train.py").write_text(textwrap.dedent(USER_TRAIN))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFTUNE_")}
    env["PYTHONPATH"] = _perftune_path()  # perftune as a trial interpreter sees it
    proc = subprocess.run([sys.executable, "train.py", str(tmp_path / "home")], cwd=project,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.splitlines()[-1]) == {
        "own": ["user storage", "user tuner", "user spaces"], "perftune": ["stored", 48, True]}
