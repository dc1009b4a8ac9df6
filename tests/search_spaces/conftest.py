"""Fixtures for the search_spaces tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from perftune import search_spaces

RESOURCES = {"cores": 2, "device_count": 1, "memory_gib": 23}


@pytest.fixture
def resources() -> dict[str, int]:
    return dict(RESOURCES)


@pytest.fixture
def cpu_space(resources) -> search_spaces.SearchSpace:
    return search_spaces.load_space("torch", "cpu", resources=resources)


@pytest.fixture
def write_yaml(tmp_path: Path, monkeypatch) -> Callable[..., Path]:
    """write_yaml(text, name="my.yaml") -> relative path of a dedented YAML file.

    The test runs inside tmp_path, so error messages read "search space my.yaml: ...".
    """
    monkeypatch.chdir(tmp_path)

    def write(text: str, name: str = "my.yaml") -> Path:
        path = Path(name)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load_file(write_yaml, resources) -> Callable[..., search_spaces.SearchSpace]:
    """load_file(text, **kw): load YAML text as an override of torch/cpu (my.yaml)."""

    def load(text: str, *, name: str = "my.yaml", **kwargs) -> search_spaces.SearchSpace:
        path = write_yaml(text, name)
        kwargs.setdefault("resources", resources)
        return search_spaces.load_space("torch", "cpu", override=path, **kwargs)

    return load
