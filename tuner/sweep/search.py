"""The search phase: ask the sampler for configs and run each as an isolated trial, telling
Optuna and logging MLflow, until the study has ``--trials`` counted trials (in all workers)."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any

from perftune import _recovery
from perftune._optuna import heartbeat
from perftune.backends import TrialOutcome, get_backend
from perftune.errors import InvalidConfig, UsageError
from perftune.sweep.context import SweepContext
from perftune.sweep.mfu import add_mfu
from perftune.sweep.repeats import enqueue_repeats

MAX_CONSECUTIVE_INVALID = 50
#: Trials that do not count towards ``--trials``: configs the constraints rejected, and trials
#: cut short by Ctrl-C / SIGTERM (they are run again on resume).
NOT_COUNTED = ("invalid", "interrupted", "surplus")
#: Failure causes that make a config infeasible, with the constraint it violates: such a trial is
#: PRUNED with that constraint set, so the samplers (TPE, GP, NSGA) learn to avoid the region. A
#: FAIL they ignore: the same failing region would be proposed again and again.
INFEASIBLE = {"oom": "fits_in_memory", "crash": "runs_cleanly", "timeout": "ends_in_time",
              "diverged": "stays_finite", "over_slo": "meets_slo", "quality_drop": "keeps_quality"}  # fmt: skip
#: The infeasible causes that are not failures: an inference trial that ran but broke a limit
#: (``--slo-p99-ms``, ``--max-quality-drop``; :meth:`~perftune.objectives.Objective.violations`).
OVER_LIMIT = {"slo": "over_slo", "quality": "quality_drop"}
#: How many of the leading configs get seed repeats (:mod:`.repeats`) when a policy asks for them.
LEADERS = 3
#: A trial's MLflow run status by its state (``FAIL`` includes the infeasible causes): what
#: failed looks failed, what was cut short or rejected looks killed.
RUN_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}


def run_trials(ctx: SweepContext, study, deadline: float | None) -> dict[str, Any] | None:
    """Run trials until the study has its total (or the deadline, a cancel, an exhausted grid,
    or ``--patience``). Returns why it stopped early (``{"reason": "patience", "after_trials":
    n}``) or None."""
    cfg = ctx.cfg
    done = len(finished(study))
    ctx.progress("start", {"total": cfg.trials, "done": done, "stage": ctx.stage,
                           "unit": ctx.objective.unit})  # fmt: skip
    #: Why each config rejected since the last trial that ran was rejected (a list each).
    rejected: list[list[str]] = []
    sampler = study.sampler
    while _started(study) < cfg.trials or _wait_for_others(ctx, study):
        if deadline is not None and time.monotonic() >= deadline:
            break
        if ctx.should_stop():
            ctx.cancelled = True
            break
        if hasattr(sampler, "is_exhausted") and sampler.is_exhausted(study):
            break
        _recovery.fail_stale(study, cfg.grace_s, cfg.max_retry)  # dead workers' trials
        trial = study.ask()
        _recovery.claim(trial)  # user attrs worker (host:pid) and worker_process
        if _surplus(ctx, study, trial):  # only when workers asked at the same moment
            break
        if _duplicate_repeat(study, trial):  # enqueued twice by workers at the same moment
            continue
        try:
            last = one_trial(ctx, study, trial, rejected)
        except BaseException as exc:
            # Leave nothing RUNNING: whatever stopped us is recorded on the trial.
            fail_if_running(study, trial, exc)
            raise
        if last is not None:
            if ctx.leader_seeds > 1 and not ctx.multi:
                enqueue_repeats(study, finished(study), ctx.objective.direction, LEADERS, ctx.leader_seeds,
                                room=cfg.trials - _started(study))  # fmt: skip
            done = len(finished(study))
            best = None
            with contextlib.suppress(ValueError, RuntimeError):  # none yet; several objectives
                best = study.best_value
            ctx.progress("trial", {"done": done, "best": best, **last})
            if cfg.patience and stalled(study, cfg.patience, ctx.objective.direction):
                return {"reason": "patience", "after_trials": done}
    return None


def stalled(study, patience: int, direction: str, min_gain: float = 0.01) -> bool:
    """The last ``patience`` COMPLETE trials (in trial-number order) each improved the best
    value before them by less than ``min_gain`` (relative; worse ones count too). The first
    complete trial sets the best, so it takes ``patience + 1`` of them."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    sign = 1 if direction == "minimize" else -1
    best, streak = None, 0
    for t in sorted(trials, key=lambda t: t.number):
        value = sign * t.value
        if best is None:
            best = value
            continue
        if best - value >= min_gain * abs(best) and value < best:
            streak = 0
        else:
            streak += 1
        best = min(best, value)
    return streak >= patience


def one_trial(ctx: SweepContext, study, trial, rejected: list[list[str]]) -> dict[str, Any] | None:
    """Sample, run, tell and log one trial. Returns what the progress shows of it (number,
    state, value, cause, wall_s), or None if it does not count towards --trials."""
    from optuna.trial import TrialState

    cfg = ctx.cfg
    config = ctx.space.sample(trial)
    config = trial.user_attrs.get("repeat_config") or config  # a leader's next seed (.repeats)
    trial.set_user_attr("config", config)
    violations = ctx.space.violations(config)
    reasons = [f"constraint {v!r}" for v in violations]
    if not violations:
        try:
            get_backend(cfg.framework).check_config(config, ctx.device.to_dict())
        except InvalidConfig as exc:
            violations, reasons = [str(exc)], [_backend_said(ctx, str(exc))]
    if violations:
        trial.set_user_attr("cause", "invalid")
        trial.set_user_attr("message", "; ".join(violations))
        study.tell(trial, state=TrialState.PRUNED)  # the sampler learns to avoid it
        log_invalid(ctx, trial.number, config, "; ".join(reasons))
        count_invalid(ctx, rejected, reasons)
        return None

    def on_report(step: int, value: float) -> bool:
        if ctx.multi:  # Optuna prunes single-objective studies only
            return False
        trial.report(value, ctx.pruner_step(config, step))
        return trial.should_prune()

    request = ctx.request(config, seed=(cfg.seed or 0) + trial.user_attrs.get("repeat", 0), number=trial.number,
                          label=f"trial-{trial.number}")  # fmt: skip
    request.budget_s = ctx.trial_budget(study)
    ctx.progress("running", {"number": trial.number, "baseline": bool(trial.user_attrs.get("baseline")),
                             "i": len(finished(study)) + 1, "total": cfg.trials})  # fmt: skip
    started = time.time()
    with heartbeat(trial, ctx.storage):
        outcome = ctx.execute(request, on_report)
    value = ctx.value(config, outcome.metrics) if outcome.status == "ok" else None
    if outcome.status == "ok":
        add_mfu(ctx, config, outcome.metrics)
    broken = ctx.violations(outcome.metrics) if value is not None else {}
    if broken:  # it ran, but outside the limits: infeasible, and not the best whatever its value
        state, note, value = TrialState.PRUNED, OVER_LIMIT[next(iter(broken))], None
        for limit in broken:
            trial.set_constraint(INFEASIBLE[OVER_LIMIT[limit]], 1.0)
        trial.set_user_attr("cause", note)
        trial.set_user_attr("infeasible", True)
        trial.set_user_attr("message", "; ".join(broken.values()))
    elif outcome.status == "failed" and outcome.cause in INFEASIBLE:
        state, note = TrialState.PRUNED, outcome.cause
        trial.set_constraint(INFEASIBLE[note], 1.0)
        trial.set_user_attr("cause", note)
        trial.set_user_attr("infeasible", True)
        trial.set_user_attr("message", outcome.message)
        ctx.failures.append({"trial": trial.number, "cause": note,
                             "message": outcome.message, "config": config})  # fmt: skip
    elif outcome.status == "failed":
        state, note = TrialState.FAIL, outcome.cause
        trial.set_user_attr("cause", outcome.cause)
        trial.set_user_attr("message", outcome.message)
        ctx.failures.append({"trial": trial.number, "cause": outcome.cause,
                             "message": outcome.message, "config": config})  # fmt: skip
    elif value is None:
        state = TrialState.PRUNED
        note = "pruned" if outcome.status == "pruned" else "not_reached"
        trial.set_user_attr("outcome", note)
    else:
        state, note = TrialState.COMPLETE, None
    scalars = {k: v for k, v in outcome.metrics.items()
               if isinstance(v, int | float | bool) or v is None}  # fmt: skip
    trial.set_user_attr("metrics", scalars)
    if outcome.knobs_read is not None:
        trial.set_user_attr("knobs_read", sorted({*outcome.knobs_read, *ctx.template_knobs}))
    trial.set_user_attr("wall_s", outcome.wall_s)
    if state == TrialState.COMPLETE:
        study.tell(trial, value)
    else:
        study.tell(trial, state=state)
    log_trial(ctx, trial.number, config, outcome, value,
              "FAIL" if note in INFEASIBLE and not broken else state.name, note, started=started)  # fmt: skip
    if outcome.usage:  # the training code is unusable as it is (it measured nothing)
        what = "the command" if cfg.command else f"--workload {ctx.spec}"
        raise UsageError(f"{what}: {outcome.message}")
    if note in NOT_COUNTED:  # the backend rejected the config
        count_invalid(ctx, rejected, [_backend_said(ctx, outcome.message or note)])
        return None
    rejected.clear()
    return {"number": trial.number, "state": state.name, "value": value, "cause": note,
            "wall_s": outcome.wall_s}  # fmt: skip


def _backend_said(ctx: SweepContext, message: str) -> str:
    return f"the {ctx.cfg.framework} backend ({message})"


def count_invalid(ctx: SweepContext, rejected: list[list[str]], reasons: list[str]) -> None:
    """Count a config rejected before it could run (told to Optuna already, as ``invalid``:
    it does not count towards ``--trials``). The ``MAX_CONSECUTIVE_INVALID``-th in a row
    stops the sweep with a UsageError naming what rejected the most of them: a constraint
    (the search space is at fault) or the backend (the workload is)."""
    rejected.append(reasons)
    if len(rejected) < MAX_CONSECUTIVE_INVALID:
        return
    counts = Counter(r for rs in rejected for r in rs)
    reason, times = counts.most_common(1)[0]
    subject = f"--workload {ctx.spec}"
    if reason.startswith("constraint "):
        subject = f"search space {ctx.space.name}"
    raise UsageError(f"{subject}: {len(rejected)} configs in a row were rejected, "
                     f"{times} of them by {reason}")  # fmt: skip


def format_value(value: float, unit: str) -> str:
    """An objective value as run names show it: ``3.91 s``, ``1,234 samples/s``."""
    return f"{value:,.0f} {unit}" if abs(value) >= 1000 else f"{value:.3g} {unit}"


def trial_run_name(ctx: SweepContext, number: int | None, state: str, note: str | None,
                   value: float | None) -> str:  # fmt: skip
    """What a trial's run is called in the MLflow UI: its number, how it ended and its value,
    e.g. ``trial 5 complete 3.91 s``, ``trial 2 failed: oom``, ``trial 3 pruned``,
    ``trial 7 invalid`` (``throughput trial 1 ...`` in the factored search's first stage)."""
    if isinstance(value, list):
        outcome = "complete " + ", ".join(format_value(v, o.unit) for o, v in zip(ctx.objectives, value, strict=True))
    elif value is not None:
        outcome = f"complete {format_value(value, ctx.objective.unit)}"
    elif state == "FAIL" and note != "invalid":
        outcome = f"failed: {note}"
    else:
        outcome = (note or state.lower()).replace("_", " ")
    prefix = "throughput trial" if ctx.stage == "throughput" else "trial"  # stage 1: a study of its own
    return f"{prefix} {number} {outcome}"


def log_invalid(ctx: SweepContext, number: int, config: dict[str, Any], reason: str) -> None:
    """A config rejected before it ran (by a constraint or the backend's check): a KILLED run
    of phase ``invalid``, tagged ``perftune.invalid`` with the reason."""
    now = int(time.time() * 1000)
    ctx.tracker.log_trial(
        trial_run_name(ctx, number, "PRUNED", "invalid", None), config, {}, {},
        ctx.tags(trial_state="PRUNED", outcome="invalid", optuna_trial_number=number, phase="invalid",
                 **{"perftune.invalid": reason[:500]}),
        status="KILLED", start_time=now, end_time=now,
    )  # fmt: skip


def log_trial(ctx: SweepContext, number: int | None, config: dict[str, Any], outcome: TrialOutcome,
              value: float | None, state: str, note: str | None, phase: str = "search",
              started: float | None = None) -> None:  # fmt: skip
    """A trial that ran, as a nested run from ``started`` (epoch s; default: ``outcome.wall_s``
    before now) to now, named by :func:`trial_run_name`, its status by :data:`RUN_STATUS`
    (KILLED for the uncounted: a config the backend rejected, an interrupted trial)."""
    metrics = dict(outcome.metrics)
    if isinstance(value, list):  # several objectives: one metric each
        metrics.update({f"objective_{o.name}": v for o, v in zip(ctx.objectives, value, strict=True)})
    elif value is not None:
        metrics["objective"] = value
    if outcome.wall_s is not None:
        metrics["trial_wall_s"] = outcome.wall_s
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in outcome.curves.get("val_metric", []):
        curves.setdefault("val_metric", []).append((int(row[0]), row[2]))
        curves.setdefault("train_loss", []).append((int(row[0]), row[3]))
        curves.setdefault("train_time_s", []).append((int(row[0]), row[1]))
    for row in outcome.curves.get("throughput_window", []):
        curves.setdefault("window_throughput_sps", []).append((int(row[0]), row[1]))
    end = time.time()
    start = started if started is not None else end - (outcome.wall_s or 0.0)
    status = "KILLED" if note in NOT_COUNTED else RUN_STATUS.get(state, "FINISHED")
    ctx.tracker.log_trial(
        trial_run_name(ctx, number, state, note, value), config, metrics, curves,
        ctx.tags(trial_state=state, failure_cause=note if state == "FAIL" else None,
                 outcome=note, optuna_trial_number=number, phase=phase,
                 energy_source=metrics.get("energy_source"),
                 mfu_peak_source=metrics.get("mfu_peak_source"),
                 failure_message=(outcome.message or "")[:500] if state == "FAIL" else None,
                 **({"perftune.invalid": (outcome.message or "")[:500]} if note == "invalid" else {})),
        status=status, start_time=int(start * 1000), end_time=int(end * 1000),
    )  # fmt: skip


def finished(study) -> list:
    """Trials that count towards ``--trials``. Not counted: configs rejected before running,
    interrupted trials, and trials whose worker died (FAIL without a cause: failed by
    ``fail_stale_trials`` and retried as a new trial)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return [t for t in study.get_trials(deepcopy=False, states=done)
            if t.user_attrs.get("cause") not in NOT_COUNTED
            and not (t.state == TrialState.FAIL and "cause" not in t.user_attrs)]  # fmt: skip


def _started(study) -> int:
    """Trials that count towards ``--trials``, finished or running in any worker."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return len(finished(study)) + len(running)


def _wait_for_others(ctx: SweepContext, study) -> bool:
    """All trials are handed out: wait while other workers' trials run (a dead worker's
    trial is failed, after the grace period or at once on this machine, and retried here).
    True if there is more to do."""
    from optuna.trial import TrialState

    storage = study._storage
    if not (hasattr(storage, "is_heartbeat_enabled") and storage.is_heartbeat_enabled()):
        return False  # without heartbeats a dead worker's trial cannot be told from a slow one
    while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        time.sleep(min(2.0, ctx.cfg.heartbeat_s))
        _recovery.fail_stale(study, ctx.cfg.grace_s, ctx.cfg.max_retry)
        if _started(study) < ctx.cfg.trials:
            return True
    return False


def _surplus(ctx: SweepContext, study, trial) -> bool:
    """Workers that asked at the same moment may overshoot ``--trials``: the trials numbered
    first keep their place, a later one is given back (FAIL, cause ``surplus``, not counted;
    it has no params yet, so the samplers see nothing)."""
    from optuna.trial import TrialState

    ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.number < trial.number] + [t for t in finished(study) if t.number < trial.number]  # fmt: skip
    if len(ahead) < ctx.cfg.trials:
        return False
    trial.set_user_attr("cause", "surplus")
    study.tell(trial, state=TrialState.FAIL)
    return True


def _duplicate_repeat(study, trial) -> bool:
    """Two workers that finish a trial at the same moment may both enqueue the same leader's
    seed repeat (:mod:`.repeats`). Optuna hands out waiting trials oldest first, so the first
    copy is running or done when the second is asked for: the second is given back (FAIL, cause
    ``surplus``, not counted; it has no params yet). A retry of a copy whose worker died (FAIL)
    is not a duplicate."""
    from optuna.trial import TrialState

    key = (trial.user_attrs.get("repeat_of"), trial.user_attrs.get("repeat"))
    if key[0] is None:
        return False
    live = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
    if not any((t.user_attrs.get("repeat_of"), t.user_attrs.get("repeat")) == key and t.number < trial.number
               for t in study.get_trials(deepcopy=False, states=live)):  # fmt: skip
        return False
    trial.set_user_attr("cause", "surplus")
    study.tell(trial, state=TrialState.FAIL)
    return True


def fail_if_running(study, trial, exc: BaseException) -> None:
    """Tell a trial that an exception interrupted as FAIL, with its cause, if still running."""
    from optuna.trial import TrialState

    try:
        if study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            return
        interrupted = isinstance(exc, KeyboardInterrupt)
        trial.set_user_attr("cause", "interrupted" if interrupted else "crash")
        if not interrupted:
            from perftune.storage import redact_text

            trial.set_user_attr("message", redact_text(f"{type(exc).__name__}: {exc}")[:500])
        study.tell(trial, state=TrialState.FAIL)
    except Exception:  # noqa: BLE001 - never hide the original error
        pass
