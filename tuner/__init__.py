"""perftune: automated performance tuning for deep-learning workloads.

``import tuner`` imports no deep-learning framework (nor Optuna or MLflow): backends import
their framework inside the trial worker process.

Public API::

    from tuner import Workload, best_config
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Workload", "__version__", "best_config"]


def __getattr__(name: str) -> Any:
    if name == "Workload":
        from tuner.workload import Workload

        return Workload
    if name == "best_config":
        from tuner.api import best_config

        return best_config
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
