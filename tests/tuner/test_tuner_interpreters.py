"""Each framework's trials run under their own interpreter: how it is found, what it sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import perftune._worker
import perftune.search_spaces
import perftune.storage
from perftune.errors import UsageError
from perftune.executor import ProcessExecutor, _perftune_path, python_for


def test_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("PERFTUNE_PYTHON_MINDSPORE", "/opt/ms/bin/python")
    assert python_for("mindspore") == "/opt/ms/bin/python"


def test_this_interpreter_when_the_framework_is_importable_here(monkeypatch):
    monkeypatch.delenv("PERFTUNE_PYTHON_TORCH", raising=False)
    assert python_for("torch") == sys.executable


def test_a_framework_virtualenv_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("PERFTUNE_PYTHON_MINDSPORE", raising=False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    fake = tmp_path / ".venv-mindspore" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("")
    monkeypatch.chdir(tmp_path)
    assert python_for("mindspore") == str(fake)


def test_unknown_framework_is_a_usage_error():
    with pytest.raises(UsageError, match="--framework jax: unknown framework"):
        python_for("jax")


def test_trial_interpreters_see_only_the_perftune_package():
    # Not this environment's site-packages: its NumPy 2 would shadow MindSpore's NumPy 1.x.
    folder = _perftune_path()
    assert os.listdir(folder) == ["perftune"]
    # An interpreter without perftune installed (no site-packages at all here: -S) finds the
    # package and its store and search spaces (storage/ and search_spaces/ in a checkout).
    modules = (perftune._worker, perftune.storage, perftune.search_spaces)
    code = ("import importlib.util, json, sys; "
            "print(json.dumps([importlib.util.find_spec(m).origin for m in sys.argv[1:]]))")
    proc = subprocess.run([sys.executable, "-S", "-c", code, *(m.__name__ for m in modules)],
                          capture_output=True, text=True, env={"PYTHONPATH": folder}, cwd=folder,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    found = [os.path.realpath(p) for p in json.loads(proc.stdout)]
    assert found == [os.path.realpath(m.__file__) for m in modules]


def test_a_framework_missing_from_its_interpreter_is_one_clear_error(tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    with pytest.raises(UsageError) as info, \
            ProcessExecutor("tensorflow", python=str(venv / "bin" / "python")) as ex:
        ex.devices()
    message = str(info.value)
    assert message.startswith("--framework tensorflow: tensorflow is not usable with ")
    assert "ModuleNotFoundError" in message and "PERFTUNE_PYTHON_TENSORFLOW" in message
    assert "\n" not in message
