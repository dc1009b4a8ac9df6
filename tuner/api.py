"""The Python API for training scripts that want their tuned config."""

from __future__ import annotations

from typing import Any

from perftune.settings import Workspace


def best_config(workload: str, *, framework: str = "torch", device: str = "cpu",
                objective: str = "time-to-target", home: str | None = None,
                db: str | None = None) -> Any:  # fmt: skip
    """The stored best config record for (workload, framework, device, objective), or ``None``.

    ``record.config`` is the dict of tuned knobs (``batch_size``, ``learning_rate``,
    ``optimizer``...); ``record.value``, ``record.speedup`` and ``record.metrics`` say how good
    it is. The database is the workspace's (``home``, ``PERFTUNE_HOME``, ``./.perftune``) unless
    ``db`` (or ``PERFTUNE_DB``) names another.
    """
    from perftune.service import best_configs, has_database

    ws = Workspace.resolve(home, db=db)
    if not has_database(ws):
        return None
    found = best_configs(ws, workload, framework=framework, device=device, objective=objective)
    return found[0] if found else None
