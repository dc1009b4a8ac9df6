"""The confirmation round: re-measure the baseline and the top candidates of the search in
interleaved rounds, and pick the winner with a confidence interval on its speedup.

Round ``r`` runs every candidate once with the seed ``base + r`` (baseline, A, B, baseline, A,
B, ...), so that a seed's luck and the machine's drift hit all candidates alike and each round
gives *paired* measurements (:mod:`perftune.stats`). After ``--confirm-repeats`` rounds, a
candidate slower than the leader beyond doubt is dropped, and the rounds go on until the
leader's speedup over the baseline is known to ±10% or ``--confirm-max-repeats`` rounds ran.

Steps, each a function: :func:`candidates` (which configs), :func:`race` (the rounds, on any
``measure`` function: testable without training), :func:`remeasure` (one repeat of one
candidate) and :func:`log_candidate` (its MLflow run).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perftune.objectives import speedup, summarize
from perftune.stats import (
    MIN_REPEATS,
    TARGET_HALF_WIDTH,
    Interval,
    clearly_better,
    precise_enough,
    speedup_interval,
    value_interval,
)
from perftune.sweep.context import SweepContext
from perftune.sweep.mfu import add_mfu
from perftune.sweep.repeats import config_key, ranked
from perftune.sweep.search import finished, format_value

#: Rounds at most when ``--confirm-max-repeats`` is not given (and ``--confirm-repeats`` >= 3).
DEFAULT_MAX_ROUNDS = 6


@dataclass
class Measured:
    """A config re-measured in the confirmation round: its value in each round it ran."""

    label: str
    config: dict[str, Any]
    trial_number: int | None = None
    by_round: dict[int, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: Why it stopped being measured before the last round (slower than the leader beyond doubt).
    dropped: str | None = None
    #: When its first repeat started and its last one ended (epoch s).
    span: tuple[float, float] | None = None

    @property
    def values(self) -> list[float]:
        return [self.by_round[r] for r in sorted(self.by_round)]

    @property
    def ok(self) -> bool:
        return bool(self.by_round) and not self.failures

    @property
    def stats(self) -> dict[str, float] | None:
        return summarize(self.values) if self.by_round else None


@dataclass
class Verdict:
    """What the confirmation round found: the ``winner`` (None: no candidate qualified), how many
    times better than ``base`` it is with its interval, and whether that is ``resolved``."""

    base: Measured
    winner: Measured | None
    candidates: list[Measured]
    rounds: int
    speedup: Interval | None
    value: Interval | None
    direction: str

    @property
    def resolved(self) -> bool:
        return precise_enough(self.speedup)

    @property
    def gain(self) -> float | None:
        """The speedup: the interval's estimate, or the ratio of medians after one round."""
        if self.speedup is not None:
            return self.speedup.estimate
        if self.winner is None or not self.base.ok:
            return None
        return speedup(self.base.stats["median"], self.winner.stats["median"], self.direction)

    @property
    def challenger(self) -> Measured | None:
        """When the baseline won: the candidate closest to it (the best median of those whose
        repeats all ran), so that the report can say by how much, and how surely, it lost."""
        if self.winner is not self.base:
            return None
        others = [c for c in self.candidates if c is not self.base and c.ok]
        return _leader(others, self.direction) if others else None


def paired(a: Measured, b: Measured) -> tuple[list[float], list[float]]:
    """``a``'s and ``b``'s values in the rounds both completed (same seed, same round)."""
    rounds = sorted(a.by_round.keys() & b.by_round.keys())
    return [a.by_round[r] for r in rounds], [b.by_round[r] for r in rounds]


def versus(base: Measured, other: Measured, direction: str) -> Interval | None:
    """How many times better ``other`` is than ``base``, from their paired rounds (None for the
    baseline itself: a [1, 1] interval would claim a certainty nothing measured)."""
    if other is base:
        return None
    return speedup_interval(*paired(base, other), direction)


def race(
    candidates: list[Measured],
    measure: Callable[[Measured, int], None],
    direction: str,
    *,
    min_rounds: int,
    max_rounds: int,
    target: float = TARGET_HALF_WIDTH,
) -> Verdict:
    """Measure ``candidates`` (the baseline first) in interleaved rounds until the leader's
    speedup over the baseline is known to ±``target`` or ``max_rounds`` ran.

    ``measure(candidate, round)`` runs one repeat with the round's seed and records its value in
    ``candidate.by_round`` or a cause in ``candidate.failures``. A candidate that failed is not
    run again; from ``min_rounds`` on, one slower than the leader beyond doubt is dropped."""
    base, active = candidates[0], list(candidates)
    rounds = 0
    for r in range(max_rounds):
        for cand in active:
            measure(cand, r)
        rounds = r + 1
        active = [c for c in active if c.ok]
        if rounds < min_rounds or not active:
            continue
        leader = _leader(active, direction)
        for cand in active:
            if cand is not base and cand is not leader and clearly_better(versus(cand, leader, direction)):
                cand.dropped = f"slower than {leader.label} beyond doubt after {rounds} rounds"
        active = [c for c in active if c.dropped is None]
        challengers = [c for c in active if c is not base]
        if not challengers or not base.ok or precise_enough(
            versus(base, _leader(challengers, direction), direction), target
        ):
            break
    qualified = [c for c in candidates if c.ok and c.dropped is None]
    winner = _leader(qualified, direction) if qualified else None
    gain = versus(base, winner, direction) if winner is not None and base.ok else None
    return Verdict(base, winner, candidates, rounds, gain,
                   value_interval(winner.values) if winner is not None else None, direction)  # fmt: skip


def _leader(cands: list[Measured], direction: str) -> Measured:
    pick = min if direction == "minimize" else max
    return pick(cands, key=lambda c: c.stats["median"])


def max_rounds(cfg) -> int:
    """``--confirm-max-repeats``, else: no extra rounds below :data:`MIN_REPEATS` (too few for an
    interval to steer by), up to :data:`DEFAULT_MAX_ROUNDS` from there."""
    if cfg.confirm_max_repeats is not None:
        return max(cfg.confirm_max_repeats, cfg.confirm_repeats)
    return cfg.confirm_repeats if cfg.confirm_repeats < MIN_REPEATS else max(cfg.confirm_repeats, DEFAULT_MAX_ROUNDS)


def confirm(ctx: SweepContext, study) -> Verdict:
    """Race the baseline and the top ``--confirm-top`` distinct configs (see the module
    docstring) and log each candidate's MLflow run."""
    measured = candidates(ctx, study)
    cap = max_rounds(ctx.cfg)
    runs = {"i": 0}

    def measure(cand: Measured, r: int) -> None:
        runs["i"] += 1
        ctx.progress("confirm", {"label": cand.label, "repeat": r + 1, "i": runs["i"],
                                 "total": len(measured) * cap, "candidate": measured.index(cand) + 1,
                                 "candidates": len(measured)})  # fmt: skip
        remeasure(ctx, cand, r)

    verdict = race(measured, measure, ctx.objective.direction,
                   min_rounds=ctx.cfg.confirm_repeats, max_rounds=cap)  # fmt: skip
    for cand in measured:
        log_candidate(ctx, cand, verdict)
    return verdict


def candidates(ctx: SweepContext, study) -> list[Measured]:
    """The baseline first, then the search's best distinct configs (by their mean over the
    seeds they ran with, :func:`~.repeats.ranked`), best first."""
    out: list[Measured] = [Measured("baseline", ctx.baseline)]
    seen = {config_key(ctx.baseline)}
    for _, runs in ranked(finished(study), ctx.objective.direction):
        first = min(runs, key=lambda t: t.number)
        cfg = first.user_attrs.get("config") or first.params
        if config_key(cfg) in seen:
            continue
        seen.add(config_key(cfg))
        out.append(Measured(f"candidate-{first.number}", cfg, trial_number=first.number))
        if len(out) > ctx.cfg.confirm_top:
            break
    return out


def remeasure(ctx: SweepContext, cand: Measured, r: int) -> None:
    """Run repeat ``r`` (from 0) of ``cand`` and record its value (or why it has none) on ``cand``."""
    seed = (ctx.cfg.seed or 0) + 1000 + r
    started = time.time()
    outcome = ctx.execute(ctx.request(cand.config, seed=seed, number=cand.trial_number,
                                      label=f"{cand.label}-r{r + 1}"))  # fmt: skip
    cand.span = (cand.span[0] if cand.span else started, time.time())
    value = ctx.objective.value(outcome.metrics) if outcome.status == "ok" else None
    broken = ctx.violations(outcome.metrics) if value is not None else {}
    if broken:  # an inference config over its latency or quality limit on this repeat
        cand.failures.append(next(iter(broken)))
        cand.metrics = outcome.metrics
    elif value is None:
        cand.failures.append(outcome.cause or "not_reached")
    else:
        add_mfu(ctx, cand.config, outcome.metrics)
        cand.by_round[r] = value
        cand.metrics = outcome.metrics


def log_candidate(ctx: SweepContext, cand: Measured, verdict: Verdict) -> None:
    """A candidate's MLflow run, from its first repeat to its last: its repeats, their median
    (also as ``objective``, the runs table's column), spread and range, and its speedup over the
    baseline with the interval (paired rounds). Named ``confirm <label> <median>``; FAILED
    when a repeat failed."""
    stats = cand.stats
    metrics = {"objective": stats["median"], "objective_median": stats["median"],
               "objective_spread": stats["spread"], "objective_min": stats["min"],
               "objective_max": stats["max"]} if stats else {}  # fmt: skip
    gain = versus(verdict.base, cand, ctx.objective.direction) if verdict.base.ok and cand.ok else None
    if gain is not None:
        metrics |= {"speedup": gain.estimate, "speedup_low": gain.low, "speedup_high": gain.high}
    value = format_value(stats["median"], ctx.objective.unit) if stats else "failed"
    start, end = cand.span or (time.time(), time.time())
    ctx.tracker.log_trial(
        f"confirm {cand.label} {value}", cand.config, metrics,
        {"objective_repeat": list(enumerate(cand.values))},
        ctx.tags(phase="confirmation", candidate=cand.label,
                 optuna_trial_number=cand.trial_number, dropped=cand.dropped,
                 failures=",".join(cand.failures) or None),
        status="FAILED" if cand.failures else "FINISHED", start_time=int(start * 1000), end_time=int(end * 1000),
    )  # fmt: skip
