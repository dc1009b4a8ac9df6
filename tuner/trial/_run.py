"""Running training functions in a trial process (stdlib only): one rank, the batch-size probe,
and perftune's built-in loop written on the public :class:`~perftune.trial.Trial` API."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from perftune.trial._kit import Kit
from perftune.trial._meter import Plan
from perftune.trial.api import Trial, run_function

__all__ = ["as_function", "drive", "plan_for", "probe", "run_rank"]

#: ``step() -> (epoch, loss, samples)``: one optimizer step of the built-in loop on this rank.
Step = Callable[[], tuple[int, Any, int]]


def plan_for(request: Any, description: dict[str, Any]) -> Plan:
    """What a trial measures: the request's measure and timing over the workload's target."""
    measure = request.measure if request.measure in ("converge", "throughput", "probe", "free") else "converge"
    return Plan(measure=measure, target=description.get("target"), mode=description.get("mode", "max"),
                budget_s=float(request.budget_s or description.get("budget_s") or 60.0),
                eval_interval_s=float(description.get("eval_interval_s") or 0.25),
                warmup_s=float(request.warmup_s), window_s=float(request.window_s),
                repeats=int(request.repeats), fidelity=getattr(request, "fidelity", "time"))  # fmt: skip


def as_function(workload: Any, builtin: Callable[[Any], Callable[[Trial], Any]]) -> Callable[[Trial], Any]:
    """The training function of a :class:`~perftune.trial.Trainable` (the user's: its ``fn``) or
    of a :class:`~perftune.workload.Workload` (``builtin(workload)``: the backend's own loop)."""
    fn = getattr(workload, "fn", None)
    return fn if fn is not None else builtin(workload)


def run_rank(fn: Callable[[Trial], Any], kit: Kit, request: Any, channel: Any,
             description: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """One rank of a sweep's trial: ``fn`` on a :class:`Trial` over ``kit``; the kit is closed
    afterwards."""
    trial = Trial(request.config, plan=plan_for(request, description), kit=kit, channel=channel,
                  name=description.get("name", ""), seed=request.seed)  # fmt: skip
    try:
        return run_function(fn, trial)
    finally:
        kit.close()


def probe(fn: Callable[[Trial], Any], kit: Kit, request: Any, channel: Any,
          description: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The largest batch size that trains here: ``fn`` runs a few steps per batch size
    (doubling, then bisection: :func:`~perftune.backends._probe.find_max_batch_size`), an
    out-of-memory error meaning "does not fit". Each attempt is reported on ``channel`` as it
    ends (``step`` = batch size, ``value`` 1 fitted / 0 not), so that a probe the kernel kills
    still leaves what it learnt. Config keys ``probe_max`` and ``probe_margin`` bound it."""
    from perftune.backends._base import classify_exception
    from perftune.backends._probe import find_max_batch_size

    cfg = dict(request.config)
    high, margin = int(cfg.pop("probe_max", 4096)), float(cfg.pop("probe_margin", 0.1))
    plan = Plan(measure="probe", target=description.get("target"))

    def fits(bs: int) -> bool:
        trial = Trial({**cfg, "batch_size": bs}, plan=plan, kit=kit, seed=request.seed)
        try:
            run_function(fn, trial)
            ok = True
        except Exception as exc:  # noqa: BLE001 - OOM is the answer; anything else propagates
            if classify_exception(exc) != "oom":
                raise
            exc.__traceback__ = None  # its frames hold the attempt's tensors
            ok = False
        finally:
            del trial
            gc.collect()
            kit.empty_cache()
        channel.report(bs, 1.0 if ok else 0.0)
        return ok

    try:
        result = find_max_batch_size(fits, start=int(cfg.get("batch_size", 32)), max_val=high,
                                     margin=margin)  # fmt: skip
    finally:
        kit.close()
    metrics = {"max_batch_size": result.max_batch_size, "largest_fit": result.largest_fit,
               "first_oom": result.first_oom, "limited_by": result.limited_by,
               "attempts": len(result.tried)}  # fmt: skip
    return {"metrics": metrics, "curves": {"probe": [[b, int(ok)] for b, ok in result.tried]},
            "pruned": False}  # fmt: skip


def drive(trial: Trial, step: Step, evaluate: Callable[[], float], *,
          collective_eval: bool = False) -> None:  # fmt: skip
    """perftune's own training loop, on the public Trial API like any user's: train step by
    step, evaluate when due (rank 0, or every rank when the model is sharded), report."""
    epoch = 0
    while not trial.should_stop():
        epoch, loss, samples = step()
        trial.step(samples=samples, loss=loss)
        if trial.eval_due():
            with trial.evaluating():
                value = evaluate() if trial.is_chief or collective_eval else None
            trial.report(value)
    trial.log(epochs=epoch + 1)
