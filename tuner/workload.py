"""The workload a user brings: a model factory, data, a loss and a metric with a quality target.

perftune owns the training loop, because the knobs it tunes (batch size, optimizer, learning rate,
parallel strategy, precision, threads) live there. A workload only says *what* to train and when
it is good enough.

A workload is named by a *spec* string, resolved inside the trial worker (never in the sweep
process, which must not import a framework):

- a built-in name: ``mlp-digits``, ``cnn-digits``, ``gpt-tiny`` (PyTorch);
- ``path/to/file.py:make_workload`` or ``package.module:make_workload``: a zero-argument callable
  returning a :class:`Workload`.

This module imports only the standard library.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tuner.errors import UsageError
from tuner.names import check_name

#: Built-in workloads: name -> "module:factory" (per framework).
BUILTIN_WORKLOADS: dict[str, dict[str, str]] = {
    "mlp-digits": {"torch": "tuner.workloads.torch_digits:mlp_digits",
                   "tensorflow": "tuner.workloads.tf_digits:mlp_digits",
                   "mindspore": "tuner.workloads.ms_digits:mlp_digits"},
    "cnn-digits": {"torch": "tuner.workloads.torch_digits:cnn_digits",
                   "tensorflow": "tuner.workloads.tf_digits:cnn_digits",
                   "mindspore": "tuner.workloads.ms_digits:cnn_digits"},
    "gpt-tiny": {"torch": "tuner.workloads.torch_gpt:gpt_tiny"},
}

#: The loss and metric names every backend implements (anything else must be a callable).
LOSSES = ("cross_entropy", "mse")
METRICS = ("accuracy", "mse")
#: The longest training budget of a trial, in seconds (a week; ``--budget`` has the same bound).
MAX_BUDGET_S = 7 * 86_400


@dataclass
class Workload:
    """What to train and when it is good enough.

    Args:
        name: short identifier, used for the MLflow experiment and the config store: at most
            100 characters, without ``/``, ``\\`` or ``..`` (see :func:`tuner.names.check_name`).
        framework: ``"torch"`` (TensorFlow and MindSpore come with their backends).
        model: zero-argument factory returning a fresh, untrained model (a ``torch.nn.Module``).
            Called inside the trial process, after the device and threads are configured.
        data: zero-argument callable returning ``(x_train, y_train, x_val, y_val)`` as NumPy
            arrays or tensors. Loaded once per trial process; keep it in memory-sized arrays.
        loss: ``"cross_entropy"`` or ``"mse"``, or a callable ``loss(outputs, targets)`` returning
            a scalar tensor.
        metric: ``"accuracy"`` or ``"mse"``, or a callable ``metric(outputs, targets)`` returning a
            float computed over the whole validation set.
        target: the quality target of the metric (e.g. validation accuracy 0.97).
        mode: ``"max"`` if a higher metric is better, ``"min"`` otherwise.
        budget_s: cap on training seconds for a time-to-target trial; a trial that has not
            reached the target by then is recorded as not reaching it.
        eval_interval_s: training seconds between evaluations (evaluation time is excluded from
            the training clock and reported separately).
        flops_per_sample: forward+backward FLOPs per training sample, when known (for MFU).
        description: one line for listings.
    """

    name: str
    model: Callable[[], Any]
    data: Callable[[], tuple[Any, Any, Any, Any]]
    target: float
    framework: str = "torch"
    loss: str | Callable[..., Any] = "cross_entropy"
    metric: str | Callable[..., float] = "accuracy"
    mode: str = "max"
    budget_s: float = 60.0
    eval_interval_s: float = 0.25
    flops_per_sample: float | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("workload name", self.name)
        if self.mode not in ("max", "min"):
            raise UsageError(f"workload {self.name}: mode must be 'max' or 'min', got {self.mode!r}")
        if not math.isfinite(float(self.target)):
            raise UsageError(f"workload {self.name}: target must be a finite number")
        if not 0 < self.budget_s <= MAX_BUDGET_S:
            raise UsageError(f"workload {self.name}: budget_s must be > 0 and <= {MAX_BUDGET_S}, "
                             f"got {self.budget_s}")  # fmt: skip
        if not self.eval_interval_s > 0:
            raise UsageError(
                f"workload {self.name}: eval_interval_s must be > 0, got {self.eval_interval_s}"
            )
        for attr in ("model", "data"):
            if not callable(getattr(self, attr)):
                raise UsageError(f"workload {self.name}: {attr} must be a callable factory")
        for attr, names in (("loss", LOSSES), ("metric", METRICS)):
            value = getattr(self, attr)
            if not (callable(value) or (isinstance(value, str) and value in names)):
                raise UsageError(f"workload {self.name}: {attr} {value!r} is not known (choose "
                                 f"from: {', '.join(names)}; or pass a callable)")  # fmt: skip

    def reached(self, value: float) -> bool:
        """Whether a metric value meets the target."""
        return value >= self.target if self.mode == "max" else value <= self.target

    def gap(self, value: float) -> float:
        """Distance to the target, lower is better (<= 0 once reached): what the pruner sees."""
        return self.target - value if self.mode == "max" else value - self.target

    def describe(self) -> dict[str, Any]:
        """JSON-able metadata, sent from the worker to the sweep process."""
        return {
            "name": self.name,
            "framework": self.framework,
            "loss": self.loss if isinstance(self.loss, str) else getattr(self.loss, "__name__", "custom"),
            "metric": self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "custom"),
            "target": float(self.target),
            "mode": self.mode,
            "budget_s": float(self.budget_s),
            "eval_interval_s": float(self.eval_interval_s),
            "flops_per_sample": self.flops_per_sample,
            "description": self.description,
        }


def is_builtin(spec: str) -> bool:
    return spec in BUILTIN_WORKLOADS


def check_spec(spec: str, framework: str) -> None:
    """Cheap checks of a workload spec in the sweep process (no import of the user's code)."""
    if spec in BUILTIN_WORKLOADS:
        if framework not in BUILTIN_WORKLOADS[spec]:
            have = ", ".join(sorted(BUILTIN_WORKLOADS[spec]))
            raise UsageError(f"--workload {spec}: no {framework} version (available for: {have})")
        return
    if ":" not in spec:
        names = ", ".join(sorted(BUILTIN_WORKLOADS))
        raise UsageError(
            f"--workload {spec}: unknown workload (built-in: {names}; or give FILE.py:FUNCTION "
            "or package.module:FUNCTION)"
        )
    target, _, attr = spec.rpartition(":")
    if not attr.isidentifier():
        raise UsageError(f"--workload {spec}: {attr!r} is not a function name")
    if target.endswith(".py") and not os.path.isfile(target):
        raise UsageError(f"--workload {spec}: file not found: {target}")


def canonical_spec(spec: str) -> str:
    """A spec usable from another working directory (file paths made absolute)."""
    if spec in BUILTIN_WORKLOADS or ":" not in spec:
        return spec
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        return f"{os.path.abspath(target)}:{attr}"
    return spec


def _load_callable(spec: str) -> Callable[[], Any]:
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        path = os.path.abspath(target)
        mod_name = "perftune_user_" + os.path.splitext(os.path.basename(path))[0]
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise UsageError(f"--workload {spec}: cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        sys.path.insert(0, os.path.dirname(path))
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file: report it as bad input
            sys.modules.pop(mod_name, None)
            raise UsageError(f"--workload {spec}: cannot load {path}: "
                             f"{type(exc).__name__}: {exc}") from None  # fmt: skip
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise UsageError(f"--workload {spec}: cannot import {target}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UsageError(f"--workload {spec}: {target} has no attribute {attr!r}") from None


_CACHE: dict[tuple[str, str], Workload] = {}


def warm(spec: str, framework: str = "torch") -> None:
    """Resolve a workload and load its data once, caching both in this process.

    The trial worker calls this before forking trials, so each trial inherits the loaded data
    instead of paying for it. ``data()`` must therefore return host (CPU) arrays.
    """
    if (spec, framework) in _CACHE:
        return
    workload = resolve(spec, framework)
    arrays = workload.data()
    workload.data = lambda: arrays
    _CACHE[(spec, framework)] = workload


def resolve(spec: str, framework: str = "torch") -> Workload:
    """Build the :class:`Workload` a spec names (in the trial worker, where the framework lives)."""
    if (spec, framework) in _CACHE:
        return _CACHE[(spec, framework)]
    check_spec(spec, framework)
    factory_spec = BUILTIN_WORKLOADS[spec][framework] if spec in BUILTIN_WORKLOADS else spec
    factory = _load_callable(factory_spec)
    try:
        workload = factory()
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's factory: report it as bad input
        raise UsageError(f"--workload {spec}: the factory raised {type(exc).__name__}: {exc}") from None
    if not isinstance(workload, Workload):
        raise UsageError(
            f"--workload {spec}: the factory returned {type(workload).__name__}, not tuner.Workload"
        )
    if workload.framework != framework:
        raise UsageError(
            f"--workload {spec}: it is a {workload.framework} workload, not {framework} "
            f"(pass --framework {workload.framework})"
        )
    workload.data = _checked(workload.data, workload.name)  # warm() and every backend load here
    return workload


def _checked(data: Callable[[], Any], name: str) -> Callable[[], Any]:
    """``data`` whose result goes through :func:`check_data` on every call."""

    def load() -> Any:
        return check_data(data(), name)

    return load


def check_data(arrays: Any, name: str) -> Any:
    """``arrays`` (what a workload's ``data()`` returned) if they can be trained on: four of
    them, ``(x_train, y_train, x_val, y_val)``, neither set empty, inputs and targets of equal
    length (where a length can be told: arrays, tensors, lists). Else a UsageError naming the
    workload, which a trial reports as ``invalid`` before training starts (an empty training
    set would otherwise spin until the trial timeout)."""
    if not isinstance(arrays, tuple | list) or len(arrays) != 4:
        raise UsageError(f"workload {name}: data() must return (x_train, y_train, x_val, y_val), "
                         f"got {type(arrays).__name__}")  # fmt: skip
    for label, (x, y) in (("training", arrays[:2]), ("validation", arrays[2:])):
        nx, ny = _samples(x), _samples(y)
        if 0 in (nx, ny):
            raise UsageError(f"workload {name}: data(): the {label} set is empty")
        if None not in (nx, ny) and nx != ny:
            raise UsageError(f"workload {name}: data(): the {label} set has {nx} inputs but "
                             f"{ny} targets")  # fmt: skip
    return arrays


def _samples(a: Any) -> int | None:
    """The number of samples in an array, tensor or list (its first dimension); None if unknown."""
    shape = getattr(a, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) and shape[0] is not None else None
    return len(a) if isinstance(a, list | tuple) else None
