"""What a sweep hands back (:class:`SweepReport`) and leaves in MLflow (the best config, the
search space, Optuna's plots)."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from perftune import _recovery
from perftune._load import busy_warning
from perftune.objectives import speedup
from perftune.stats import value_interval
from perftune.sweep.confirm import Measured, Verdict, versus
from perftune.sweep.context import SweepContext


@dataclass
class SweepReport:
    study_name: str
    workload: str
    framework: str
    device: dict[str, Any]
    objective: str
    direction: str
    unit: str
    trials: dict[str, int]
    baseline: dict[str, Any] | None
    best: dict[str, Any] | None
    speedup: float | None
    stored: bool
    best_config_id: int | None
    mlflow_run_id: str | None
    mlflow_experiment_id: str | None
    failures: list[dict[str, Any]]
    duration_s: float
    sweep_id: int | None = None
    #: The batch-size probe's result (``max_batch_size`` bound, sizes tried), when it ran.
    batch_probe: dict[str, Any] | None = None
    #: A spooling tracker's account (``pending`` events left in ``spool``, ``max_call_s``...).
    tracking: dict[str, Any] | None = None
    #: Stopped by a cancel request: no confirmation round, nothing stored.
    cancelled: bool = False
    #: What the user should know about the result (e.g. searched knobs the code never read).
    warnings: list[str] = field(default_factory=list)
    #: Stored configs a new study tried first (:func:`perftune.sweep.warm.warm_summary`): enqueued,
    #: sources, best_trial_warm, first_better_trial, trials_to_match, saved_trials,
    #: saved_at_least; None when none was.
    warm_start: dict[str, Any] | None = None
    #: Why the search ended before ``--trials`` (``{"reason": "patience", "after_trials": n}``).
    stopped_early: dict[str, Any] | None = None
    #: What the sweep cost and when it pays back (:func:`payback`).
    cost: dict[str, Any] | None = None
    #: How the search went (:meth:`~perftune.sweep.policy.SearchPolicy.describe`): the policy and,
    #: for the factored search, its stages.
    search: dict[str, Any] | None = None
    #: The speedup's 95% confidence interval (``estimate``, ``low``, ``high``, ``n``, ``level``,
    #: ``half_width``) from the confirmation's paired rounds; None with fewer than two.
    speedup_interval: dict[str, float] | None = None
    #: Paired rounds the confirmation ran (adaptive: until the speedup is known to ±10%).
    confirm_rounds: int = 0
    #: The finished sweep whose stored result this is (``sweep_id``, ``finished_at``): a rerun
    #: that found nothing left to search ran nothing (``--confirm-again`` confirms again).
    already_complete: dict[str, Any] | None = None
    #: An inference sweep's limits, the model it served, and (when no config met them) the
    #: ``closest`` trial: :func:`inference_summary`.
    inference: dict[str, Any] | None = None
    #: Several objectives: the confirmed Pareto front (:meth:`.pareto.Front.to_dict`) and its
    #: stored record's id; ``best``/``speedup`` stay None (no single best).
    front: dict[str, Any] | None = None
    front_id: int | None = None
    #: When the default stayed the best: the closest candidate (:func:`challenger`), with its
    #: ``speedup`` (below 1) and ``speedup_interval`` over the baseline.
    challenger: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def payback(duration_s: float, speedup: float | None) -> dict[str, float | None]:
    """What the sweep cost and when it pays for itself: ``sweep_s`` (its wall seconds),
    ``saved_per_training_hour_s`` (training seconds an hour of training at the old speed saves
    at ``speedup``: ``3600 * (1 - 1/speedup)``) and ``payback_training_hours`` (hours of training
    until the savings equal the sweep's time). None for both without a speedup above 1."""
    if speedup is None or not speedup > 1:
        return {"sweep_s": duration_s, "saved_per_training_hour_s": None, "payback_training_hours": None}
    saved = 3600.0 * (1.0 - 1.0 / speedup)
    return {"sweep_s": duration_s, "saved_per_training_hour_s": saved,
            "payback_training_hours": duration_s / saved}  # fmt: skip


def side(m: Measured | None) -> dict[str, Any] | None:
    """A confirmed config (the baseline's, the best's) as the report shows it."""
    if m is None:
        return None
    shown = ("throughput_sps", "mfu", "achieved_tflops", "mfu_peak_source", "joules_per_sample",
             "avg_power_w", "energy_source", "peak_device_memory_mb", "peak_rss_mb", *INFERENCE_SHOWN)  # fmt: skip
    iv = value_interval(m.values)
    return {"label": m.label, "config": m.config, "trial_number": m.trial_number,
            "values": m.values, "failures": m.failures, "stats": m.stats,
            "interval": iv.to_dict() if iv else None, "dropped": m.dropped,
            "metrics": {k: m.metrics[k] for k in shown if k in m.metrics}}  # fmt: skip


def challenger(verdict: Verdict | None) -> dict[str, Any] | None:
    """The candidate closest to a baseline that stayed the best (:attr:`.Verdict.challenger`), as
    the report shows it, with its speedup and that speedup's interval from the paired rounds
    (None with fewer than two); None when a candidate won."""
    ch = verdict.challenger if verdict is not None else None
    if ch is None or not verdict.base.ok:
        return None
    iv = versus(verdict.base, ch, verdict.direction)
    ratio = speedup(verdict.base.stats["median"], ch.stats["median"], verdict.direction)
    return {**side(ch), "speedup": iv.estimate if iv else ratio, "speedup_interval": iv.to_dict() if iv else None}


#: What an inference config's report shows besides throughput: its latency distribution and
#: its quality against the trained fp32 model's.
INFERENCE_SHOWN = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "quality", "quality_reference",
                   "quality_drop", "requests")


def inference_summary(ctx: SweepContext, study) -> dict[str, Any] | None:
    """An inference sweep's limits and served model; with no trial within the limits, the
    ``closest`` one (the lowest p99 among those that ran, with why it missed)."""
    from optuna.trial import TrialState

    cfg = ctx.cfg
    if cfg.task != "inference":
        return None
    out: dict[str, Any] = {**cfg.limits, "request_rate": cfg.request_rate, "model_path": ctx.model_path}
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return out
    ran = [t for t in study.get_trials(deepcopy=False) if (t.user_attrs.get("metrics") or {}).get("p99_ms")]
    if ran:
        t = min(ran, key=lambda t: t.user_attrs["metrics"]["p99_ms"])
        out["closest"] = {"trial_number": t.number, "config": t.user_attrs.get("config"),
                          "missed": t.user_attrs.get("message"),
                          **{k: t.user_attrs["metrics"].get(k) for k in ("throughput_sps", *INFERENCE_SHOWN)}}  # fmt: skip
    return out


def limits_warning(summary: dict[str, Any] | None) -> list[str]:
    """The warning of an inference sweep whose limits no config met."""
    if not summary or "closest" not in summary:
        return []
    c = summary["closest"]
    return [f"no config met the limits (p99 <= {summary['slo_p99_ms']} ms, quality drop <= "
            f"{summary['max_quality_drop']}): nothing stored; the closest was trial "
            f"{c['trial_number']} ({c['missed']})"]


def report_warnings(ctx: SweepContext, study, verdict: Verdict | None) -> list[str]:
    """What the user should know before trusting the result: knobs never read, a speedup not
    resolved by the confirmation, trials measured on a busy machine (those this process ran:
    every stage's and the confirmation's), limits no config met."""
    out = limits_warning(inference_summary(ctx, study)) + unread_knobs_warning(study, ctx.space)
    if verdict is not None and verdict.winner is not None and verdict.winner is not verdict.base:
        iv = verdict.speedup
        if iv is not None and not verdict.resolved:
            out.append(f"the speedup is not resolved: its 95% interval {iv.low:.2f}-{iv.high:.2f}x "
                       f"after {verdict.rounds} paired rounds is wider than ±10%; rerun with more "
                       "--confirm-max-repeats or on a quieter machine before relying on it")  # fmt: skip
        if iv is not None and iv.low <= 1.0:
            out.append("the best config is not faster than the default beyond doubt (its "
                       "speedup's 95% interval reaches 1x)")  # fmt: skip
    busy = busy_warning(ctx.loads, ctx.device.cores)
    return out + ([busy] if busy else [])


def unread_knobs_warning(study, space) -> list[str]:
    """A warning naming the searched knobs that no trial's training code read (``trial.config``
    and the helpers that apply knobs record what they use): the sweep varied them blindly."""
    read: set[str] = set()
    offered: set[str] = set()  # knobs some measured trial's config had (active ones)
    for t in study.get_trials(deepcopy=False):
        knobs = t.user_attrs.get("knobs_read")
        if knobs is not None:
            read.update(knobs)
            offered.update(t.params)
    unread = [name for name in space.searched() if name in offered and name not in read]
    if not unread:
        return []
    return [f"searched knobs the training code never read: {', '.join(unread)}; they cannot "
            "have changed anything (apply them, e.g. with trial.optimizer() / trial.prepare() / "
            "trial.autocast(), or hold them with a --space file)"]


def artifacts(ctx: SweepContext, study, verdict: Verdict | None, report: dict) -> None:
    """The sweep's MLflow artifacts: the best config (YAML), ``sweep.json`` (what the sweep was
    and found: the structured data its run's tags leave out), the search space, the plots."""
    import yaml

    base, winner = (verdict.base, verdict.winner) if verdict else (None, None)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sweep.json")
        with open(path, "w") as f:
            json.dump({"study": ctx.study_name, "workload": ctx.workload["name"], "framework": ctx.cfg.framework,
                       "device": ctx.device.to_dict(), "objective": ctx.cfg.objective_key,
                       "direction": ctx.objective.direction, "unit": ctx.objective.unit,
                       "best_config": winner.config if winner else None, "owner": _recovery.owner(),
                       **report}, f, indent=2, default=str)  # fmt: skip
        ctx.tracker.log_artifact(path)
        if winner is not None:
            path = os.path.join(tmp, "best_config.yaml")
            with open(path, "w") as f:
                yaml.safe_dump({"workload": ctx.workload["name"], "framework": ctx.cfg.framework,
                                "device": ctx.device.to_dict(), "objective": ctx.cfg.objective_key,
                                "config": winner.config, "value": winner.stats,
                                "baseline": base.stats if base else None,
                                "speedup": report.get("speedup"),
                                "speedup_interval": report.get("speedup_interval")}, f, sort_keys=False)  # fmt: skip
            ctx.tracker.log_artifact(path)
        path = os.path.join(tmp, "search_space.json")
        with open(path, "w") as f:
            json.dump(ctx.space.to_dict(), f, indent=2, default=str)
        ctx.tracker.log_artifact(path)
        plots(ctx, study, tmp)


def plots(ctx: SweepContext, study, tmp: str) -> None:
    """Optuna's plots of the study, as HTML artifacts; a plot that fails is a failure noted."""
    import optuna.visualization as vis
    from optuna.trial import TrialState

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if ctx.multi:  # the front; the other plots take one objective (the primary's here)
        names = [f"{o.name} ({o.unit})" for o in ctx.objectives]
        figures = {"pareto_front": lambda s: vis.plot_pareto_front(s, target_names=names),
                   "optimization_history": lambda s: vis.plot_optimization_history(
                       s, target=lambda t: t.values[0], target_name=names[0])}  # fmt: skip
    else:
        figures = {"optimization_history": vis.plot_optimization_history,
                   "intermediate_values": vis.plot_intermediate_values}  # fmt: skip
    if complete >= 2 and not ctx.multi:
        figures["param_importances"] = vis.plot_param_importances
    for name, fn in figures.items():
        try:
            with warnings.catch_warnings():  # importance warns on small studies; fine here
                warnings.simplefilter("ignore")
                fig = fn(study)
            path = os.path.join(tmp, f"{name}.html")
            fig.write_html(path, include_plotlyjs=True, full_html=True)
            ctx.tracker.log_artifact(path, "plots")
        except Exception as exc:  # noqa: BLE001 - a plot is not worth failing a sweep
            ctx.failures.append({"trial": None, "cause": "plot", "message": f"{name}: {exc}"})
