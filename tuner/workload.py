"""What a sweep tunes: the user's training function, or a workload for perftune's built-in loop.

Two kinds, named by the same *spec* strings:

- a training function decorated with :func:`perftune.trainable` (the user's loop, measured through
  :class:`perftune.Trial`): ``path/to/train.py:train``;
- a :class:`Workload`: a model factory, in-memory data, a loss and a metric with a quality
  target, trained by perftune's built-in loop (itself written on :class:`perftune.Trial`). A spec
  is a built-in name (``mlp-digits``, ``cnn-digits``, ``gpt-tiny``) or
  ``path/to/file.py:make_workload`` / ``package.module:make_workload``, a zero-argument callable
  returning a :class:`Workload`.

Specs are resolved inside the trial worker, never in the sweep process (which must not import a
framework); :func:`declared_framework` reads a file's declared framework without running it.

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

from perftune.errors import UsageError
from perftune.names import check_name

#: Built-in workloads: name -> "module:factory" (per framework).
BUILTIN_WORKLOADS: dict[str, dict[str, str]] = {
    "mlp-digits": {"torch": "perftune.workloads.torch_digits:mlp_digits",
                   "tensorflow": "perftune.workloads.tf_digits:mlp_digits",
                   "mindspore": "perftune.workloads.ms_digits:mlp_digits"},
    "cnn-digits": {"torch": "perftune.workloads.torch_digits:cnn_digits",
                   "tensorflow": "perftune.workloads.tf_digits:cnn_digits",
                   "mindspore": "perftune.workloads.ms_digits:cnn_digits"},
    "gpt-tiny": {"torch": "perftune.workloads.torch_gpt:gpt_tiny"},
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
            100 characters, without ``/``, ``\\`` or ``..`` (see :func:`perftune.names.check_name`).
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
        weights: a file of trained weights for ``--task inference`` (PyTorch: a ``state_dict``
            saved with ``torch.save``; Keras: a ``.weights.h5`` file; MindSpore: a ``.ckpt``).
            Without it, an inference sweep first trains the model once to ``target`` with the
            framework-default config and caches the weights in the workspace.
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
    weights: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_description(self.describe())
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
            "kind": "workload",
            "loss": self.loss if isinstance(self.loss, str) else getattr(self.loss, "__name__", "custom"),
            "metric": self.metric if isinstance(self.metric, str) else getattr(self.metric, "__name__", "custom"),
            "target": float(self.target),
            "mode": self.mode,
            "budget_s": float(self.budget_s),
            "eval_interval_s": float(self.eval_interval_s),
            "flops_per_sample": self.flops_per_sample,
            "description": self.description,
        }


def check_description(desc: dict[str, Any]) -> None:
    """The checks every workload description passes (a :class:`Workload`'s, a
    :class:`~perftune.trial.Trainable`'s): one line naming the field, before anything runs."""
    name = desc.get("name")
    check_name("workload name", name)
    if desc.get("framework") not in ("torch", "tensorflow", "mindspore"):
        raise UsageError(f"workload {name}: framework must be torch, tensorflow or mindspore, "
                         f"not {desc.get('framework')!r}")  # fmt: skip
    if desc.get("mode") not in ("max", "min"):
        raise UsageError(f"workload {name}: mode must be 'max' or 'min', got {desc.get('mode')!r}")
    for key in ("target", "budget_s", "eval_interval_s"):
        value = desc.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UsageError(f"workload {name}: {key} must be a finite number, got {value!r}")
    if not 0 < desc["budget_s"] <= MAX_BUDGET_S:
        raise UsageError(f"workload {name}: budget_s must be > 0 and <= {MAX_BUDGET_S}, got {desc['budget_s']}")
    if not desc["eval_interval_s"] > 0:
        raise UsageError(f"workload {name}: eval_interval_s must be > 0, got {desc['eval_interval_s']}")


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
    if not isinstance(workload, Workload):  # a training function loads its own data
        _CACHE[(spec, framework)] = workload
        return
    arrays = workload.data()
    workload.data = lambda: arrays
    _CACHE[(spec, framework)] = workload


def resolve(spec: str, framework: str = "torch") -> Any:
    """What a spec names, built in the trial worker (where the framework lives): a
    :class:`Workload` (from a factory) or a :class:`~perftune.trial.Trainable` (a decorated
    training function)."""
    if (spec, framework) in _CACHE:
        return _CACHE[(spec, framework)]
    check_spec(spec, framework)
    factory_spec = BUILTIN_WORKLOADS[spec][framework] if spec in BUILTIN_WORKLOADS else spec
    obj = _load_callable(factory_spec)
    from perftune.trial.api import Trainable

    if isinstance(obj, Trainable):
        workload: Any = obj
    else:
        _check_factory(spec, obj)
        try:
            workload = obj()
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's factory: report it as bad input
            raise UsageError(f"--workload {spec}: the factory raised {type(exc).__name__}: {exc}") from None
        if not isinstance(workload, Workload):
            raise UsageError(f"--workload {spec}: the factory returned {type(workload).__name__}, "
                             "not perftune.Workload (or decorate a training function with "
                             "@perftune.trainable)")  # fmt: skip
    if workload.framework != framework:
        raise UsageError(
            f"--workload {spec}: it is a {workload.framework} workload, not {framework} "
            f"(pass --framework {workload.framework})"
        )
    if isinstance(workload, Workload):  # warm() and every built-in loop load through this
        workload.data = _checked(workload.data, workload.name)
    return workload


def _check_factory(spec: str, obj: Any) -> None:
    """A spec names a zero-argument factory or a decorated training function; a plain function
    of one argument is a training function someone forgot to decorate."""
    import inspect

    if not callable(obj):
        raise UsageError(f"--workload {spec}: {type(obj).__name__} is not callable")
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return
    required = [p for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]  # fmt: skip
    if required:
        raise UsageError(f"--workload {spec}: a training function must be decorated with "
                         "@perftune.trainable(name=..., target=...), and a workload factory takes "
                         f"no arguments (this one takes {', '.join(p.name for p in required)})")  # fmt: skip


def declared_framework(spec: str) -> str | None:
    """The framework a workload declares, read without running (or importing) anything: a
    built-in's only framework (None if it has several); for a file, the ``framework=`` of the
    ``@perftune.trainable`` decorating the named function, or of a ``Workload(...)`` call in the
    named factory (or in a function of the same file it calls). None if not declared as a
    literal (or not a file)."""
    import ast

    if spec in BUILTIN_WORKLOADS:
        only = list(BUILTIN_WORKLOADS[spec])
        return only[0] if len(only) == 1 else None
    if ":" not in spec:
        return None
    target, _, attr = spec.rpartition(":")
    if not target.endswith(".py"):
        return None
    try:
        with open(target, encoding="utf-8") as f:
            tree = ast.parse(f.read(), filename=target)
    except (OSError, SyntaxError, ValueError):
        return None
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}

    def literal(call: ast.Call) -> str | None:
        for kw in call.keywords:
            if kw.arg == "framework" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                return kw.value.value
        return None

    def search(name: str, depth: int) -> str | None:
        """The function's own literal, else one of the module's functions it calls."""
        node = functions.get(name)
        if node is None or depth > 3:
            return None
        calls = [d for d in node.decorator_list if isinstance(d, ast.Call)]
        calls += [n for n in ast.walk(node) if isinstance(n, ast.Call)]
        found = next((fw for fw in map(literal, calls) if fw), None)
        if found:
            return found
        helpers = [c.func.id for c in calls if isinstance(c.func, ast.Name) and c.func.id != name]
        return next((fw for fw in (search(h, depth + 1) for h in helpers) if fw), None)

    return search(attr, 0)


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
