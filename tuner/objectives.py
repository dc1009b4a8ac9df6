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
    #: What the trial worker measures for this objective: ``"converge"`` or ``"throughput"``.
    measure: str

    @abc.abstractmethod
    def value(self, metrics: Mapping[str, Any]) -> float | None:
        """The objective value of a finished trial, or ``None`` if it produced none
        (e.g. the quality target was not reached within the budget)."""

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a < b if self.direction == "minimize" else a > b

    def speedup(self, baseline: float | None, best: float | None) -> float | None:
        """How many times faster ``best`` is than ``baseline`` (> 1 means better)."""
        return speedup(baseline, best, self.direction)


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
        v = metrics.get("throughput_sps")
        return float(v) if v is not None and math.isfinite(v) and v > 0 else None


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (TimeToTarget(), Throughput())}


def get_objective(name: str) -> Objective:
    try:
        return OBJECTIVES[name]
    except KeyError:
        raise UsageError(
            f"--objective {name}: unknown objective (choose from: {', '.join(OBJECTIVES)})"
        ) from None


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
