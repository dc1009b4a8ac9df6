"""Framework backends.

One small abstract base, :class:`Backend`, and one implementation per framework in a private
module. Nothing here imports a framework: a backend imports its framework when its methods run,
inside a trial worker process.
"""

from __future__ import annotations

import importlib.util

from perftune.backends._base import (
    Backend,
    Channel,
    NullChannel,
    TrialOutcome,
    TrialRequest,
    classify_exception,
    classify_exit,
)
from perftune.backends._mindspore import MindSporeBackend, make_ms_optimizer
from perftune.backends._tensorflow import TensorFlowBackend, make_keras_optimizer
from perftune.backends._torch import TorchBackend, make_optimizer
from perftune.errors import UsageError

__all__ = [
    "BACKENDS",
    "Backend",
    "Channel",
    "MindSporeBackend",
    "NullChannel",
    "TensorFlowBackend",
    "TorchBackend",
    "TrialOutcome",
    "TrialRequest",
    "classify_exception",
    "classify_exit",
    "get_backend",
    "installed",
    "make_keras_optimizer",
    "make_ms_optimizer",
    "make_optimizer",
]

#: Registered backends by ``--framework`` name.
BACKENDS: dict[str, type[Backend]] = {
    b.name: b for b in (TorchBackend, TensorFlowBackend, MindSporeBackend)
}


def get_backend(name: str) -> type[Backend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise UsageError(
            f"--framework {name}: unknown framework (choose from: {', '.join(BACKENDS)})"
        ) from None


def installed(name: str) -> bool:
    """Whether the backend's framework is importable in *this* interpreter (no import done)."""
    return importlib.util.find_spec(get_backend(name).module) is not None
