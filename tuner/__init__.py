"""perftune: automated performance tuning for deep-learning workloads.

``import tuner`` imports no deep-learning framework (nor Optuna or MLflow): backends import
their framework inside the trial process, when a trial's helpers are first used.

Public API::

    import tuner

    @tuner.trainable(name="my-model", target=0.9)     # your training function, tunable
    def train(trial: tuner.Trial) -> None: ...

    tuner.Trial.connect()                               # in a script perftune launches
    tuner.Trial.from_best("my-model").run(train)        # the tuned config, outside a sweep
    tuner.best_config("my-model")                       # the stored record
    tuner.Workload(...)                                 # a model/data description for the built-in loop
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["StopTrial", "Trainable", "Trial", "Workload", "__version__", "best_config",
           "current_trial", "trainable"]

_LAZY = {
    "Workload": "tuner.workload",
    "best_config": "tuner.api",
    "Trial": "tuner.trial.api",
    "Trainable": "tuner.trial.api",
    "trainable": "tuner.trial.api",
    "current_trial": "tuner.trial.api",
    "StopTrial": "tuner.trial._meter",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")
