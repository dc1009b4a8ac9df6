"""The study phase: open (or resume) the Optuna study of a sweep, check that it belongs to this
setup, bound the batch size by a probe, and enqueue the baseline."""

from __future__ import annotations

from typing import Any

from perftune import _recovery
from perftune._optuna import make_pruner, make_sampler, quiet
from perftune.backends import get_backend
from perftune.errors import UsageError
from perftune.sweep.context import SweepContext
from perftune.sweep.search import NOT_COUNTED


def open_study(ctx: SweepContext):
    import optuna

    quiet()  # again: importing MLflow resets warning filters
    study = optuna.create_study(
        storage=ctx.storage, study_name=ctx.study_name, load_if_exists=True,
        sampler=make_sampler(ctx.cfg.sampler, ctx.seed, ctx.space),
        pruner=make_pruner("none" if ctx.multi else ctx.cfg.pruner, ctx.objective.measure),
        directions=[o.direction for o in ctx.objectives],
    )  # fmt: skip
    have, want = [d.name.lower() for d in study.directions], [o.direction for o in ctx.objectives]
    if have != want:
        raise UsageError(f"--study {ctx.study_name}: exists with direction {', '.join(have)}, "
                         f"not {', '.join(want)}")  # fmt: skip
    for key, mine in (("workload", ctx.workload["name"]), ("framework", ctx.cfg.framework),
                      ("device", ctx.device.fingerprint)):  # fmt: skip
        prior = study.user_attrs.get(key)
        if prior and prior != mine:
            what = f"device {prior[:12]}" if key == "device" else f"{key} {prior}"
            raise UsageError(f"--study {ctx.study_name}: belongs to {what}, not this one "
                             "(results from different setups must not mix; name another "
                             "study with --study)")  # fmt: skip
    for key, value in (("workload", ctx.workload["name"]), ("framework", ctx.cfg.framework),
                       ("device", ctx.device.fingerprint), ("objective", ctx.cfg.objective_key)):  # fmt: skip
        study.set_user_attr(key, value)
    # A trial of a killed worker on this machine: failed and retried now, not after the
    # grace period (other machines' go by heartbeats).
    _recovery.fail_stale(study, ctx.cfg.grace_s, ctx.cfg.max_retry)
    bound_batch_size(ctx, study)
    # The baseline runs once per study; again only if its run was interrupted.
    if not any(t.user_attrs.get("baseline") and t.user_attrs.get("cause") not in NOT_COUNTED
               for t in study.get_trials(deepcopy=False)):  # fmt: skip
        study.enqueue_trial(ctx.space.suggested_params(ctx.baseline),
                            user_attrs={"baseline": True})  # fmt: skip
    return study


def bound_batch_size(ctx: SweepContext, study) -> None:
    """Cap ``batch_size`` at the largest that fits on this device (found once per study by a
    probe in a trial process, then kept in the study so a resumed study searches the same
    space)."""
    from perftune.search_spaces import SpaceError

    cfg = ctx.cfg
    spec = ctx.space.params.get("batch_size")
    if cfg.objective == "latency" and spec is not None:  # the latency of one sample's request
        try:
            ctx.space = ctx.space.capped("batch_size", 1)
        except SpaceError as exc:
            raise UsageError(f"--objective latency: measures one sample per request: {exc}") from None
        ctx.baseline = ctx.space.defaults()
        return
    wanted = cfg.task == "training" and (cfg.batch_probe == "on" or (cfg.batch_probe == "auto"
                                                                    and ctx.device.kind != "cpu"))  # fmt: skip
    if spec is None or spec.type != "int" or not wanted:
        return
    if "probe" not in get_backend(cfg.framework).measures:
        return
    bound = study.user_attrs.get("max_batch_size")
    if bound is None:
        bound = probe(ctx, max(spec.choices) if spec.choices else int(spec.high))
        if bound is None:
            return
        study.set_user_attr("max_batch_size", bound)
    try:
        ctx.space = ctx.space.capped("batch_size", int(bound))
    except SpaceError as exc:
        raise UsageError(f"--device {cfg.device}: {exc}") from None
    ctx.baseline = ctx.space.defaults()
    if cfg.sampler == "grid":
        study.sampler = make_sampler("grid", ctx.seed, ctx.space)


def probe(ctx: SweepContext, high: int) -> int | None:
    """Run the batch-size probe; return the bound, or None if it told nothing."""
    ctx.progress("probe", {"max": high})
    seen: dict[int, bool] = {}

    def on_report(bs: int, fitted: float) -> bool:
        seen[int(bs)] = bool(fitted)
        return False

    config = {**ctx.baseline, "probe_max": high}
    outcome = ctx.execute(ctx.request(config, seed=ctx.cfg.seed or 0, number=None,
                                      label="batch-probe", measure="probe"), on_report)  # fmt: skip
    info: dict[str, Any] = {"tried": sorted(seen.items())}
    if outcome.status == "ok":
        bound = int(outcome.metrics["max_batch_size"])
        info.update(outcome.metrics)
    else:  # killed mid-probe (the kernel's OOM killer): keep what the reports told
        fits = [b for b, ok in seen.items() if ok]
        failed = [b for b, ok in seen.items() if not ok]
        bound = max(fits) if fits else None
        info.update(failure=outcome.cause, message=outcome.message, first_failure=min(failed, default=None))
    ctx.probe_info = {**info, "max_batch_size": bound}
    ctx.progress("probed", ctx.probe_info)
    return bound
