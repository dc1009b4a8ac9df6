"""Trials outside a sweep: the tuned config applied back in the user's own code.

:func:`from_best` (``perftune.Trial.from_best``) makes a ``free`` trial over the stored best config
of a workload (or the defaults), so that the function that was tuned is the function that is
used, with the same helpers; :func:`run_free` runs a training function on it, starting the ranks
a multi-process config needs exactly as a sweep's trial starts them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from perftune.trial._meter import Plan
from perftune.trial.api import Trial, run_function

__all__ = ["default_config", "from_best", "run_free", "standalone_trial"]


def default_config(framework: str, device: str = "cpu") -> dict[str, Any]:
    """The framework's defaults on this machine's ``device`` class: the built-in search
    space's defaults, the config every sweep's baseline trial runs."""
    from perftune.backends._host import host_memory_bytes, usable_cores
    from perftune.search_spaces import load_space

    kind = device.split(":", 1)[0]
    resources = {"cores": usable_cores(), "device_count": 1, "memory_gib": host_memory_bytes() / 2**30}
    return load_space(framework, kind, resources=resources).defaults()


def _request(config: Mapping[str, Any], framework: str, device: str, seed: int) -> Any:
    from perftune.backends import TrialRequest

    return TrialRequest(workload="-", framework=framework, device=device, config=dict(config),
                        measure="free", seed=seed)  # fmt: skip


def standalone_trial(config: Mapping[str, Any] | None, *, framework: str, device: str = "cpu",
                     target: float | None = None, mode: str = "max", seed: int = 0,
                     source: str = "defaults", record: Any = None, name: str = "") -> Trial:  # fmt: skip
    """A ``free`` trial in this process: ``config`` (None: the framework's defaults) on
    ``device``; the kit is built when first used, from the launcher's environment when the
    process is one of torchrun's ranks. ``trial.run(fn)`` runs ``fn`` on it (:func:`run_free`)."""
    from perftune.backends import get_backend

    backend = get_backend(framework)
    values = dict(config) if config is not None else default_config(framework, device)
    request = _request(values, framework, device, seed)
    plan = Plan(measure="free", target=target, mode=mode, budget_s=float("inf"),
                stop_at_target=target is not None)  # fmt: skip
    description = {"name": name, "target": target, "mode": mode, "budget_s": float("inf"),
                   "eval_interval_s": plan.eval_interval_s}  # fmt: skip

    def runner(fn: Callable[[Trial], Any], trial: Trial) -> dict[str, Any]:
        return run_free(fn, trial, backend(), request, description)

    return Trial(values, plan=plan, kit=lambda: backend().standalone_kit(request), name=name,
                 seed=seed, source=source, record=record, runner=runner)  # fmt: skip


def from_best(name: str, *, framework: str | None, device: str, objective: str,
              home: str | None, db: str | None, defaults: Mapping[str, Any] | None,
              target: float | None, mode: str, seed: int) -> Trial:  # fmt: skip
    """See :meth:`perftune.Trial.from_best`."""
    from perftune.api import best_config

    record = best_config(name, framework=framework or "torch", device=device,
                         objective=objective, home=home, db=db)  # fmt: skip
    fw = framework or (record.framework if record is not None else "torch")
    if record is not None:
        return standalone_trial(record.config, framework=fw, device=device, target=target,
                                mode=mode, seed=seed, source="stored", record=record, name=name)  # fmt: skip
    return standalone_trial(defaults, framework=fw, device=device, target=target, mode=mode,
                            seed=seed, source="defaults", name=name)  # fmt: skip


def run_free(fn: Callable[[Trial], Any], trial: Trial, backend: Any, request: Any,
             description: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Run ``fn`` (a training function, or a :class:`~perftune.workload.Workload` for perftune's
    built-in loop) on a free trial: in this process when the config is one process (or this
    process is already one of a launcher's ranks), else on the ranks the backend starts for it,
    exactly as for a sweep's trial."""
    import os

    from perftune.backends import NullChannel
    from perftune.trial._run import as_function
    from perftune.workload import Workload

    if backend.processes(request.config) == 1 or int(os.environ.get("WORLD_SIZE", 1)) > 1:
        return run_function(as_function(fn, backend.builtin_loop), trial)
    target = fn if isinstance(fn, Workload) else _Function(fn, description)
    return backend.run_trial(target, request, NullChannel())


class _Function:
    """A training function with a free trial's description, for a backend's ``run_trial``."""

    def __init__(self, fn: Callable[[Trial], Any], description: dict[str, Any]) -> None:
        self.fn, self.description = getattr(fn, "fn", fn), description

    def describe(self) -> dict[str, Any]:
        return self.description
