"""A sweep request (:class:`SweepConfig`) and the checks of its every input, made before
anything is written; the ranges of its numbers are one table (:data:`LIMITS`)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from perftune._optuna import GRACE_S, HEARTBEAT_S, MAX_RETRY, PRUNERS, SAMPLERS
from perftune.backends import get_backend
from perftune.errors import UsageError
from perftune.names import MAX_STUDY, check_name
from perftune.objectives import TASKS, get_objective, objective_name, parse_objectives
from perftune.sweep.policy import POLICIES
from perftune.workload import MAX_BUDGET_S, check_spec, declared_framework

MAX_DEVICE_INDEX = 1023
#: The values of the closed-set flags that have no registry of their own (``--batch-probe``,
#: ``--warm-start``, ``--mode``); the CLI offers them as choices.
BATCH_PROBES = ("auto", "on", "off")
WARM_STARTS = ("auto", "off")
MODES = ("max", "min")
_DAY = 86_400
#: The range of every number of a sweep request (one table, checked by ``SweepConfig.validate``):
#: attribute -> (flag, low, high, kind), the kinds of :func:`check_number`. Optuna counts
#: heartbeats and the grace period in whole seconds.
LIMITS: dict[str, tuple[str, float, float, str]] = {
    "trials": ("--trials", 1, 100_000, "integer"),
    "confirm_top": ("--confirm-top", 1, 100, "integer"),
    "confirm_repeats": ("--confirm-repeats", 1, 100, "integer"),
    "confirm_max_repeats": ("--confirm-max-repeats", 1, 100, "integer"),
    "workers": ("--workers", 1, 256, "integer"),
    "worker_index": ("--worker-index", 0, 1000, "integer"),
    "max_retry": ("--max-retry", 0, 100, "integer"),
    "seed": ("--seed", 0, 2**32 - 10_001, "integer"),  # + offsets (< 10 000) stays below 2**32
    "timeout": ("--timeout", 0, 30 * _DAY, "positive seconds"),
    "trial_timeout": ("--trial-timeout", 0, 7 * _DAY, "positive seconds"),
    "budget_s": ("--budget", 0, MAX_BUDGET_S, "positive seconds"),
    "eval_interval_s": ("--eval-interval", 0, _DAY, "positive seconds"),
    "heartbeat_s": ("--heartbeat", 1, 3600, "whole seconds"),
    "grace_s": ("--grace-period", 1, 7 * _DAY, "whole seconds"),
    "patience": ("--patience", 1, 10_000, "integer"),
    "slo_p99_ms": ("--slo-p99-ms", 0, 3_600_000, "positive ms"),
    "max_quality_drop": ("--max-quality-drop", 0, 1e15, "number"),
    "request_rate": ("--request-rate", 0, 1e9, "positive rate"),
}
#: The numbers of :data:`LIMITS` that may be None (not given).
OPTIONAL = ("timeout", "trial_timeout", "budget_s", "seed", "eval_interval_s", "patience",
            "confirm_max_repeats", "slo_p99_ms", "max_quality_drop", "request_rate")
#: The flags that only an inference sweep reads (attribute -> flag).
INFERENCE_ONLY = {"slo_p99_ms": "--slo-p99-ms", "max_quality_drop": "--max-quality-drop",
                  "request_rate": "--request-rate"}
#: The quality an inference config may lose against the trained fp32 model, in the metric's
#: own units, when ``--max-quality-drop`` is not given.
DEFAULT_MAX_QUALITY_DROP = 0.01
_KINDS = {  # kind -> (what the value must be, whether ``low`` itself is allowed)
    "integer": ("an integer", True),
    "number": ("a number", True),
    "seconds": ("a number of seconds", True),
    "positive seconds": ("a number of seconds", False),
    "whole seconds": ("a whole number of seconds", True),
    "positive rate": ("a number of requests per second", False),
    "positive ms": ("a number of milliseconds", False),
}


def _objectives():
    from perftune.objectives import OBJECTIVES

    return OBJECTIVES


def _objective_names() -> tuple[str, ...]:
    return tuple(_objectives())


def _num(value: float) -> str:
    """A bound as a person writes it: ``604800``, not ``604800.0`` or ``6.048e+05``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_number(flag: str, value: Any, low: float, high: float, kind: str = "integer") -> None:
    """Raise a :class:`UsageError` naming ``flag`` unless ``value`` is a finite number in range.

    ``kind``: ``integer`` (an int in [low, high]), ``number`` (any number in it), ``seconds`` (a number in [low, high]),
    ``positive seconds`` (in (low, high]) or ``whole seconds`` (a whole number in [low, high]).
    NaN and the infinities never pass."""
    what, closed = _KINDS[kind]
    real = isinstance(value, int | float) and not isinstance(value, bool)
    fits = real and (low <= value if closed else low < value) and value <= high
    if fits and kind == "integer":
        fits = isinstance(value, int)
    elif fits and kind == "whole seconds":
        fits = float(value).is_integer()
    if not fits:
        raise UsageError(f"{flag} {value}: must be {what} {'>=' if closed else '>'} {_num(low)} "
                         f"and <= {_num(high)}")  # fmt: skip


def check_choice(flag: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    """Raise a :class:`UsageError` naming ``flag`` unless ``value`` is one of ``choices``:
    ``--search both: choose auto, joint or factored``."""
    if value not in choices:
        listed = (", ".join(choices[:-1]) + f" or {choices[-1]}") if len(choices) > 1 else choices[0]
        raise UsageError(f"{flag} {value}: choose {listed}")


#: ``progress(event, data)``, the sweep's phases as they happen: "warm_start" {enqueued, sources,
#: ...}, "probe" {max} (the batch-size probe starts), "probed" {max_batch_size, ...}, "start" {total,
#: done, stage, unit} (a search stage starts), "running" {number, baseline, i, total} (a trial
#: starts: the ``i``-th of ``total``), "trial" {number, state, value, best, done, cause, wall_s} (it
#: ended), "confirm" {label, repeat, i, total, candidate, candidates} (a confirmation run starts:
#: candidate ``candidate`` of ``candidates``, the baseline first, in round ``repeat``).
ProgressFn = Callable[[str, dict[str, Any]], None]


@dataclass
class SweepConfig:
    """A sweep request. ``trials`` is the study's total: re-running resumes up to it.

    What is tuned is ``workload`` (a built-in name, a ``Workload`` factory or a
    ``@perftune.trainable`` function as ``FILE.py:NAME``), or ``command``: a script's command line
    whose ``{knob}`` fields are filled per trial (launcher mode; then ``name`` and, for time to
    target, ``target`` say what it is). ``framework`` None: the one the workload file declares,
    else ``torch``."""

    workload: str | None = None
    framework: str | None = None
    device: str = "cpu"
    #: None: the task's default objective (``time-to-target``; ``throughput-at-slo``).
    objective: str | None = None
    trials: int = 20
    timeout: float | None = None
    space: str | None = None
    study: str | None = None
    seed: int | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    confirm_top: int = 2
    #: Confirmation rounds at least, and at most (None: 6 from 3 rounds on; see ``confirm.py``):
    #: the rounds go on until the best's speedup is known to ±10% (95% confidence).
    confirm_repeats: int = 3
    confirm_max_repeats: int | None = None
    trial_timeout: float | None = None
    budget_s: float | None = None
    isolate: bool = True
    track: bool = True
    #: Bound the batch size by a probe of the largest that fits before the study: ``"auto"`` does
    #: so on accelerators (on the CPU, host memory is rarely the limit and the kernel kills a
    #: process rather than raising), ``"on"`` / ``"off"`` force it.
    batch_probe: str = "auto"
    #: Trial processes working on the study at once on this machine (``--workers``): this one
    #: and ``workers - 1`` ``perftune worker`` processes. Needs a storage server (not SQLite).
    workers: int = 1
    #: A trial whose worker died (no heartbeat for ``grace_s``) is failed and retried, at most
    #: ``max_retry`` times.
    max_retry: int = MAX_RETRY
    heartbeat_s: float = HEARTBEAT_S
    grace_s: float = GRACE_S
    #: Which of several workers this process is (offsets the sampler's seed).
    worker_index: int = 0
    #: Launcher mode: the command template, the workload's name, its target and mode, and the
    #: training seconds between due evaluations (a workload says its own).
    command: list[str] | None = None
    name: str | None = None
    target: float | None = None
    mode: str = "max"
    eval_interval_s: float | None = None
    #: A new study first tries the stored bests of this workload on other devices or under
    #: other objectives (``"auto"``, :mod:`.warm`), or not (``"off"``).
    warm_start: str = "auto"
    #: End the search once this many completed trials in a row improved the best by < 1%.
    patience: int | None = None
    #: How the search spends its trials (:mod:`.policy`): ``factored`` (throughput, then samples
    #: to target), ``joint`` (every knob at once), ``auto`` (joint for now: :mod:`.policy`).
    search: str = "auto"
    #: Rerunning a finished sweep (nothing left to search) shows its stored result; True runs its
    #: confirmation round again (``--confirm-again``).
    confirm_again: bool = False
    #: What is tuned: ``training`` or ``inference`` (serving the trained model); None: the
    #: objective's task (training when no objective is given either).
    task: str | None = None
    #: Inference: the p99 request latency a config must stay under (``throughput-at-slo``), the
    #: quality it may lose against the trained fp32 model (metric units), and the open-loop
    #: request rate (``latency``; None: one request after another).
    slo_p99_ms: float | None = None
    max_quality_drop: float | None = None
    request_rate: float | None = None

    def __post_init__(self) -> None:
        if self.framework is None:
            self.framework = (declared_framework(self.workload) if self.workload else None) or "torch"
        if self.objective is None:
            self.objective = TASKS.get(self.task or "training", "time-to-target")
        self.objective = ",".join(n.strip() for n in self.objective.split(","))
        if self.task is None:
            primary = objective_name(self.objective)
            self.task = get_objective(primary).task if primary in _objective_names() else "training"

    def validate(self) -> None:
        get_backend(self.framework)
        check_choice("--task", self.task, tuple(TASKS))
        objectives = parse_objectives(self.objective)
        objective = objectives[0]
        self._validate_task(objective)
        if len(objectives) > 1:
            self._validate_multi(objectives)
        if self.command:
            self._validate_command(objective.measure)
        elif self.workload is None:
            raise UsageError("--workload: give a workload (a built-in name or FILE.py:FUNC), or a "
                             "command after -- (perftune sweep --name N --target T -- python train.py ...)")
        else:
            if self.name is not None or self.target is not None or self.eval_interval_s is not None:
                raise UsageError("--name/--target/--eval-interval: only with a command after -- (a "
                                 "workload says its own name, target and evaluation interval)")  # fmt: skip
            check_spec(self.workload, self.framework)
            declared = declared_framework(self.workload)
            if declared is not None and declared != self.framework:
                raise UsageError(f"--framework {self.framework}: --workload {self.workload} declares "
                                 f"framework={declared!r} (drop --framework, or pass --framework {declared})")  # fmt: skip
        kind, colon, index = self.device.partition(":")
        classes = get_backend(self.framework).device_classes
        if kind not in classes and self.device != "all":
            raise UsageError(f"--device {self.device}: the {self.framework} backend drives "
                             f"{', '.join(classes)}")  # fmt: skip
        if colon and not (re.fullmatch(r"[0-9]{1,4}", index) and int(index) <= MAX_DEVICE_INDEX):
            raise UsageError(f"--device {self.device}: the index must be an integer from 0 to "
                             f"{MAX_DEVICE_INDEX}")  # fmt: skip
        for flag, value, choices in (("--batch-probe", self.batch_probe, BATCH_PROBES),
                                     ("--search", self.search, POLICIES),
                                     ("--warm-start", self.warm_start, WARM_STARTS),
                                     ("--sampler", self.sampler, SAMPLERS),
                                     ("--pruner", self.pruner, PRUNERS)):  # fmt: skip
            check_choice(flag, value, choices)
        for attr, (flag, low, high, unit) in LIMITS.items():
            if getattr(self, attr) is not None or attr not in OPTIONAL:
                check_number(flag, getattr(self, attr), low, high, unit)
        if self.grace_s <= self.heartbeat_s:
            raise UsageError(f"--grace-period {_num(self.grace_s)}: must be longer than "
                             f"--heartbeat {_num(self.heartbeat_s)} (a running trial would count "
                             "as dead)")  # fmt: skip
        if self.space is not None and not os.path.isfile(self.space):
            raise UsageError(f"--space {self.space}: file not found")
        if self.study is not None and not self.study.strip():
            raise UsageError("--study: must not be empty")
        if self.study is not None and not re.fullmatch(r"[\w.@+=-]+", self.study):
            raise UsageError(f"--study {self.study}: use letters, digits and . _ - + = @ only")
        check_name("--study", self.study, limit=MAX_STUDY, optional=True)

    def _validate_task(self, objective) -> None:
        """The objective is one of the task's, and the inference flags come with an inference
        objective that reads them."""
        if objective.task != self.task:
            names = ", ".join(n for n, o in _objectives().items() if o.task == self.task)
            raise UsageError(f"--objective {self.objective}: a {objective.task} objective, not one "
                             f"for --task {self.task} (choose from: {names})")  # fmt: skip
        for attr, flag in INFERENCE_ONLY.items():
            if getattr(self, attr) is not None and self.task != "inference":
                raise UsageError(f"{flag}: only with --task inference")
        if self.objective == "throughput-at-slo" and self.slo_p99_ms is None:
            raise UsageError("--slo-p99-ms: throughput-at-slo needs the p99 latency target in "
                             "milliseconds (e.g. --slo-p99-ms 5)")  # fmt: skip
        if self.request_rate is not None and self.objective != "latency":
            raise UsageError("--request-rate: only with --objective latency (throughput-at-slo "
                             "sends requests back to back)")  # fmt: skip
        if self.task == "inference":
            if self.command:
                raise UsageError("--task inference: serves a Workload's model, not a command "
                                 "after -- (give --workload)")  # fmt: skip
            if self.search == "factored":
                raise UsageError("--search factored: for training's time to target only (use "
                                 "--search joint)")  # fmt: skip

    def _validate_multi(self, objectives) -> None:
        """What a multi-objective sweep (a Pareto front, no single best) cannot do."""
        for flag, value in (("--patience", self.patience), ("--search factored", self.search == "factored" or None),
                            ("--workers", self.workers if self.workers > 1 else None),
                            ("--sampler grid", self.sampler == "grid" or None),
                            ("--sampler cmaes", self.sampler == "cmaes" or None),
                            ("--device all", self.device == "all" or None)):  # fmt: skip
            if value is not None:
                raise UsageError(f"{flag}: not with several objectives ({self.objective}: the "
                                 "sweep keeps a Pareto front, not one best)")  # fmt: skip

    @property
    def multi(self) -> bool:
        """Several objectives: the sweep keeps a Pareto front."""
        return "," in self.objective

    @property
    def limits(self) -> dict[str, float | None]:
        """What an inference trial must stay within (:meth:`Objective.violations`)."""
        drop = self.max_quality_drop
        return {"slo_p99_ms": self.slo_p99_ms,
                "max_quality_drop": DEFAULT_MAX_QUALITY_DROP if drop is None and self.task == "inference" else drop}

    @property
    def objective_key(self) -> str:
        """The objective as studies and the config store key it: the name, and for inference
        the limits that change what is best, e.g. ``throughput-at-slo@p99<=5ms,drop<=0.01``
        (:func:`perftune.objectives.objective_name` reads the name back)."""
        if self.task != "inference":
            return self.objective
        parts = [f"p99<={self.slo_p99_ms:g}ms"] if self.slo_p99_ms is not None else []
        if self.request_rate is not None:
            parts.append(f"rate={self.request_rate:g}/s")
        parts.append(f"drop<={self.limits['max_quality_drop']:g}")
        return f"{self.objective}@{','.join(parts)}"

    def _validate_command(self, measure: str) -> None:
        from perftune.trial.launcher import template_fields

        if self.workload is not None:
            raise UsageError("--workload and a command after --: give one of them")
        if not self.name:
            raise UsageError("--name: a launched command needs a workload name (perftune sweep "
                             "--name my-job --target 0.9 -- python train.py ...)")  # fmt: skip
        check_name("--name", self.name)
        check_choice("--mode", self.mode, MODES)
        if measure == "converge" and self.target is None:
            raise UsageError("--target: time to target needs the metric's target (or "
                             "--objective throughput)")  # fmt: skip
        if self.target is not None:
            check_number("--target", self.target, -1e15, 1e15, "number")
        template_fields(self.command)

    def describe_command(self) -> dict[str, Any]:
        """A launched command's workload description (what a Workload's ``describe`` says)."""
        return {"name": self.name, "framework": self.framework, "kind": "command",
                "loss": "-", "metric": "-", "target": self.target, "mode": self.mode,
                "budget_s": float(self.budget_s or 60.0), "eval_interval_s": self.eval_interval_s or 0.25,
                "flops_per_sample": None, "description": " ".join(self.command or [])}  # fmt: skip
