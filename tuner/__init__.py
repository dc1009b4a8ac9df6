"""perftune: automated performance tuning for deep-learning workloads.

``import perftune`` imports no deep-learning framework (nor Optuna or MLflow): backends import
their framework inside the trial process, when a trial's helpers are first used.

Public API::

    import perftune

    @perftune.trainable(name="my-model", target=0.9)     # your training function, tunable
    def train(trial: perftune.Trial) -> None: ...

    perftune.Trial.connect()                               # in a script perftune launches
    perftune.Trial.from_best("my-model").run(train)        # the tuned config, outside a sweep
    perftune.best_config("my-model")                       # the stored record
    perftune.serving(model, config)                        # a tuned inference config, on your model
    perftune.Workload(...)                                 # a model/data description for the built-in loop

Installed, this is the only top-level name perftune adds: its store and search-space format
are ``perftune.storage`` and ``perftune.search_spaces`` (the ``storage/`` and ``search_spaces/``
folders of the source tree; this package is its ``tuner/`` folder).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["StopTrial", "Trainable", "Trial", "Workload", "__version__", "best_config",
           "current_trial", "serving", "trainable"]

_LAZY = {
    "Workload": "perftune.workload",
    "best_config": "perftune.api",
    "serving": "perftune.api",
    "Trial": "perftune.trial.api",
    "Trainable": "perftune.trial.api",
    "trainable": "perftune.trial.api",
    "current_trial": "perftune.trial.api",
    "StopTrial": "perftune.trial._meter",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
