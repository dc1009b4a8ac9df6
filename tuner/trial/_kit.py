"""What a framework gives a trial in one process (stdlib only): the extension point between
:class:`~perftune.trial.Trial` and a backend.

A :class:`Kit` is built inside the trial process (or a training script's), after the device,
threads, seed and process group are set up for the config. It gives the clock its
synchronisation and collectives, and the user's code its helpers (``prepare``, ``optimizer``,
``autocast``, ...). Implementations live with their backend (``perftune.backends._torch.TorchKit``
and the TensorFlow and MindSpore kits) and import their framework.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

__all__ = ["Kit"]


class Kit:
    """One process's framework services for a trial.

    Attributes:
        framework: the backend's name (``torch``, ``tensorflow``, ``mindspore``).
        config: the trial's config (the knobs).
        rank, world, local_rank: this process among the trial's processes.
        device: the framework's device object (``torch.device``) or name.
        energy: rank 0's energy meter, or None when nothing is readable.
        applied: the knobs the kit applied before the training function ran (threads, ...);
            the helpers below add the knobs they apply when called.
    """

    framework: str = ""

    def __init__(self, config: dict[str, Any], *, rank: int = 0, world: int = 1,
                 local_rank: int = 0) -> None:  # fmt: skip
        self.t_created = time.perf_counter()  # setup time counts from here
        self.config = config
        self.rank, self.world, self.local_rank = rank, world, local_rank
        self.device: Any = None
        self.energy: Any = None
        self.applied: set[str] = set()

    # -- what the clock needs (identities for one process)
    def sync(self) -> None:
        """Block until queued device work is done."""

    def broadcast_int(self, value: int) -> int:
        """Rank 0's ``value`` on every rank."""
        return int(value)

    def loss_value(self, loss: Any) -> float:
        """``loss`` as a float, the same on every rank (NaN everywhere if not finite anywhere)."""
        return float(loss)

    @property
    def check_every(self) -> int:
        """Steps between the clock's checks: every step with one process; fewer collectives
        with several."""
        return 1 if self.world == 1 else 8

    def memory(self, gather: bool = True) -> dict[str, float]:
        """Peak memory metrics (MiB); with ``gather``, summed over ranks (a collective with
        several)."""
        return {}

    def extra_metrics(self) -> dict[str, Any]:
        """Metrics the backend adds to every trial (devices used, shard fraction...)."""
        return {}

    def empty_cache(self) -> None:
        """Release cached device memory (between batch-size probe attempts)."""

    def close(self) -> None:
        """Tear down what the kit set up (process group, energy reader)."""

    # -- the user's helpers
    def _unsupported(self, what: str) -> Exception:
        return NotImplementedError(f"trial.{what}() is not available for {self.framework or 'this framework'}")

    def prepare(self, model: Any) -> Any:
        """The model placed and wrapped as the config says."""
        raise self._unsupported("prepare")

    def optimizer(self, params: Any = None) -> Any:
        """The optimizer the config names, with its hyper-parameters."""
        raise self._unsupported("optimizer")

    def autocast(self) -> contextlib.AbstractContextManager:
        """The config's precision for the forward pass."""
        return contextlib.nullcontext()

    def scope(self) -> contextlib.AbstractContextManager:
        """Where models and optimizers must be built (a ``tf.distribute`` strategy's scope)."""
        return contextlib.nullcontext()

    def callback(self, trial: Any, **options: Any) -> Any:
        """The framework's training callback that drives ``trial`` from the framework's own
        ``fit``/``train`` loop (Keras, MindSpore)."""
        raise self._unsupported("callback")

    def sampler(self, dataset: Any, *, shuffle: bool = True, seed: int = 0) -> Any:
        """A sampler giving this rank its share of ``dataset``."""
        raise self._unsupported("sampler")

    @property
    def replicas(self) -> int:
        """Model replicas in this process (several under ``dp`` or a mirrored strategy)."""
        return 1
