"""The framework backend interface (stdlib only: importable without any framework).

A backend runs *inside a trial worker process*: it imports its framework lazily, discovers
devices, and trains a :class:`~perftune.workload.Workload` with one configuration, reporting
intermediate values through a :class:`Channel` so that the sweep process can prune.
"""

from __future__ import annotations

import abc
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from perftune.errors import Diverged, TrialError


@dataclass
class TrialRequest:
    """Everything a worker needs to run one trial; JSON-serialisable (sent over the protocol)."""

    workload: str
    framework: str
    device: str
    config: dict[str, Any]
    #: "converge" (time-to-target), "throughput", "probe", "peak", "free" (outside a sweep),
    #: "infer" (serve a trained model) or "fit" (train the model to serve, once)
    measure: str = "converge"
    seed: int = 0
    budget_s: float | None = None  # overrides the workload's budget when set
    timeout_s: float = 300.0
    trial_number: int | None = None
    log_path: str | None = None
    warmup_s: float = 0.5
    window_s: float = 0.5
    repeats: int = 5
    #: The discovered record of the device (``Backend.devices()``), so the trial validates its
    #: layout against what is really there without discovering again.
    device_info: dict[str, Any] | None = None
    #: A launched command's template (``perftune sweep ... -- CMD``), run instead of a workload.
    command: list[str] | None = None
    #: The workload's description (target, mode, budget...) when no spec is resolved (commands).
    description: dict[str, Any] | None = None
    #: Inference (``measure`` ``"infer"``): the trained weights to serve (``"fit"``: where to
    #: write them), and the open-loop request rate (requests/s; None: closed loop).
    model_path: str | None = None
    request_rate: float | None = None
    #: What the steps a time-to-target trial reports to the pruner count: ``"time"``
    #: (evaluations, due at equal training time) or ``"samples"`` (training samples seen: the
    #: factored search's stage 2 compares configs at equal work, whatever the machine's load).
    fidelity: str = "time"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialRequest:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass
class TrialOutcome:
    """What came of a trial, as the sweep process sees it.

    ``status`` is ``"ok"`` (metrics measured), ``"pruned"`` (stopped by the pruner), or
    ``"failed"`` with ``cause`` one of :data:`perftune.errors.FAILURE_CAUSES`.
    """

    status: str
    metrics: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list] = field(default_factory=dict)
    cause: str | None = None
    message: str | None = None
    wall_s: float | None = None
    log_path: str | None = None
    #: The knobs the training code read (``trial.config`` and the helpers that apply them).
    knobs_read: list[str] | None = None
    #: The failure is the workload's, not the config's (e.g. it measured nothing): stop the sweep.
    usage: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Channel(abc.ABC):
    """How a running trial talks to the sweep process. Used from the trial's main thread only."""

    @abc.abstractmethod
    def report(self, step: int, value: float) -> bool:
        """Report an intermediate objective value at ``step``; return True if the trial should
        stop (pruned)."""

    def fail(self, cause: str, message: str) -> None:  # noqa: B027 - optional hook
        """End the trial from any thread with a known cause (e.g. a DDP rank died).

        Implementations must be thread safe; the default does nothing."""


class NullChannel(Channel):
    """A channel that never prunes (confirmation runs, direct use)."""

    def report(self, step: int, value: float) -> bool:
        return False


class Backend(abc.ABC):
    """A deep-learning framework, as perftune drives it.

    Class attributes describe the backend *without importing the framework*, so the sweep
    process can validate a search space against them. Methods other than :meth:`capabilities`
    run in a trial worker process and may import the framework.
    """

    #: Registry name, also the ``--framework`` value.
    name: str = ""
    #: The Python module of the framework (for "is it installed" checks).
    module: str = ""
    #: Device classes this backend can drive, e.g. ``("cpu", "cuda")``.
    device_classes: tuple[str, ...] = ()
    #: ``TrialRequest.measure`` values :meth:`run_trial` understands. Beyond the two training
    #: measures, ``"probe"`` (largest batch size that fits: metrics ``max_batch_size``, and each
    #: attempt reported as ``(batch_size, 1 or 0)``) and ``"peak"`` (a measured matmul peak:
    #: metric ``peak_flops``) are optional.
    measures: tuple[str, ...] = ("converge", "throughput")

    @classmethod
    @abc.abstractmethod
    def capabilities(cls, device_class: str) -> dict[str, Any]:
        """``{"params": [...], "choices": {param: [...]}}``: what the backend honours on a device
        class. A search space naming anything else is rejected before the sweep starts."""

    @classmethod
    def inference_capabilities(cls, device_class: str) -> dict[str, Any] | None:
        """What the backend honours when it serves a model on ``device_class`` (as
        :meth:`capabilities`; stdlib only), or None if it cannot serve there. A backend that
        serves handles the ``"infer"`` and ``"fit"`` measures in :meth:`run_trial`."""
        return None

    @classmethod
    def check_config(cls, config: dict[str, Any], device: dict[str, Any]) -> None:
        """Raise :class:`~perftune.errors.InvalidConfig` if this backend cannot run ``config`` on
        the discovered ``device`` record. Called in the sweep process before a trial is
        dispatched (stdlib only: no framework import); the default accepts everything and
        leaves the check to :meth:`run_trial`."""
        return None

    @abc.abstractmethod
    def preload(self) -> dict[str, str]:
        """Import the framework without initialising any device (the worker forks trials after
        this); return version strings."""

    @abc.abstractmethod
    def devices(self) -> list[dict[str, Any]]:
        """Devices the framework finds: dicts with at least ``kind``, ``name``, ``count``,
        ``memory_bytes`` and ``versions``."""

    @abc.abstractmethod
    def run_trial(self, workload: Any, request: TrialRequest, channel: Channel) -> dict[str, Any]:
        """Train ``workload`` (a :class:`~perftune.workload.Workload`, trained by the backend's
        built-in loop, or a :class:`~perftune.trial.Trainable`, the user's function) with
        ``request.config``, on as many processes as the config asks for, each with a
        :class:`~perftune.trial.Trial` over the backend's kit; return ``{"metrics": {...},
        "curves": {...}, "pruned": bool, "knobs_read": [...]}``. Raise
        :class:`~perftune.errors.TrialError` subclasses (or let framework errors through) to fail;
        :func:`classify_exception` names the cause."""

    @classmethod
    def processes(cls, config: dict[str, Any]) -> int:
        """How many processes ``config`` trains on (stdlib only): 1 unless a multi-process
        strategy's ``world_size``."""
        multi = cls.multi_process_strategies
        return int(config.get("world_size", 1)) if config.get("parallel_strategy") in multi else 1

    #: ``parallel_strategy`` values that start one process per ``world_size``.
    multi_process_strategies: tuple[str, ...] = ()

    @staticmethod
    def builtin_loop(workload: Any) -> Any:
        """perftune's own training function for a :class:`~perftune.workload.Workload` (written on
        the public :class:`~perftune.trial.Trial` API, like a user's)."""
        raise NotImplementedError

    def standalone_kit(self, request: TrialRequest) -> Any:
        """A :class:`~perftune.trial._kit.Kit` for a process perftune did not fork: a launched
        script (its ranks from the launcher's environment) or a tuned config used outside a
        sweep. Raises :class:`~perftune.errors.UsageError` if the config needs processes this
        one cannot be."""
        raise NotImplementedError(f"the {self.name} backend cannot run outside a sweep's trial")


_OOM_MARKERS = (
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "outofmemoryerror",
    "resourceexhaustederror",
    "resource exhausted",
    "failed to allocate",
    "oom when allocating",
    # MindSpore: "Allocate memory failed" (CPU), "Memory not enough: Device(id:0) memory isn't
    # enough and alloc failed" (GPU/Ascend), "Allocate device memory failed!".
    "allocate memory failed",
    "allocate device memory failed",
    "memory isn't enough",
    "memory not enough",
)


def classify_exception(exc: BaseException) -> str:
    """The failure cause of an exception raised by a trial: the one place OOM is recognised."""
    if isinstance(exc, TrialError):
        return exc.cause
    if isinstance(exc, MemoryError):
        return "oom"
    text = f"{type(exc).__name__}: {exc}".lower()
    if any(marker in text for marker in _OOM_MARKERS):
        return "oom"
    return "crash"


def classify_exit(status: int, *, killed_for_timeout: bool) -> tuple[str, str]:
    """The failure cause of a trial process that ended without a result, from its wait status."""
    if killed_for_timeout:
        return "timeout", "exceeded the trial timeout and was killed"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == 9:
            return "oom", "killed by SIGKILL (most likely the kernel's out-of-memory killer)"
        import signal

        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return "crash", f"killed by {name}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return "crash", f"exited with status {code} before reporting a result"


def check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise Diverged(f"training loss became {loss} at step {step}")
