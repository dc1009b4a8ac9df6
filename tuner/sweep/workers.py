"""Many workers on one study: what a ``perftune worker`` needs to join (:func:`share`), the
helpers a sweep with ``--workers N`` starts on this machine, and the worker itself
(:func:`run_worker`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from typing import Any

from perftune._optuna import open_storage, quiet
from perftune.errors import UsageError
from perftune.names import safe_filename
from perftune.settings import Workspace
from perftune.sweep.config import ProgressFn, SweepConfig
from perftune.sweep.context import SweepContext
from perftune.sweep.policy import get_policy, run_stages
from perftune.sweep.search import finished
from perftune.sweep.study import open_study


def share(ctx: SweepContext, study, run_id: str | None) -> None:
    """Put what a ``perftune worker`` needs to join into the study: the sweep's settings,
    the search-space override's text (the worker may be on another machine) and the MLflow
    run its trials nest under."""
    cfg = ctx.cfg
    shared = {k: getattr(cfg, k) for k in ("workload", "framework", "device", "objective", "trials",
                                            "sampler", "pruner", "seed", "trial_timeout", "budget_s",
                                            "batch_probe", "max_retry", "heartbeat_s", "grace_s",
                                            "command", "name", "target", "mode", "eval_interval_s",
                                            "patience", "search")}  # fmt: skip
    shared["workload"] = None if cfg.command else ctx.spec
    if cfg.space:
        with open(cfg.space) as f:
            shared["space_yaml"], shared["space_name"] = f.read(), os.path.basename(cfg.space)
    study.set_user_attr("perftune_sweep", shared)
    study.set_user_attr("mlflow_run_id", run_id)


def spawn_workers(ctx: SweepContext) -> list[subprocess.Popen]:
    """``workers - 1`` ``perftune worker`` processes on this machine (this one is the first).
    The database URLs reach them in their environment (:meth:`Workspace.environ`), readable
    by this user only, never on their command lines, which any user sees (``ps``)."""
    cmd = [sys.executable, "-m", "perftune.cli", "worker", "--study", ctx.study_name, "--quiet"]
    env = {**os.environ, **ctx.ws.environ(), "PERFTUNE_NO_PROGRESS": "1"}
    procs = []
    for i in range(1, ctx.cfg.workers):
        with open(ctx.log_file(f"worker-{i}"), "ab") as log:  # the worker keeps its own copy
            procs.append(subprocess.Popen([*cmd, "--worker-index", str(i)], env=env,
                                          stdout=subprocess.DEVNULL, stderr=log))  # fmt: skip
    return procs


def wait_workers(ctx: SweepContext, procs: list[subprocess.Popen]) -> None:
    for i, p in enumerate(procs, 1):
        if p.wait() != 0:
            ctx.failures.append({"trial": None, "cause": "worker", "message":
                                 f"worker {i} exited with status {p.returncode} (see "
                                 f"{ctx.log_file(f'worker-{i}')})"})  # fmt: skip


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """On the way out (interrupted, failed): stop the helpers as Ctrl-C would stop them."""
    import signal

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def run_worker(study_name: str, ws: Workspace, progress: ProgressFn | None = None, *,
               worker_index: int = 1, executor=None, tracker=None) -> dict[str, Any]:  # fmt: skip
    """``perftune worker``: join an existing study and run its trials until it has its total,
    logging them under the sweep's MLflow run. The sweep that created the study (``perftune
    sweep``, or the same command again) confirms and stores the best afterwards."""
    import optuna

    from perftune.storage import redact_url

    quiet()
    if ws.storage.startswith("sqlite:///") and not os.path.exists(ws.storage[len("sqlite:///"):]):
        raise UsageError(f"--study {study_name}: no such study (no Optuna storage at "
                         f"{redact_url(ws.storage)}; pass the sweep's --storage)")  # fmt: skip
    try:
        attrs = optuna.load_study(study_name=study_name, storage=open_storage(ws.storage)).user_attrs
    except KeyError:
        raise UsageError(f"--study {study_name}: no such study in {redact_url(ws.storage)}") from None
    shared = attrs.get("perftune_sweep")
    if not shared:
        raise UsageError(f"--study {study_name}: not a perftune sweep (started by `perftune sweep`?)")
    with tempfile.TemporaryDirectory(prefix="perftune-worker-") as tmp:
        space = None
        if shared.get("space_yaml") is not None:
            space = os.path.join(tmp, safe_filename(shared.get("space_name") or "space.yaml"))
            with open(space, "w") as f:
                f.write(shared["space_yaml"])
        fields = {k: v for k, v in shared.items() if k in SweepConfig.__dataclass_fields__}
        cfg = SweepConfig(**{**fields, "space": space, "study": study_name, "workers": 1,
                             "worker_index": worker_index})  # fmt: skip
        ctx = SweepContext(cfg, ws, progress, executor, tracker)
        try:
            ctx.prepare()
            study = open_study(ctx)
            if cfg.task == "inference":  # this machine's copy of the trained model
                from perftune.sweep.serving import ensure_model

                ensure_model(ctx)
            ctx.tracker.attach(ctx.workload["name"], attrs.get("mlflow_run_id"))
            run_stages(get_policy(ctx), ctx, study, None)  # the sweep's own search, its stages too
            return {"study": study_name, "worker": ctx.worker_id,
                    "trials_run": sum(t.user_attrs.get("worker") == ctx.worker_id
                                      for t in study.get_trials(deepcopy=False)),
                    "trials_done": len(finished(study)), "trials": cfg.trials,
                    "tracking": ctx.close_tracker()}  # fmt: skip
        finally:
            ctx.close()
