"""Several objectives (``--objective time-to-target,energy``): the confirmed Pareto front.

A multi-objective study's search is the ordinary one (each trial told all its values); then
:func:`confirm_front` re-measures the search's front (Optuna's ``best_trials``, at most
:data:`MAX_POINTS`) and the baseline in interleaved rounds (baseline, A, B, baseline, A, B...)
with paired seeds, and keeps the points no other confirmed point dominates (on the medians of
their rounds). :func:`store_front` stores that front for the key; :func:`pick` chooses one of
its points for a user (``perftune best --pick fastest|efficient|smallest|balanced`` or
``--weights time=1,energy=0.5``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from perftune.errors import UsageError
from perftune.objectives import median
from perftune.stats import value_interval

__all__ = ["Front", "FrontPoint", "confirm_front", "dominates", "non_dominated", "pick", "store_front"]

#: Front points re-measured at most (the search's front can be large; the baseline comes on top).
MAX_POINTS = 6
#: ``--pick`` names -> the objective whose best point they choose (None: balanced).
PICKS = {"fastest": None, "efficient": "energy", "smallest": "peak-memory", "balanced": None}
#: Short names ``--weights`` accepts for objectives.
ALIASES = {"time": "time-to-target", "memory": "peak-memory", "slo": "throughput-at-slo"}


@dataclass
class FrontPoint:
    """A config re-measured in the confirmation: its values (objective order) in each round."""

    label: str
    config: dict[str, Any]
    trial_number: int | None = None
    by_round: dict[int, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.by_round) and not self.failures

    @property
    def values(self) -> list[float]:
        """The median of each objective over the rounds."""
        rounds = list(self.by_round.values())
        return [median([r[i] for r in rounds]) for i in range(len(rounds[0]))]

    def intervals(self) -> list[list[float] | None]:
        rounds = list(self.by_round.values())
        out = []
        for i in range(len(rounds[0])):
            iv = value_interval([r[i] for r in rounds])
            out.append([iv.low, iv.high] if iv else None)
        return out

    def to_dict(self) -> dict[str, Any]:
        shown = {k: v for k, v in self.metrics.items() if isinstance(v, int | float | str | bool)}
        return {"label": self.label, "config": self.config, "trial_number": self.trial_number,
                "values": self.values, "intervals": self.intervals(), "rounds": len(self.by_round),
                "metrics": shown}  # fmt: skip


@dataclass
class Front:
    """The confirmed front: its points (non-dominated among the confirmed ones), every point
    measured (``measured``, the baseline first), the objectives' names, directions and units."""

    names: list[str]
    directions: list[str]
    units: list[str]
    points: list[FrontPoint]
    measured: list[FrontPoint]
    rounds: int

    def to_dict(self) -> dict[str, Any]:
        return {"objectives": self.names, "directions": self.directions, "units": self.units,
                "rounds": self.rounds, "points": [p.to_dict() for p in self.points],
                "dominated": [p.label for p in self.measured if p.ok and p not in self.points],
                "failed": {p.label: p.failures for p in self.measured if p.failures}}  # fmt: skip


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every objective and better on one."""
    signs = [1 if d == "minimize" else -1 for d in directions]
    no_worse = all(s * x <= s * y for s, x, y in zip(signs, a, b, strict=True))
    return no_worse and any(s * x < s * y for s, x, y in zip(signs, a, b, strict=True))


def non_dominated(values: list[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """The indices of the ``values`` no other one dominates (ties both kept)."""
    return [i for i, v in enumerate(values)
            if not any(dominates(w, v, directions) for j, w in enumerate(values) if j != i)]  # fmt: skip


def candidates(ctx, study) -> list[FrontPoint]:
    """The baseline, then the search's front (distinct configs), at most :data:`MAX_POINTS`,
    spread over the front (sorted by the first objective, evenly picked) when it is larger."""
    front = sorted(study.best_trials, key=lambda t: t.values[0] * (1 if ctx.objectives[0].direction == "minimize" else -1))
    if len(front) > MAX_POINTS:
        step = (len(front) - 1) / (MAX_POINTS - 1)
        front = [front[round(i * step)] for i in range(MAX_POINTS)]
    out, seen = [FrontPoint("baseline", ctx.baseline)], {json.dumps(ctx.baseline, sort_keys=True)}
    for t in front:
        config = t.user_attrs.get("config") or t.params
        key = json.dumps(config, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(FrontPoint(f"candidate-{t.number}", config, trial_number=t.number))
    return out


def confirm_front(ctx, study) -> Front:
    """Re-measure the front and the baseline in ``--confirm-repeats`` interleaved rounds; keep
    the non-dominated confirmed points; log each point's MLflow run."""
    points = candidates(ctx, study)
    rounds, i = ctx.cfg.confirm_repeats, 0
    for r in range(rounds):
        for n, point in enumerate(points):
            if point.failures:
                continue
            i += 1
            ctx.progress("confirm", {"label": point.label, "repeat": r + 1, "i": i, "total": rounds * len(points),
                                     "candidate": n + 1, "candidates": len(points)})  # fmt: skip
            remeasure(ctx, point, r)
    ok = [p for p in points if p.ok]
    keep = non_dominated([p.values for p in ok], [o.direction for o in ctx.objectives]) if ok else []
    front = Front([o.name for o in ctx.objectives], [o.direction for o in ctx.objectives],
                  [o.unit for o in ctx.objectives], [ok[i] for i in keep], points, rounds)  # fmt: skip
    for point in points:
        log_point(ctx, point, point in front.points)
    return front


def remeasure(ctx, point: FrontPoint, r: int) -> None:
    """Repeat ``r`` of ``point``: its values, or why it has none (a limit broken, a failure)."""
    started = time.time()
    outcome = ctx.execute(ctx.request(point.config, seed=(ctx.cfg.seed or 0) + 1000 + r,
                                      number=point.trial_number, label=f"{point.label}-r{r + 1}"))  # fmt: skip
    values = ctx.value(point.config, outcome.metrics) if outcome.status == "ok" else None
    broken = ctx.violations(outcome.metrics) if values is not None else {}
    if broken or values is None:
        point.failures.append(next(iter(broken)) if broken else outcome.cause or "not_reached")
        return
    point.by_round[r] = values
    point.metrics = {**outcome.metrics, "span_s": time.time() - started}


def log_point(ctx, point: FrontPoint, on_front: bool) -> None:
    """A confirmed point's MLflow run: each objective's median and interval."""
    metrics: dict[str, float] = {}
    if point.ok:
        for o, v, iv in zip(ctx.objectives, point.values, point.intervals(), strict=True):
            metrics[f"objective_{o.name}"] = v
            if iv:
                metrics[f"objective_{o.name}_low"], metrics[f"objective_{o.name}_high"] = iv
    now = int(time.time() * 1000)
    ctx.tracker.log_trial(
        f"confirm {point.label} {'on the front' if on_front else 'dominated' if point.ok else 'failed'}",
        point.config, metrics, {},
        ctx.tags(phase="confirmation", candidate=point.label, optuna_trial_number=point.trial_number,
                 pareto="front" if on_front else "dominated", failures=",".join(point.failures) or None),
        status="FAILED" if point.failures else "FINISHED", start_time=now, end_time=now,
    )  # fmt: skip


def store_front(ctx, front: Front | None, run_id: str | None, sweep_id: int) -> int | None:
    """Store the confirmed front for the key (replacing the stored one); its record's id."""
    if front is None or not front.points:
        return None
    rec = ctx.store.save_front(
        workload=ctx.workload["name"], framework=ctx.cfg.framework, device_fingerprint=ctx.device.fingerprint,
        objective=ctx.cfg.objective_key, names=front.names, directions=front.directions, units=front.units,
        points=[p.to_dict() for p in front.points], mlflow_run_id=run_id, sweep_id=sweep_id,
    )  # fmt: skip
    return rec.id


def parse_weights(text: str, names: Sequence[str]) -> list[float]:
    """``time=1,energy=0.5`` as one weight per objective of ``names`` (unnamed ones 0)."""
    weights = dict.fromkeys(names, 0.0)
    for part in (p.strip() for p in text.split(",")):
        key, eq, raw = part.partition("=")
        name = ALIASES.get(key.strip(), key.strip())
        if not eq or name not in weights:
            raise UsageError(f"--weights {text}: {part!r} is not OBJECTIVE=WEIGHT for one of {', '.join(names)}")
        try:
            weight = float(raw)
        except ValueError:
            raise UsageError(f"--weights {text}: {raw.strip()!r} is not a number") from None
        if not 0 <= weight <= 1e6:
            raise UsageError(f"--weights {text}: a weight must be >= 0 and <= 1000000, got {raw.strip()}")
        weights[name] = weight
    if not any(weights.values()):
        raise UsageError(f"--weights {text}: give at least one weight above 0")
    return [weights[n] for n in names]


def pick(names: Sequence[str], directions: Sequence[str], points: Sequence[dict[str, Any]],
         choice: str | None = None, weights: str | None = None) -> int:  # fmt: skip
    """The index of the front point ``choice`` (``--pick``) or ``weights`` (``--weights``)
    selects; balanced when neither is given.

    ``fastest``: the best on the primary objective; ``efficient``: on energy; ``smallest``: on
    peak memory; ``balanced``: the least summed shortfall, each objective scaled to [0, 1] over
    the front (0 its best point, 1 its worst); ``weights``: that sum weighted."""
    if choice is not None and weights is not None:
        raise UsageError("--pick and --weights: give one of them")
    if choice is not None and choice not in PICKS:
        raise UsageError(f"--pick {choice}: choose {', '.join(PICKS)}")
    target = names[0] if choice == "fastest" else PICKS.get(choice or "balanced")
    if target is not None:
        if target not in names:
            raise UsageError(f"--pick {choice}: the front has no {target} objective ({', '.join(names)})")
        i, sign = names.index(target), 1 if directions[names.index(target)] == "minimize" else -1
        return min(range(len(points)), key=lambda k: sign * points[k]["values"][i])
    w = parse_weights(weights, names) if weights is not None else [1.0] * len(names)
    return min(range(len(points)), key=lambda k: sum(wi * s for wi, s in zip(w, _shortfalls(directions, points, k), strict=True)))


def _shortfalls(directions: Sequence[str], points: Sequence[dict[str, Any]], k: int) -> list[float]:
    """Point ``k``'s distance from the front's best on each objective, as a share of the
    front's range there."""
    out = []
    for i, d in enumerate(directions):
        vals = [p["values"][i] for p in points]
        lo, hi = min(vals), max(vals)
        best = lo if d == "minimize" else hi
        out.append(abs(points[k]["values"][i] - best) / (hi - lo) if hi > lo else 0.0)
    return out
