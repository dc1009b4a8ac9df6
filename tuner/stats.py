"""How sure a measured result is: confidence intervals for repeated and paired measurements.

A confirmed config is measured in rounds: round ``r`` runs every candidate once with seed
``base + r``, one after another (A B C, A B C, ...), so a seed's luck and the machine's drift
hit all candidates alike. Compared within a round, two candidates form a *pair*.

Timings are multiplicative (a loaded machine makes everything k times slower), so intervals
are computed on logarithms: Student's t on the log values (or on the log ratios of the pairs),
turned back into a ratio. The estimate is the geometric mean, the interval is exact for
log-normal noise, needs no resampling (so it is reproducible) and is honest about small
samples: with 3 repeats t is 4.30, and the interval says so.

    >>> speedup_interval([10.0, 12.0, 11.0], [5.0, 6.1, 5.4], "minimize").estimate  # doctest: +ELLIPSIS
    2.0...
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

__all__ = [
    "LEVEL",
    "MIN_REPEATS",
    "TARGET_HALF_WIDTH",
    "Interval",
    "clearly_better",
    "precise_enough",
    "speedup_interval",
    "value_interval",
]

#: Confidence level of every interval perftune reports.
LEVEL = 0.95
#: Repeats before an interval is computed at all (two points give no idea of the spread).
MIN_REPEATS = 3
#: A speedup is resolved when its interval's half-width is at most this share of it.
TARGET_HALF_WIDTH = 0.10


@dataclass(frozen=True)
class Interval:
    """``estimate`` with a ``level`` confidence interval ``[low, high]`` from ``n`` points."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        """Half the interval's width, relative to the estimate (0.1: about ±10%)."""
        return (self.high - self.low) / 2 / self.estimate

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "half_width": self.half_width}

    def __str__(self) -> str:
        return f"{self.estimate:.3g} [{self.low:.3g}, {self.high:.3g}]"


def _t(level: float, df: int) -> float:
    from scipy.stats import t  # scipy comes with optuna's and mlflow's requirements

    return float(t.ppf(0.5 + level / 2, df))


def _log_interval(logs: Sequence[float], level: float) -> Interval | None:
    n = len(logs)
    if n < 2 or not all(math.isfinite(x) for x in logs):
        return None
    mean = sum(logs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    half = _t(level, n - 1) * sd / math.sqrt(n)
    return Interval(math.exp(mean), math.exp(mean - half), math.exp(mean + half), n, level)


def value_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """The typical value (geometric mean) of positive repeated measurements, with its interval.
    None with fewer than two values or any value <= 0."""
    if any(v <= 0 for v in values):
        return None
    return _log_interval([math.log(v) for v in values], level)


def speedup_interval(
    baseline: Sequence[float], candidate: Sequence[float], direction: str, level: float = LEVEL
) -> Interval | None:
    """How many times better ``candidate`` is than ``baseline`` (> 1: better), from pairs:
    ``baseline[i]`` and ``candidate[i]`` were measured in the same round (same seed).
    ``direction`` is the objective's (``minimize``: time, ``maximize``: throughput).
    None with fewer than two pairs or a value <= 0."""
    if len(baseline) != len(candidate):
        raise ValueError("paired measurements need as many baseline values as candidate values")
    if any(v <= 0 for v in (*baseline, *candidate)):
        return None
    sign = 1.0 if direction == "minimize" else -1.0
    logs = [sign * (math.log(b) - math.log(c)) for b, c in zip(baseline, candidate, strict=True)]
    return _log_interval(logs, level)


def precise_enough(interval: Interval | None, target: float = TARGET_HALF_WIDTH) -> bool:
    """True when ``interval`` exists and its relative half-width is at most ``target``."""
    return interval is not None and interval.half_width <= target


def clearly_better(interval: Interval | None) -> bool:
    """True when the paired interval lies wholly above 1: better beyond doubt at its level."""
    return interval is not None and interval.low > 1.0
