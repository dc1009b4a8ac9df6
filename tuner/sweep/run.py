"""The study loop: one Optuna study per (workload, framework, device, objective).

``run_sweep`` checks every input before writing anything, then: enqueues the framework-default
config as the baseline, asks the sampler for configs, runs each as an isolated trial, tells
Optuna and logs MLflow, re-measures the top candidates and the baseline (the confirmation
round), and stores the confirmed best in perftune's config store.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from perftune import _recovery
from perftune.settings import Workspace
from perftune.stats import Interval
from perftune.sweep.config import ProgressFn, SweepConfig
from perftune.sweep.confirm import Verdict, confirm
from perftune.sweep.context import SweepContext
from perftune.sweep.pareto import confirm_front, store_front
from perftune.sweep.policy import SearchPolicy, get_policy, run_stages
from perftune.sweep.report import (
    SweepReport,
    artifacts,
    challenger,
    inference_summary,
    payback,
    report_warnings,
    side,
)
from perftune.sweep.search import INFEASIBLE, NOT_COUNTED, finished
from perftune.sweep.serving import ensure_model
from perftune.sweep.study import open_study
from perftune.sweep.warm import warm_start, warm_summary
from perftune.sweep.workers import share, spawn_workers, stop_workers, wait_workers
from perftune.tracking import runs_view


def run_sweep(cfg: SweepConfig, ws: Workspace, progress: ProgressFn | None = None, *,
              executor=None, tracker=None, sweep_id: int | None = None,
              should_stop: Callable[[], bool] | None = None) -> SweepReport:  # fmt: skip
    """Run (or resume) a sweep and store its confirmed best. See the module docstring.

    ``sweep_id``: the store's row of a queued sweep this process claimed (used instead of a new
    row). The row gets live progress after each trial; when ``should_stop()`` or the row's
    cancel flag (``perftune``'s API: ``POST /v1/sweeps/ID/cancel``) says so, no further trial
    starts, the confirmation round is skipped, the row ends ``cancelled`` and the MLflow run
    KILLED (``report.cancelled``)."""
    t0 = time.monotonic()
    ctx = SweepContext(cfg, ws, progress, executor, tracker)
    try:
        ctx.prepare()
        report = _run(ctx, t0, sweep_id, should_stop)
        report.tracking = ctx.close_tracker()
        if report.tracking is not None:  # a placeholder run id may have its real id by now
            report.mlflow_run_id = ctx.tracker.parent_run_id or report.mlflow_run_id
            report.mlflow_experiment_id = ctx.tracker.experiment_id or report.mlflow_experiment_id
        return report
    finally:
        ctx.close()


def _run(ctx: SweepContext, t0: float, sweep_id: int | None = None,
         should_stop: Callable[[], bool] | None = None) -> SweepReport:  # fmt: skip
    policy = get_policy(ctx)  # before anything is written: --search factored may not apply
    study = open_study(ctx)
    previous = None if sweep_id is not None or ctx.cfg.confirm_again else finished_sweep(ctx, study, policy)
    if previous is not None:  # nothing left to do: its stored result, not a new confirmation
        return stored_report(ctx, study, t0, previous)
    warm_start(ctx, study)  # a new study: the stored bests of other devices / objectives first
    if ctx.cfg.task == "inference":
        ensure_model(ctx)  # the trained model the trials serve (trained once per workspace)
    run_id, sweep_id = start(ctx, study, sweep_id)
    state, summary = "failed", None
    _track_progress(ctx, sweep_id, should_stop)
    share(ctx, study, run_id)
    policy.prepare(ctx)
    helpers = spawn_workers(ctx)
    try:
        stopped = search(ctx, policy, study, helpers)
        counts = trial_counts(study)
        if ctx.multi:  # several objectives: a confirmed Pareto front, not one best
            report, summary = _front(ctx, study, t0, counts, run_id, sweep_id, stopped)
            state = "cancelled" if ctx.cancelled else "completed"
            return report
        verdict = confirm(ctx, study) if confirmable(ctx, study) else None
        stored, best_id = store_best(ctx, verdict, run_id, sweep_id)
        summary = {**summarize_verdict(verdict), "stored": stored, "stopped_early": stopped}
        log_summary(ctx, verdict, counts)
        if best_id is not None:
            summary["best_config_id"] = best_id
        artifacts(ctx, study, verdict, summary)
        state = "cancelled" if ctx.cancelled else "completed"
        report = make_report(ctx, study, t0, counts, verdict, stored, best_id, run_id, sweep_id)
        report.warm_start, report.stopped_early = warm_summary(study), stopped
        report.cost = payback(report.duration_s, report.speedup) if ctx.cfg.task == "training" else None
        report.search = policy.describe()
        report.inference = inference_summary(ctx, study)
        return report
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        finish(ctx, study, helpers, sweep_id, state, summary)


def _front(ctx: SweepContext, study, t0: float, counts: dict[str, int], run_id: str | None,
           sweep_id: int, stopped: dict[str, Any] | None) -> tuple[SweepReport, dict[str, Any]]:  # fmt: skip
    """The confirm, store and report phases of a multi-objective sweep (:mod:`.pareto`)."""
    front = confirm_front(ctx, study) if confirmable(ctx, study) else None
    front_id = store_front(ctx, front, run_id, sweep_id)
    summary = {"front": front.to_dict() if front else None, "front_id": front_id, "stored": front_id is not None,
               "stopped_early": stopped, "baseline": None, "best": None, "speedup": None}  # fmt: skip
    ctx.tracker.log_summary({"front_points": len(front.points) if front else 0,
                             **{f"trials_{k}": v for k, v in counts.items()}}, {})  # fmt: skip
    artifacts(ctx, study, None, summary)
    report = make_report(ctx, study, t0, counts, None, front_id is not None, None, run_id, sweep_id)
    report.front, report.front_id, report.stopped_early = summary["front"], front_id, stopped
    report.search, report.inference = {"search": "joint"}, inference_summary(ctx, study)
    return report, summary


def finished_sweep(ctx: SweepContext, study, policy: SearchPolicy) -> dict[str, Any] | None:
    """The store's last sweep of this study (as ``get_sweep``) if it completed with a confirmed
    best and left nothing to do: no trial since (its trial count is the study's) and none to
    run: the study has its share of ``--trials`` (``policy.study_trials``), or that sweep ended
    its search early (``--patience``) with at least as many asked for. None otherwise: the sweep
    runs (or resumes)."""
    last = ctx.store.last_sweep(ctx.study_name)
    if last is None or last["state"] != "completed" or not (last["summary"] or {}).get("best"):
        return None
    if last["n_trials"] != len(study.get_trials(deepcopy=False)):
        return None
    stopped = last["summary"].get("stopped_early") and ctx.cfg.trials <= (last["trials_total"] or 0)
    return last if stopped or len(finished(study)) >= policy.study_trials(ctx.cfg.trials) else None


def stored_report(ctx: SweepContext, study, t0: float, last: dict[str, Any]) -> SweepReport:
    """The report of a finished sweep ``last`` (see :func:`finished_sweep`), from its stored
    summary: nothing ran, nothing was written."""
    cfg, s = ctx.cfg, last["summary"]
    return SweepReport(
        study_name=ctx.study_name, workload=ctx.workload["name"], framework=cfg.framework,
        device=ctx.device.to_dict(), objective=cfg.objective_key, direction=ctx.objective.direction,
        unit=ctx.objective.unit, trials=trial_counts(study), baseline=s.get("baseline"), best=s["best"],
        speedup=s.get("speedup"), stored=s.get("stored", True), best_config_id=s.get("best_config_id"),
        mlflow_run_id=last["mlflow_run_id"], failures=[], duration_s=time.monotonic() - t0,
        mlflow_experiment_id=(last["settings"] or {}).get("mlflow_experiment_id"), sweep_id=last["id"],
        batch_probe=({"max_batch_size": study.user_attrs["max_batch_size"]}
                     if "max_batch_size" in study.user_attrs else None),
        speedup_interval=s.get("speedup_interval"), confirm_rounds=s.get("confirm_rounds", 0),
        challenger=s.get("challenger"), already_complete={"sweep_id": last["id"], "finished_at": last["finished_at"]},
    )  # fmt: skip


def start(ctx: SweepContext, study, sweep_id: int | None) -> tuple[str | None, int]:
    """Before the first trial: recover a killed sweep of this study, record the device and the
    workload, start the MLflow parent run and the store's sweep row. Returns their ids."""
    cfg, device, workload = ctx.cfg, ctx.device, ctx.workload
    # A sweep of this study killed on this machine: its store row interrupted, its MLflow run KILLED.
    _recovery.recover_sweep(ctx.store, ctx.study_name, ctx.ws.tracking_uri if cfg.track and ctx.given_tracker is None
                            else None, workload["name"])  # fmt: skip
    ctx.store.upsert_device(device.fingerprint, framework=cfg.framework, kind=device.kind,
                            name=device.name, count=device.count,
                            memory_bytes=device.memory_bytes, info=device.to_dict())  # fmt: skip
    ctx.store.upsert_workload(workload["name"], framework=cfg.framework,
                              info={**workload, "spec": ctx.spec})  # fmt: skip
    run_id = ctx.tracker.start_sweep(
        workload["name"], f"{ctx.study_name}@{time.strftime('%Y%m%d-%H%M%S')}",
        {"workload": workload["name"], "workload_spec": ctx.spec, "framework": cfg.framework,
         "device": device.kind, "objective": cfg.objective, "direction": ctx.objective.direction,
         "trials": cfg.trials, "sampler": cfg.sampler, "pruner": cfg.pruner, "seed": cfg.seed,
         "search_space": ctx.space.name, "search": cfg.search, "study": ctx.study_name, "target": workload["target"],
         "confirm_top": cfg.confirm_top, "confirm_repeats": cfg.confirm_repeats,
         "warm_start": cfg.warm_start, "patience": cfg.patience, "task": cfg.task,
         **{k: v for k, v in cfg.limits.items() if v is not None}, "request_rate": cfg.request_rate,
         "budget_s": ctx.budget, "max_batch_size": study.user_attrs.get("max_batch_size")},
        ctx.tags(perftune_role="sweep", perftune_owner=_recovery.owner_tag()),
    )  # fmt: skip
    ctx.tracker.save_view(runs_view(ctx.space.searched(), ctx.objective.direction))
    sweep_id = ctx.store.start_sweep(study_name=ctx.study_name, workload=workload["name"],
                                     framework=cfg.framework, device_fingerprint=device.fingerprint,
                                     objective=cfg.objective_key, settings={**asdict(cfg),
                                     "mlflow_experiment_id": ctx.tracker.experiment_id,
                                     "owner": _recovery.owner()},
                                     mlflow_run_id=run_id, sweep_id=sweep_id)  # fmt: skip
    return run_id, sweep_id


def search(ctx: SweepContext, policy: SearchPolicy, study, helpers: list) -> dict[str, Any] | None:
    """Run the ``policy``'s search (with the helper workers) until its stages are done, the
    ``--timeout`` passed, the sweep was cancelled or ``--patience`` ran out; then wait for the
    helpers. Returns why the search stopped early (``--patience``), or None."""
    deadline = time.monotonic() + ctx.cfg.timeout if ctx.cfg.timeout else None
    stopped = run_stages(policy, ctx, study, deadline)
    if ctx.cancelled:
        stop_workers(helpers)
    wait_workers(ctx, helpers)
    return stopped


def trial_counts(study) -> dict[str, int]:
    """The study's trials by outcome: Optuna's states, and the causes that are not plain
    failures (the uncounted ones, ``oom``, ``lost``)."""
    from optuna.trial import TrialState

    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        cause = t.user_attrs.get("cause")
        if t.state == TrialState.FAIL and cause is None:
            cause = "lost"  # its worker died; failed by the heartbeat check and retried
        key = cause if cause in (*NOT_COUNTED, *INFEASIBLE, "lost") else t.state.name.lower()
        counts[key] = counts.get(key, 0) + 1
    return counts


def confirmable(ctx: SweepContext, study) -> bool:
    """A confirmation round is due: some trial completed and the sweep was not cancelled."""
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) and not ctx.cancelled


def _interval(iv: Interval | None) -> tuple[float, float] | None:
    return (iv.low, iv.high) if iv is not None else None


def store_best(ctx: SweepContext, verdict: Verdict | None, run_id: str | None,
               sweep_id: int) -> tuple[bool, int | None]:  # fmt: skip
    """Offer the winner to perftune's config store, with its intervals (the store replaces its
    best only with a result better beyond its interval). Returns whether it was stored and its
    record's id."""
    winner = verdict.winner if verdict is not None else None
    if winner is None:
        return False, None
    cfg, win_stats, base = ctx.cfg, winner.stats, verdict.base
    rec, stored = ctx.store.save_best(
        workload=ctx.workload["name"], framework=cfg.framework,
        device_fingerprint=ctx.device.fingerprint, objective=cfg.objective_key,
        direction=ctx.objective.direction, unit=ctx.objective.unit, config=winner.config,
        value=win_stats["median"], spread=win_stats["spread"],
        metrics={**{k: v for k, v in winner.metrics.items()
                    if isinstance(v, int | float | bool)
                    or k in ("mfu_peak_source", "energy_source")},
                 "repeats": winner.values, "trial_number": winner.trial_number,
                 "confirm_rounds": verdict.rounds},
        baseline_config=ctx.baseline,
        baseline_value=base.stats["median"] if base.ok else None,
        speedup=verdict.gain, mlflow_run_id=run_id, sweep_id=sweep_id,
        value_interval=_interval(verdict.value), speedup_interval=_interval(verdict.speedup),
    )  # fmt: skip
    return stored, rec.id


def summarize_verdict(verdict: Verdict | None) -> dict[str, Any]:
    """The confirmation's result as the store's sweep row and the artifacts keep it."""
    if verdict is None:
        return {"baseline": None, "best": None, "speedup": None, "speedup_interval": None}
    return {"baseline": side(verdict.base), "best": side(verdict.winner), "speedup": verdict.gain,
            "speedup_interval": verdict.speedup.to_dict() if verdict.speedup else None,
            "confirm_rounds": verdict.rounds, "challenger": challenger(verdict)}  # fmt: skip


def log_summary(ctx: SweepContext, verdict: Verdict | None, counts: dict[str, int]) -> None:
    """The MLflow parent run's summary metrics (the best config is in its ``sweep.json`` and
    ``best_config.yaml`` artifacts: no JSON in tags)."""
    base_stats = verdict.base.stats if verdict else None
    winner = verdict.winner if verdict else None
    win_stats = winner.stats if winner else None
    iv = verdict.speedup if verdict else None
    ctx.tracker.log_summary(
        {k: v for k, v in {
            "baseline_median": base_stats and base_stats["median"],
            "baseline_spread": base_stats and base_stats["spread"],
            "best_median": win_stats and win_stats["median"],
            "best_spread": win_stats and win_stats["spread"],
            "speedup": verdict and verdict.gain, "speedup_low": iv and iv.low,
            "speedup_high": iv and iv.high, "confirm_rounds": verdict and verdict.rounds,
            **{f"trials_{k}": v for k, v in counts.items()}}.items()
         if v is not None},
        {},
    )  # fmt: skip


def make_report(ctx: SweepContext, study, t0: float, counts: dict[str, int], verdict: Verdict | None,
                stored: bool, best_id: int | None, run_id: str | None, sweep_id: int) -> SweepReport:  # fmt: skip
    """What :func:`run_sweep` returns."""
    cfg, device = ctx.cfg, ctx.device
    base, winner = (verdict.base, verdict.winner) if verdict else (None, None)
    return SweepReport(
        study_name=ctx.study_name, workload=ctx.workload["name"], framework=cfg.framework,
        device=device.to_dict(), objective=cfg.objective_key, direction=ctx.objective.direction,
        unit=ctx.objective.unit, trials=counts, baseline=side(base), best=side(winner),
        speedup=verdict.gain if verdict else None, stored=stored, best_config_id=best_id,
        mlflow_run_id=run_id, mlflow_experiment_id=ctx.tracker.experiment_id, failures=ctx.failures,
        duration_s=time.monotonic() - t0, sweep_id=sweep_id,
        batch_probe=ctx.probe_info or ({"max_batch_size": study.user_attrs["max_batch_size"]}
                                       if "max_batch_size" in study.user_attrs else None),
        cancelled=ctx.cancelled, warnings=report_warnings(ctx, study, verdict),
        speedup_interval=verdict.speedup.to_dict() if verdict and verdict.speedup else None,
        confirm_rounds=verdict.rounds if verdict else 0, challenger=challenger(verdict),
    )  # fmt: skip


def finish(ctx: SweepContext, study, helpers: list, sweep_id: int, state: str,
           summary: dict[str, Any] | None) -> None:  # fmt: skip
    """On the way out, however the sweep ended: stop the helpers, close the store's sweep row
    (``completed``, ``cancelled``, ``interrupted`` or ``failed``) and end the MLflow run."""
    from optuna.trial import TrialState

    stop_workers(helpers)
    try:
        n = len(study.get_trials(deepcopy=False))
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        ctx.store.finish_sweep(sweep_id, state=state, n_trials=n, n_complete=complete,
                               summary=summary if state in ("completed", "cancelled") else None)  # fmt: skip
    except Exception:  # noqa: BLE001 - never hide the original error
        pass
    ctx.tracker.end_sweep({"completed": "FINISHED", "interrupted": "KILLED",
                           "cancelled": "KILLED"}.get(state, "FAILED"))  # fmt: skip


def _track_progress(ctx: SweepContext, sweep_id: int, should_stop: Callable[[], bool] | None) -> None:
    """After each counted trial, write the sweep's progress to its store row and read back its
    cancel flag; stop starting trials once it (or ``should_stop()``) is set."""
    progress, flag = ctx.progress, {"cancel": False}

    def tracked(event: str, data: dict[str, Any]) -> None:
        if event in ("start", "trial"):
            with contextlib.suppress(Exception):  # progress is worth no failed sweep
                flag["cancel"] = ctx.store.update_progress(sweep_id, trials_done=data.get("done"),
                                                           best_value=data.get("best"))  # fmt: skip
        progress(event, data)

    ctx.progress = tracked
    ctx.should_stop = lambda: flag["cancel"] or bool(should_stop and should_stop())
