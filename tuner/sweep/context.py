"""The state a sweep's phases share (:class:`SweepContext`), and how a trial is asked for.

The phases (:mod:`.study`, :mod:`.search`, :mod:`.confirm`, :mod:`.workers`, :mod:`.report`)
are functions of a context, never of each other's objects: each reads the context and writes
only what it owns.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perftune import _recovery
from perftune._load import measure_load, start_load
from perftune._optuna import STORAGE_OPEN_RETRY_S, open_storage
from perftune.backends import TrialOutcome, TrialRequest, get_backend
from perftune.devices import Device, select
from perftune.errors import UsageError
from perftune.names import check_name, safe_filename
from perftune.objectives import Objective, parse_objectives
from perftune.settings import Workspace
from perftune.sweep.config import ProgressFn, SweepConfig
from perftune.workload import canonical_spec

BOUND_FACTOR = 1.5


def trial_timeout(cfg: SweepConfig, objective: Objective, budget: float) -> float:
    if cfg.trial_timeout:
        return cfg.trial_timeout
    if objective.measure in ("throughput", "infer"):
        return 120.0 if objective.measure == "throughput" else 300.0  # compiling a model takes a while
    return 2 * budget + 60


class SweepContext:
    """One sweep (or worker) process's request, what :meth:`prepare` resolved from it (workload,
    device, search space, baseline, study name, budget) and opened for it (executor, Optuna
    storage, store, tracker), and what the phases accumulate (failures, cancelled)."""

    def __init__(self, cfg: SweepConfig, ws: Workspace, progress: ProgressFn | None = None,
                 executor=None, tracker=None) -> None:  # fmt: skip
        self.cfg, self.ws = cfg, ws
        self.progress: ProgressFn = progress or (lambda event, data: None)
        #: The objectives (``--objective a,b``): the primary first, which says what trials measure.
        self.objectives = parse_objectives(cfg.objective)
        self.objective = self.objectives[0]
        #: Several objectives: a Pareto front (:mod:`.pareto`), not one best.
        self.multi = len(self.objectives) > 1
        self.spec = " ".join(cfg.command) if cfg.command else canonical_spec(cfg.workload)
        #: Knobs a launched command's template applies (read, as far as the report goes).
        self.template_knobs: list[str] = []
        #: An executor / tracker the caller passed in: used, never closed here.
        self.given_executor, self.given_tracker = executor, tracker
        self.failures: list[dict[str, Any]] = []
        #: Peak FLOP/s per precision (and where it came from), found once (:mod:`.mfu`).
        self.peaks: dict[str, tuple[float | None, str | None]] = {}
        # Workers of one study must not sample the same configs: offset the sampler's seed.
        self.seed = None if cfg.seed is None else cfg.seed + cfg.worker_index
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.probe_info: dict[str, Any] | None = None
        #: Checked before each trial: True stops starting trials (a cancelled sweep).
        self.should_stop: Callable[[], bool] = lambda: False
        self.cancelled = False
        #: The search stage this context runs (the factored search's ``throughput`` or
        #: ``convergence``; None for the joint search): a tag on every MLflow run.
        self.stage: str | None = None
        #: Seeds each leading config of the search runs with (:mod:`.repeats`; 1: no repeats).
        self.leader_seeds = 1
        #: What a trial's pruner steps count (``TrialRequest.fidelity``): "time" (evaluations at
        #: equal training time) or "samples" (the factored search's stage 2).
        self.fidelity = "time"
        #: Trial values are predictions, not the time to target measured (the factored search's
        #: stage 2): the trial budget is scaled to real training time (:meth:`trial_budget`).
        self.predicted = False
        #: How busy the machine was over each trial this process ran, every stage's and the
        #: confirmation's (:meth:`execute`; a stage's copy of the context shares the list).
        self.loads: list[dict[str, float]] = []
        # Set by prepare().
        self.executor = self.storage = self.store = self.tracker = None
        self.workload: dict[str, Any] = {}
        self.device: Device | None = None
        self.space = None
        self.baseline: dict[str, Any] = {}
        self.study_name = ""
        self.budget = 0.0
        #: Inference: the trained weights the trials serve (:mod:`.serving`).
        self.model_path: str | None = None

    # -- setup (nothing written until every check passed)
    def prepare(self) -> None:
        from perftune.executor import make_executor
        from perftune.search_spaces import Capabilities, SpaceError, load_space
        from perftune.storage import StoreError, open_store
        from perftune.tracking import check_database, check_tracking, make_tracker

        cfg, ws = self.cfg, self.ws
        cfg.validate()
        if cfg.workers > 1 and ws.storage.startswith("sqlite"):
            raise UsageError(f"--workers {cfg.workers}: parallel workers need a database server for "
                             "the Optuna storage (--storage postgresql://...), or Optuna's journal "
                             "file on one machine (--storage journal:///path/optuna.journal); "
                             "SQLite would fail with 'database is locked'")  # fmt: skip
        # a helper worker joins a sweep that reached its databases: a dropped connection passes
        patience = STORAGE_OPEN_RETRY_S if cfg.worker_index else 0.0
        if not ws.storage.startswith("journal:"):
            check_database(ws.storage, "--storage", patience_s=patience)
        check_database(ws.db, "--db", patience_s=patience)
        if cfg.track:
            check_tracking(ws.tracking_uri, patience_s=patience)
        self._check_meters(cfg.device.partition(":")[0])
        self.executor = self.given_executor or make_executor(cfg.framework, isolate=cfg.isolate,
                                                             log_dir=None)  # fmt: skip
        self.workload = cfg.describe_command() if cfg.command else self.executor.describe(self.spec)
        check_name("--name" if cfg.command else f"--workload {cfg.workload}: name", self.workload.get("name"))
        devices = [Device.from_discovery(cfg.framework, d) for d in self.executor.devices()]
        self.device = select(devices, cfg.device)
        caps = self._capabilities()
        capabilities = Capabilities(params=frozenset(caps["params"]),
                                    choices={k: frozenset(v) for k, v in caps["choices"].items()},
                                    framework=cfg.framework)  # fmt: skip
        try:
            self.space = load_space(cfg.framework, self.device.kind, resources=self.device.resources,
                                    override=cfg.space, supported=capabilities, task=cfg.task)  # fmt: skip
        except SpaceError as exc:
            raise UsageError(str(exc)) from None
        if cfg.command:
            from perftune.trial.launcher import command_space, template_fields

            self.space = command_space(self.space, cfg.command)
            self.template_knobs = template_fields(cfg.command)
        self.baseline = self.space.defaults()
        self.study_name = cfg.study or (f"{self.workload['name']}-{cfg.framework}-"
                                        f"{self.device.spec.replace(':', '')}-{cfg.objective_key}")  # fmt: skip
        self.budget = float(cfg.budget_s or self.workload["budget_s"])
        # Only now touch the databases and the workspace.
        ws.prepare()
        if getattr(self.executor, "log_dir", "") is None:
            self.executor.log_dir = str(ws.logs)
        with ws.setup_lock():  # another sweep starting now waits until the schemas are made
            self.storage = open_storage(ws.storage, cfg)
            try:
                self.store = open_store(ws.db, create=True)
            except StoreError as exc:
                raise UsageError(f"--db: {exc}") from None
            self.tracker = self.given_tracker or make_tracker(ws, track=cfg.track)
        _recovery.harden(self)  # store writes, MLflow calls: retried when the connection drops

    def _check_meters(self, kind: str) -> None:
        """An energy objective where no meter is readable: refused, naming the meter (energy is
        measured, never estimated)."""
        from perftune.backends._energy import missing_meter

        if any(o.name == "energy" for o in self.objectives):
            if self.cfg.task == "training" and self.cfg.framework != "torch":
                raise UsageError(f"--objective {self.cfg.objective}: the {self.cfg.framework} backend "
                                 "measures no energy in training trials (PyTorch does; inference "
                                 "trials do in every framework)")  # fmt: skip
            missing = missing_meter(kind)
            if missing:
                raise UsageError(f"--objective {self.cfg.objective}: energy needs a meter this "
                                 f"machine does not have: {missing}")  # fmt: skip

    def _capabilities(self) -> dict[str, Any]:
        """What the backend honours on the device for the sweep's task (an inference sweep on
        a device or workload the backend cannot serve is refused here, before anything runs)."""
        cfg, backend = self.cfg, get_backend(self.cfg.framework)
        if cfg.task == "training":
            return backend.capabilities(self.device.kind)
        if self.workload.get("kind") != "workload":
            raise UsageError(f"--task inference: --workload {cfg.workload} is a training function; "
                             "serving needs a perftune.Workload (a model factory, data and a metric)")  # fmt: skip
        caps = backend.inference_capabilities(self.device.kind)
        if caps is None:
            raise UsageError(f"--task inference: the {cfg.framework} backend does not serve models "
                             f"on {self.device.kind} yet")  # fmt: skip
        return caps

    def close_tracker(self) -> dict[str, Any] | None:
        """Close the tracker the sweep made (not one passed in): a bounded flush of what it
        spooled. Idempotent."""
        if self.tracker is not None and self.given_tracker is None:
            return self.tracker.close()
        return None

    def close(self) -> None:
        """Close what :meth:`prepare` opened (an executor or tracker passed in stays open)."""
        if self.executor is not None and self.given_executor is None:
            self.executor.close()
        if self.store is not None:
            self.store.close()
        self.close_tracker()

    # -- a trial
    def violations(self, metrics: dict[str, Any]) -> dict[str, str]:
        """The sweep's limits (``--slo-p99-ms``, ``--max-quality-drop``) a measured trial breaks."""
        return self.objective.violations(metrics, self.cfg.limits)

    def value(self, config: dict[str, Any], metrics: dict[str, Any]) -> float | list[float] | None:
        """A search trial's objective value (a search stage may value trials otherwise, e.g.
        by a prediction: :mod:`.factored`); with several objectives, their values in order
        (None if any is missing)."""
        if self.multi:
            values = [o.value(metrics) for o in self.objectives]
            return None if None in values else values  # type: ignore[return-value]
        return self.objective.value(metrics)

    def pruner_step(self, config: dict[str, Any], step: int) -> int:
        """The step the pruner compares for a step a trial reported (a search stage may map it,
        e.g. samples seen to predicted training time: :mod:`.factored`)."""
        return step

    def trial_budget(self, study) -> float:
        """Training-time cap of a time-to-target trial: the workload's budget, tightened to
        ``BOUND_FACTOR`` x the best time so far (a trial still short of the target by then
        cannot win; the slack leaves room for noise, which the confirmation round settles).
        Where trials are valued by a prediction (the factored search's stage 2: samples to
        target over stage 1's steady throughput), the best value is scaled by the most that a
        completed trial really trained beyond its predicted time: the cap is on real training."""
        from optuna.trial import TrialState

        if self.objective.measure != "converge" or self.multi:  # a slow trial may be on the front
            return self.budget
        try:
            best = float(study.best_value)
        except ValueError:
            return self.budget
        scale = 1.0
        if self.predicted:  # one more read of the study: only where values are predictions
            done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            real = [t.user_attrs.get("metrics", {}).get("time_to_target_s") for t in done]
            scale = max([r / t.value for r, t in zip(real, done, strict=True) if r and t.value and t.value > 0],
                        default=1.0)  # fmt: skip
        return max(self.budget * 0.05, min(self.budget, BOUND_FACTOR * best * max(1.0, scale)))

    def request(self, config: dict[str, Any], *, seed: int, number: int | None, label: str,
                measure: str | None = None) -> TrialRequest:  # fmt: skip
        return TrialRequest(
            workload=self.spec, framework=self.cfg.framework, device=self.cfg.device,
            config=config, measure=measure or self.objective.measure, seed=seed,
            device_info=self.device.to_dict(),
            budget_s=self.cfg.budget_s, timeout_s=trial_timeout(self.cfg, self.objective, self.budget),
            trial_number=number,
            log_path=str(self.log_file(label)),
            command=self.cfg.command, description=self.workload if self.cfg.command else None,
            model_path=self.model_path, request_rate=self.cfg.request_rate, fidelity=self.fidelity,
            # Serving: three windows, each of 0.5 s and 200 requests at least (its p99 rests on
            # two observations or more); training's throughput takes five shorter ones.
            repeats=3 if (measure or self.objective.measure) == "infer" else TrialRequest.repeats,
        )  # fmt: skip

    def execute(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        """Run ``request`` on the executor and add the machine's load over it to the outcome's
        metrics (:mod:`perftune._load`). The outcome's message (the trial's own words, which
        may quote a URL with its password) is redacted before anything records it."""
        from perftune.storage import redact_text

        started = start_load()
        outcome = self.executor.run(request, on_report)
        load = measure_load(started)  # how busy the machine was meanwhile
        outcome.metrics.update(load)
        self.loads.append(load)
        if isinstance(outcome.metrics.get("quality"), int | float):  # higher is better, whatever the metric
            sign = 1 if self.workload.get("mode", "max") == "max" else -1
            outcome.metrics["quality_score"] = sign * outcome.metrics["quality"]
        if outcome.message:
            outcome.message = redact_text(outcome.message)
        return outcome

    def log_file(self, label: str) -> Path:
        """The workspace's log file of this study's ``label`` (a trial, a worker): a file name
        made safe and short enough whatever the study's name (:func:`safe_filename`)."""
        return self.ws.logs / f"{safe_filename(f'{self.study_name}-{label}')}.log"

    def tags(self, **extra: Any) -> dict[str, str]:
        base = {"framework": self.cfg.framework, "device": self.device.kind,
                "device_name": self.device.name, "device_fingerprint": self.device.fingerprint,
                "workload": self.workload["name"], "objective": self.cfg.objective_key,
                "study": self.study_name, "stage": self.stage}  # fmt: skip
        return {k: str(v) for k, v in {**base, **extra}.items() if v is not None}
