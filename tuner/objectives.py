"""Objectives: what a trial's measurement is reduced to, and which way is better.

One small base, :class:`Objective`, and one implementation per objective. Statistics helpers
(median, spread, speedup) live here too so that every report uses the same math.
"""

from __future__ import annotations

import abc
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from perftune.errors import UsageError


class Objective(abc.ABC):
    """Reduces a trial's metrics to the one number Optuna optimises.

    Implementations are stateless and safe to share between threads.
    """

    #: CLI name, e.g. ``"time-to-target"``.
    name: str
    #: ``"minimize"`` or ``"maximize"``.
    direction: str
    #: Unit of :meth:`value`, for tables.
    unit: str
    #: What the trial worker measures for this objective: ``"converge"``, ``"throughput"``
    #: (training) or ``"infer"`` (serving a trained model: :mod:`perftune.inference`).
    measure: str
    #: What it tunes: ``"training"`` or ``"inference"``.
    task: str = "training"

    @abc.abstractmethod
    def value(self, metrics: Mapping[str, Any]) -> float | None:
        """The objective value of a finished trial, or ``None`` if it produced none
        (e.g. the quality target was not reached within the budget)."""

    def violations(self, metrics: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str, str]:
        """The limits a measured trial breaks (``--slo-p99-ms``, ``--max-quality-drop``): cause ->
        message. A trial that breaks one is infeasible (the samplers learn to avoid it), not
        a failure. ``limits`` are the sweep's; the default breaks none."""
        return {}

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a < b if self.direction == "minimize" else a > b

    def speedup(self, baseline: float | None, best: float | None) -> float | None:
        """How many times faster ``best`` is than ``baseline`` (> 1 means better)."""
        return speedup(baseline, best, self.direction)


def _positive(metrics: Mapping[str, Any], key: str) -> float | None:
    """``metrics[key]`` if it is a finite number above 0, else None (nothing measured)."""
    v = metrics.get(key)
    return float(v) if v is not None and math.isfinite(v) and v > 0 else None


class TimeToTarget(Objective):
    """Training wall-clock seconds until the validation metric reaches the workload's target.

    Evaluation time is excluded from the clock (MLPerf counts it; we evaluate often to resolve
    the crossing time, so including it would reward evaluating less).
    """

    name = "time-to-target"
    direction = "minimize"
    unit = "s"
    measure = "converge"

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        if not metrics.get("reached_target"):
            return None
        return float(metrics["time_to_target_s"])


class Throughput(Objective):
    """Training samples per second over steady windows after warm-up (median of the windows)."""

    name = "throughput"
    direction = "maximize"
    unit = "samples/s"
    measure = "throughput"

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        return _positive(metrics, "throughput_sps")


def _quality_violation(metrics: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str, str]:
    """``quality`` if the configured model lost more than ``--max-quality-drop`` of the metric
    (the drop is measured in every inference trial, never assumed)."""
    drop, allowed = metrics.get("quality_drop"), limits.get("max_quality_drop")
    if allowed is None or drop is None or drop <= allowed + 1e-12:
        return {}
    return {"quality": f"quality dropped by {drop:.4g} (allowed {allowed:g}): "
                       f"{metrics.get('quality')} against {metrics.get('quality_reference')}"}  # fmt: skip


class ThroughputAtSLO(Objective):
    """Inference samples per second, counted only while the p99 request latency stays under
    ``--slo-p99-ms`` and the quality drop under ``--max-quality-drop``."""

    name = "throughput-at-slo"
    direction = "maximize"
    unit = "samples/s"
    measure = "infer"
    task = "inference"

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        return _positive(metrics, "throughput_sps")

    def violations(self, metrics: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str, str]:
        out = {}  # the SLO first: the cause a trial over both limits is recorded with
        p99, slo = metrics.get("p99_ms"), limits.get("slo_p99_ms")
        if slo is not None and p99 is not None and p99 > slo:
            out["slo"] = f"p99 latency {p99:.3g} ms over the {slo:g} ms target"
        return {**out, **_quality_violation(metrics, limits)}


class Latency(Objective):
    """The p99 inference request latency in milliseconds (batch 1 unless the space says
    otherwise; with ``--request-rate``, requests arrive at that rate and queueing counts)."""

    name = "latency"
    direction = "minimize"
    unit = "ms"
    measure = "infer"
    task = "inference"

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        return _positive(metrics, "p99_ms")

    def violations(self, metrics: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str, str]:
        return _quality_violation(metrics, limits)


class Secondary(Objective):
    """An objective that only makes sense beside a primary one (``time-to-target,energy``): it
    reads what the primary's trial measured, and asks for no measurement of its own."""

    measure = ""
    #: The tasks whose trials measure it.
    tasks: tuple[str, ...] = ("training", "inference")
    #: The metric it reads, and where that metric is missing the one it falls back to.
    keys: tuple[str, ...] = ()

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        for key in self.keys:
            v = metrics.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                return float(v)
        return None


class Energy(Secondary):
    """Joules per sample over the trial's measured window (RAPL on the CPU, NVML on NVIDIA GPUs):
    refused before a sweep starts where no meter is readable, never estimated."""

    name, direction, unit, keys = "energy", "minimize", "J/sample", ("joules_per_sample",)


class PeakMemory(Secondary):
    """Peak memory of the trial: the device's where it reports one, else the process's RSS."""

    name, direction, unit, keys = "peak-memory", "minimize", "MiB", ("peak_device_memory_mb", "peak_rss_mb")


class Quality(Secondary):
    """The served model's quality (inference), oriented so that higher is better: the metric
    itself, or its negative for a lower-is-better metric (``quality_score``)."""

    name, direction, unit, keys = "quality", "maximize", "score", ("quality_score",)
    tasks = ("inference",)


OBJECTIVES: dict[str, Objective] = {
    o.name: o for o in (TimeToTarget(), Throughput(), ThroughputAtSLO(), Latency(), Energy(),
                        PeakMemory(), Quality())
}  # fmt: skip
#: The tasks a sweep tunes (``--task``), each with its default objective.
TASKS = {"training": "time-to-target", "inference": "throughput-at-slo"}


def objective_name(key: str) -> str:
    """The primary objective's name in a stored key: ``throughput-at-slo@p99<=5ms,drop<=0.01``
    -> ``throughput-at-slo``, ``time-to-target,energy`` -> ``time-to-target``."""
    return key.partition("@")[0].partition(",")[0]


def parse_objectives(spec: str, task: str | None = None) -> list[Objective]:
    """The objectives ``--objective`` names, comma-separated: one primary (which says what the
    trials measure: ``time-to-target``, ``throughput``, ``throughput-at-slo``, ``latency``)
    first, then secondary ones (``energy``, ``peak-memory``, ``quality``). Raises a one-line
    :class:`UsageError` for an unknown, repeated or conflicting name."""
    names = [n.strip() for n in spec.split(",")]
    objectives = [get_objective(n, spec) for n in names]
    if len(set(names)) != len(names):
        raise UsageError(f"--objective {spec}: names an objective twice")
    primaries = [o for o in objectives if not isinstance(o, Secondary)]
    if len(primaries) != 1 or isinstance(objectives[0], Secondary):
        listed = ", ".join(n for n, o in OBJECTIVES.items() if not isinstance(o, Secondary))
        if len(primaries) > 1:
            what = "conflicting objectives: " + " and ".join(o.name for o in primaries)
        elif primaries:
            what = f"the primary objective comes first ({primaries[0].name})"
        else:
            what = f"{names[0]} needs a primary objective"
        raise UsageError(f"--objective {spec}: {what} (give one of {listed} first, then any of "
                         "energy, peak-memory, quality)")  # fmt: skip
    primary = objectives[0]
    for o in objectives[1:]:
        if primary.task not in o.tasks:  # type: ignore[attr-defined]
            raise UsageError(f"--objective {spec}: {o.name} is measured by inference trials only, "
                             f"not by {primary.name}")  # fmt: skip
    return objectives


def get_objective(name: str, spec: str | None = None) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise UsageError(f"--objective {spec or name}: unknown objective {name!r} (choose from: "
                         f"{', '.join(OBJECTIVES)}; several comma-separated)") from None


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def spread(values: Sequence[float]) -> float:
    """Relative spread: (max - min) / median. 0 for a single value."""
    if len(values) < 2:
        return 0.0
    m = median(values)
    return float((max(values) - min(values)) / m) if m else math.inf


def speedup(baseline: float | None, best: float | None, direction: str) -> float | None:
    if baseline is None or best is None or baseline <= 0 or best <= 0:
        return None
    return baseline / best if direction == "minimize" else best / baseline


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Median, relative spread, min, max and count of repeated measurements."""
    vals = [float(v) for v in values]
    return {
        "median": median(vals),
        "spread": spread(vals),
        "min": min(vals),
        "max": max(vals),
        "n": float(len(vals)),
    }
