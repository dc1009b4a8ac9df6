"""The confirmation round: re-measure the baseline and the top candidates of the search
``--confirm-repeats`` times each, and pick the winner by its median.

Its steps, each a function: :func:`candidates` (which configs), :func:`remeasure` (one repeat
of one candidate), :func:`log_candidate` (its MLflow run) and :func:`pick_winner`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tuner.objectives import summarize
from tuner.sweep.context import SweepContext
from tuner.sweep.mfu import add_mfu


@dataclass
class Measured:
    """A config re-measured in the confirmation round."""

    label: str
    config: dict[str, Any]
    values: list[float]
    trial_number: int | None = None
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.values) and not self.failures

    @property
    def stats(self) -> dict[str, float] | None:
        return summarize(self.values) if self.values else None


def confirm(ctx: SweepContext, study) -> tuple[Measured | None, Measured | None]:
    """Re-measure the baseline and the top ``--confirm-top`` distinct configs; return the
    baseline and the winner (None if no candidate measured cleanly)."""
    measured = candidates(ctx, study)
    repeats = ctx.cfg.confirm_repeats
    total = len(measured) * repeats
    i = 0
    for cand in measured:
        for r in range(repeats):
            i += 1
            remeasure(ctx, cand, r, i, total)
        log_candidate(ctx, cand)
    return measured[0], pick_winner(ctx, measured)


def candidates(ctx: SweepContext, study) -> list[Measured]:
    """The baseline first, then the best complete trials' distinct configs, best first."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete.sort(key=lambda t: t.value, reverse=ctx.objective.direction == "maximize")
    out: list[Measured] = [Measured("baseline", ctx.baseline, [])]
    seen = {json.dumps(ctx.baseline, sort_keys=True)}
    for t in complete:
        cfg = t.user_attrs.get("config") or t.params
        key = json.dumps(cfg, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        out.append(Measured(f"candidate-{t.number}", cfg, [], trial_number=t.number))
        if len(out) > ctx.cfg.confirm_top:
            break
    return out


def remeasure(ctx: SweepContext, cand: Measured, r: int, i: int, total: int) -> None:
    """Run repeat ``r`` (from 0) of ``cand``, the ``i``-th of ``total`` runs of the round, and
    record its value (or why it has none) on ``cand``."""
    ctx.progress("confirm", {"label": cand.label, "repeat": r + 1, "i": i, "total": total})
    seed = (ctx.cfg.seed or 0) + 1000 + r
    outcome = ctx.execute(ctx.request(cand.config, seed=seed, number=cand.trial_number,
                                      label=f"{cand.label}-r{r + 1}"))  # fmt: skip
    value = ctx.objective.value(outcome.metrics) if outcome.status == "ok" else None
    if value is None:
        cand.failures.append(outcome.cause or "not_reached")
    else:
        add_mfu(ctx, cand.config, outcome.metrics)
        cand.values.append(value)
        cand.metrics = outcome.metrics


def log_candidate(ctx: SweepContext, cand: Measured) -> None:
    """A candidate's MLflow run: its repeats, their median, spread and range."""
    stats = cand.stats
    ctx.tracker.log_trial(
        f"confirm-{cand.label}", cand.config,
        {"objective_median": stats["median"], "objective_spread": stats["spread"],
         "objective_min": stats["min"], "objective_max": stats["max"]} if stats else {},
        {"objective_repeat": list(enumerate(cand.values))},
        ctx.tags(phase="confirmation", candidate=cand.label,
                 optuna_trial_number=cand.trial_number,
                 failures=",".join(cand.failures) or None),
    )  # fmt: skip


def pick_winner(ctx: SweepContext, measured: list[Measured]) -> Measured | None:
    """The best median among the candidates (the baseline included) that never failed."""
    qualified = [c for c in measured if c.ok]
    if not qualified:
        return None
    pick = min if ctx.objective.direction == "minimize" else max
    return pick(qualified, key=lambda c: c.stats["median"])
