"""What the inference trials of every framework share (stdlib only): the workload check, the
fit's result, the quality figures and serving under an energy meter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from perftune.errors import UsageError
from perftune.trial._serve import ServeResult, serve

__all__ = ["check_workload", "fit_result", "metered_serve", "quality_metrics", "weights_path"]


def check_workload(workload: Any) -> None:
    """A served model needs a :class:`~perftune.workload.Workload` (a factory, data and a
    metric); a training function alone says neither what to load nor what to feed it."""
    from perftune.workload import Workload

    if not isinstance(workload, Workload):
        raise UsageError("--task inference: the workload must be a perftune.Workload (a model "
                         "factory, data and a metric); a @perftune.trainable training function "
                         "does not say what to serve")  # fmt: skip


def weights_path(workload: Any, request: Any) -> str:
    """The trained weights to serve: the workload's ``weights``, else the fit's file."""
    import os

    path = workload.weights or request.model_path
    if not path or not os.path.isfile(path):
        raise UsageError(f"--workload {workload.name}: no trained weights at {path}")
    return path


def fit_result(workload: Any, metrics: dict[str, Any], budget_s: float | None) -> dict[str, Any]:
    """A fit trial's result from its training metrics; a one-line UsageError if the training
    did not reach the workload's target (the weights are not saved then)."""
    if not metrics.get("reached_target"):
        raise UsageError(f"--workload {workload.name}: training the model to serve did not reach "
                         f"its target {workload.target} in {budget_s or workload.budget_s:g} s (last "
                         f"{metrics.get('final_metric')}): give the Workload weights=, or a longer budget_s")  # fmt: skip
    return {"metrics": {"fit_metric": metrics.get("final_metric"), "fit_time_s": metrics.get("time_to_target_s")},
            "curves": {}, "pruned": False}  # fmt: skip


def quality_metrics(quality: float, reference: float, mode: str) -> dict[str, float]:
    """The configured model's quality, the trained fp32 model's, and the drop (> 0: worse)."""
    return {"quality": quality, "quality_reference": reference,
            "quality_drop": reference - quality if mode == "max" else quality - reference}  # fmt: skip


def metered_serve(predicts: Sequence[Callable[[Any], Any]], requests: Sequence[tuple[Any, int]], request: Any,
                  *, kind: str = "cpu", **options: Any) -> tuple[ServeResult, dict[str, Any]]:  # fmt: skip
    """:func:`~perftune.trial._serve.serve` with the request's timing, under the device's
    energy meter where one is readable; returns the result and its energy metrics."""
    from perftune.backends._energy import energy_metrics, open_meter

    try:
        meter = open_meter(kind, [0])
    except Exception:  # noqa: BLE001 - energy is optional; a broken reader must not fail a trial
        meter = None
    try:
        if meter is not None:
            meter.start()
        result = serve(predicts, requests, warmup_s=request.warmup_s, window_s=request.window_s,
                       repeats=request.repeats, rate=request.request_rate, seed=request.seed, **options)  # fmt: skip
        joules = meter.stop() if meter is not None else None
    finally:
        if meter is not None:
            meter.close()
    return result, energy_metrics(joules, result.samples, result.seconds, getattr(meter, "source", None))
