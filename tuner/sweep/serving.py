"""What an inference sweep needs before its first trial: the trained model it serves.

A :class:`~perftune.workload.Workload` that names ``weights`` is served from that file. Else
the model is trained once, to the workload's target, with the framework-default training
config (a ``fit`` request in a trial process, perftune's built-in loop), and its weights are
cached in the workspace (``models/``): later sweeps of the workload, under any objective or
limit, serve the same model, so their quality figures compare. Delete the file to retrain.
"""

from __future__ import annotations

import hashlib
import os

from perftune.errors import UsageError
from perftune.names import safe_filename
from perftune.sweep.context import SweepContext

#: The fit's training budget, in workload budgets.
FIT_BUDGET_FACTOR = 5
#: File suffix of a framework's saved weights.
SUFFIX = {"torch": ".pt", "tensorflow": ".weights.h5", "mindspore": ".ckpt"}


def model_file(ctx: SweepContext) -> str:
    """Where the workspace caches the trained weights of this workload and framework: the
    name, and a digest of the spec (two files both defining ``make`` differ)."""
    digest = hashlib.sha256(ctx.spec.encode()).hexdigest()[:10]
    name = safe_filename(f"{ctx.workload['name']}-{ctx.cfg.framework}-{digest}")
    return str(ctx.ws.home / "models" / f"{name}{SUFFIX[ctx.cfg.framework]}")


def ensure_model(ctx: SweepContext) -> None:
    """Point the trials at the trained weights (``ctx.model_path``), training them first if the
    workspace has none yet. A fit that fails stops the sweep with its one-line reason."""
    from perftune.search_spaces import SpaceError, load_space

    ctx.model_path = model_file(ctx)
    if os.path.isfile(ctx.model_path):
        return
    os.makedirs(os.path.dirname(ctx.model_path), exist_ok=True)
    try:
        training = load_space(ctx.cfg.framework, ctx.device.kind, resources=ctx.device.resources)
    except SpaceError as exc:
        raise UsageError(str(exc)) from None
    ctx.progress("fit", {"workload": ctx.workload["name"], "path": ctx.model_path})
    request = ctx.request(training.defaults(), seed=ctx.cfg.seed or 0, number=None, label="fit",
                          measure="fit")  # fmt: skip
    # Trained once, not raced: five times a trial's budget, so a busy machine does not fail it.
    request.budget_s = FIT_BUDGET_FACTOR * float(ctx.workload.get("budget_s") or 60)
    request.timeout_s = 2 * request.budget_s + 120
    outcome = ctx.execute(request)
    if outcome.status != "ok" or not os.path.isfile(ctx.model_path):
        why = outcome.message or outcome.cause or "it wrote no weights"
        raise UsageError(f"--task inference: training {ctx.workload['name']} to serve failed: {why}")
    ctx.progress("fitted", {k: outcome.metrics.get(k) for k in ("fit_metric", "fit_time_s")})
