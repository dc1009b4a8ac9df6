"""The study loop: one Optuna study per (workload, framework, device, objective).

``run_sweep`` checks every input before writing anything, then: enqueues the framework-default
config as the baseline, asks the sampler for configs, runs each as an isolated trial, tells
Optuna and logs MLflow, re-measures the top candidates and the baseline (the confirmation
round), and stores the confirmed best in perftune's config store.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuner import _recovery
from tuner.backends import TrialOutcome, TrialRequest, get_backend
from tuner.devices import Device, select
from tuner.errors import InvalidConfig, PerftuneError, UsageError
from tuner.names import MAX_STUDY, check_name, safe_filename
from tuner.objectives import Objective, get_objective, speedup, summarize
from tuner.settings import Workspace
from tuner.workload import MAX_BUDGET_S, canonical_spec, check_spec, declared_framework

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp")
PRUNERS = ("median", "none")
MAX_CONSECUTIVE_INVALID = 50
BOUND_FACTOR = 1.5
#: Trials that do not count towards ``--trials``: configs the constraints rejected, and trials
#: cut short by Ctrl-C / SIGTERM (they are run again on resume).
NOT_COUNTED = ("invalid", "interrupted", "surplus")
#: Seconds a dropped connection may keep the Optuna storage from opening (a worker that joins
#: while the server restarts) before it is reported.
STORAGE_OPEN_RETRY_S = 10.0
MAX_DEVICE_INDEX = 1023
_DAY = 86_400
#: The range of every number of a sweep request (one table, checked by ``SweepConfig.validate``):
#: attribute -> (flag, low, high, kind), the kinds of :func:`check_number`. Optuna counts
#: heartbeats and the grace period in whole seconds.
LIMITS: dict[str, tuple[str, float, float, str]] = {
    "trials": ("--trials", 1, 100_000, "integer"),
    "confirm_top": ("--confirm-top", 1, 100, "integer"),
    "confirm_repeats": ("--confirm-repeats", 1, 100, "integer"),
    "workers": ("--workers", 1, 256, "integer"),
    "worker_index": ("--worker-index", 0, 1000, "integer"),
    "max_retry": ("--max-retry", 0, 100, "integer"),
    "seed": ("--seed", 0, 2**32 - 10_001, "integer"),  # + offsets (< 10 000) stays below 2**32
    "timeout": ("--timeout", 0, 30 * _DAY, "positive seconds"),
    "trial_timeout": ("--trial-timeout", 0, 7 * _DAY, "positive seconds"),
    "budget_s": ("--budget", 0, MAX_BUDGET_S, "positive seconds"),
    "eval_interval_s": ("--eval-interval", 0, _DAY, "positive seconds"),
    "heartbeat_s": ("--heartbeat", 1, 3600, "whole seconds"),
    "grace_s": ("--grace-period", 1, 7 * _DAY, "whole seconds"),
}
#: The numbers of :data:`LIMITS` that may be None (not given).
OPTIONAL = ("timeout", "trial_timeout", "budget_s", "seed", "eval_interval_s")
_KINDS = {  # kind -> (what the value must be, whether ``low`` itself is allowed)
    "integer": ("an integer", True),
    "number": ("a number", True),
    "seconds": ("a number of seconds", True),
    "positive seconds": ("a number of seconds", False),
    "whole seconds": ("a whole number of seconds", True),
}


def _num(value: float) -> str:
    """A bound as a person writes it: ``604800``, not ``604800.0`` or ``6.048e+05``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_number(flag: str, value: Any, low: float, high: float, kind: str = "integer") -> None:
    """Raise a :class:`UsageError` naming ``flag`` unless ``value`` is a finite number in range.

    ``kind``: ``integer`` (an int in [low, high]), ``number`` (any number in it), ``seconds`` (a number in [low, high]),
    ``positive seconds`` (in (low, high]) or ``whole seconds`` (a whole number in [low, high]).
    NaN and the infinities never pass."""
    what, closed = _KINDS[kind]
    real = isinstance(value, int | float) and not isinstance(value, bool)
    fits = real and (low <= value if closed else low < value) and value <= high
    if fits and kind == "integer":
        fits = isinstance(value, int)
    elif fits and kind == "whole seconds":
        fits = float(value).is_integer()
    if not fits:
        raise UsageError(f"{flag} {value}: must be {what} {'>=' if closed else '>'} {_num(low)} "
                         f"and <= {_num(high)}")  # fmt: skip


def _fail_if_running(study, trial, exc: BaseException) -> None:
    """Tell a trial that an exception interrupted as FAIL, with its cause, if still running."""
    from optuna.trial import TrialState

    try:
        if study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            return
        interrupted = isinstance(exc, KeyboardInterrupt)
        trial.set_user_attr("cause", "interrupted" if interrupted else "crash")
        if not interrupted:
            from storage import redact_text

            trial.set_user_attr("message", redact_text(f"{type(exc).__name__}: {exc}")[:500])
        study.tell(trial, state=TrialState.FAIL)
    except Exception:  # noqa: BLE001 - never hide the original error
        pass


@contextlib.contextmanager
def _heartbeat(trial, storage):
    """Record Optuna heartbeats while a trial runs (``study.optimize`` does this; ask/tell does
    not), so a sweep that dies mid-trial leaves a trial that ``fail_stale_trials`` can fail."""
    try:
        from optuna.storages._heartbeat import get_heartbeat_thread
    except ImportError:  # pragma: no cover - optuna moved it
        yield
        return
    thread = get_heartbeat_thread(trial._trial_id, storage)
    with thread:
        yield


@dataclass
class SweepConfig:
    """A sweep request. ``trials`` is the study's total: re-running resumes up to it.

    What is tuned is ``workload`` (a built-in name, a ``Workload`` factory or a
    ``@tuner.trainable`` function as ``FILE.py:NAME``), or ``command``: a script's command line
    whose ``{knob}`` fields are filled per trial (launcher mode; then ``name`` and, for time to
    target, ``target`` say what it is). ``framework`` None: the one the workload file declares,
    else ``torch``."""

    workload: str | None = None
    framework: str | None = None
    device: str = "cpu"
    objective: str = "time-to-target"
    trials: int = 20
    timeout: float | None = None
    space: str | None = None
    study: str | None = None
    seed: int | None = None
    sampler: str = "tpe"
    pruner: str = "median"
    confirm_top: int = 2
    confirm_repeats: int = 3
    trial_timeout: float | None = None
    budget_s: float | None = None
    isolate: bool = True
    track: bool = True
    #: Bound the batch size by a probe of the largest that fits before the study: ``"auto"`` does
    #: so on accelerators (on the CPU, host memory is rarely the limit and the kernel kills a
    #: process rather than raising), ``"on"`` / ``"off"`` force it.
    batch_probe: str = "auto"
    #: Trial processes working on the study at once on this machine (``--workers``): this one
    #: and ``workers - 1`` ``perftune worker`` processes. Needs a storage server (not SQLite).
    workers: int = 1
    #: A trial whose worker died (no heartbeat for ``grace_s``) is failed and retried, at most
    #: ``max_retry`` times.
    max_retry: int = 2
    heartbeat_s: float = 30.0
    grace_s: float = 120.0
    #: Which of several workers this process is (offsets the sampler's seed).
    worker_index: int = 0
    #: Launcher mode: the command template, the workload's name, its target and mode, and the
    #: training seconds between due evaluations (a workload says its own).
    command: list[str] | None = None
    name: str | None = None
    target: float | None = None
    mode: str = "max"
    eval_interval_s: float | None = None

    def __post_init__(self) -> None:
        if self.framework is None:
            self.framework = (declared_framework(self.workload) if self.workload else None) or "torch"

    def validate(self) -> None:
        get_backend(self.framework)
        objective = get_objective(self.objective)
        if self.command:
            self._validate_command(objective.measure)
        elif self.workload is None:
            raise UsageError("--workload: give a workload (a built-in name or FILE.py:FUNC), or a "
                             "command after -- (perftune sweep --name N --target T -- python train.py ...)")
        else:
            if self.name is not None or self.target is not None or self.eval_interval_s is not None:
                raise UsageError("--name/--target/--eval-interval: only with a command after -- (a "
                                 "workload says its own name, target and evaluation interval)")  # fmt: skip
            check_spec(self.workload, self.framework)
        kind, colon, index = self.device.partition(":")
        classes = get_backend(self.framework).device_classes
        if kind not in classes and self.device != "all":
            raise UsageError(f"--device {self.device}: the {self.framework} backend drives "
                             f"{', '.join(classes)}")  # fmt: skip
        if colon and not (re.fullmatch(r"[0-9]{1,4}", index) and int(index) <= MAX_DEVICE_INDEX):
            raise UsageError(f"--device {self.device}: the index must be an integer from 0 to "
                             f"{MAX_DEVICE_INDEX}")  # fmt: skip
        if self.batch_probe not in ("auto", "on", "off"):
            raise UsageError(f"--batch-probe {self.batch_probe}: choose auto, on or off")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler {self.sampler}: unknown (choose from: {', '.join(SAMPLERS)})")
        if self.pruner not in PRUNERS:
            raise UsageError(f"--pruner {self.pruner}: unknown (choose from: {', '.join(PRUNERS)})")
        for attr, (flag, low, high, unit) in LIMITS.items():
            if getattr(self, attr) is not None or attr not in OPTIONAL:
                check_number(flag, getattr(self, attr), low, high, unit)
        if self.grace_s <= self.heartbeat_s:
            raise UsageError(f"--grace-period {_num(self.grace_s)}: must be longer than "
                             f"--heartbeat {_num(self.heartbeat_s)} (a running trial would count "
                             "as dead)")  # fmt: skip
        if self.space is not None and not os.path.isfile(self.space):
            raise UsageError(f"--space {self.space}: file not found")
        if self.study is not None and not self.study.strip():
            raise UsageError("--study: must not be empty")
        if self.study is not None and not re.fullmatch(r"[\w.@+=-]+", self.study):
            raise UsageError(f"--study {self.study}: use letters, digits and . _ - + = @ only")
        check_name("--study", self.study, limit=MAX_STUDY, optional=True)

    def _validate_command(self, measure: str) -> None:
        from tuner.trial.launcher import template_fields

        if self.workload is not None:
            raise UsageError("--workload and a command after --: give one of them")
        if not self.name:
            raise UsageError("--name: a launched command needs a workload name (perftune sweep "
                             "--name my-job --target 0.9 -- python train.py ...)")  # fmt: skip
        check_name("--name", self.name)
        if self.mode not in ("max", "min"):
            raise UsageError(f"--mode {self.mode}: choose max or min")
        if measure == "converge" and self.target is None:
            raise UsageError("--target: time to target needs the metric's target (or "
                             "--objective throughput)")  # fmt: skip
        if self.target is not None:
            check_number("--target", self.target, -1e15, 1e15, "number")
        template_fields(self.command)

    def describe_command(self) -> dict[str, Any]:
        """A launched command's workload description (what a Workload's ``describe`` says)."""
        return {"name": self.name, "framework": self.framework, "kind": "command",
                "loss": "-", "metric": "-", "target": self.target, "mode": self.mode,
                "budget_s": float(self.budget_s or 60.0), "eval_interval_s": self.eval_interval_s or 0.25,
                "flops_per_sample": None, "description": " ".join(self.command or [])}  # fmt: skip


@dataclass
class Measured:
    """A config re-measured in the confirmation round."""

    label: str
    config: dict[str, Any]
    values: list[float]
    trial_number: int | None = None
    failures: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.values) and not self.failures

    @property
    def stats(self) -> dict[str, float] | None:
        return summarize(self.values) if self.values else None


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: ``progress(event, data)``: "start" {total, done}, "trial" {number, state, value, best, ...},
#: "confirm" {label, repeat, total}, "done" {}.
ProgressFn = Callable[[str, dict[str, Any]], None]


def _grid_sampler_class():
    import optuna

    class GridSampler(optuna.samplers.GridSampler):
        """Optuna's grid sampler for an ask/tell loop.

        The enqueued baseline takes the grid point it matches (if any), each other trial takes
        the first unvisited point in the (seeded) grid order, and exhausting the grid ends the
        loop (``is_exhausted``) instead of calling ``study.stop()``, which only works inside
        ``study.optimize``.
        """

        def before_trial(self, study, trial) -> None:
            attrs = trial.system_attrs
            if "grid_id" in attrs:
                return
            storage = study._storage
            if "fixed_params" in attrs:
                fixed = attrs["fixed_params"]
                names = [n for n in self._param_names if n in fixed]
                for gid, point in enumerate(self._all_grids):
                    if all(point[self._param_names.index(n)] == fixed[n] for n in names):
                        storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
                        storage.set_trial_system_attr(trial._trial_id, "grid_id", gid)
                        break
                return
            unvisited = self._get_unvisited_grid_ids(study)
            gid = unvisited[0] if unvisited else 0
            storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
            storage.set_trial_system_attr(trial._trial_id, "grid_id", gid)

        def after_trial(self, study, trial, state, values) -> None:
            pass

    return GridSampler


def _GridSampler(grid, seed):  # noqa: N802 - a class factory (optuna is imported lazily)
    return _grid_sampler_class()(grid, seed=seed)


def _sampler(name: str, seed: int | None, space):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _GridSampler(space.grid(), seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.GPSampler(seed=seed)


def _pruner(name: str, measure: str):
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    # time-to-target: compare at equal training time, after 5 evaluations (1 s for the
    # built-ins): earlier, the validation metric is too noisy to judge a config.
    # throughput: from the second timed window on.
    warmup = 5 if measure == "converge" else 1
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup)


def _quiet_optuna() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def _storage(url: str, cfg: SweepConfig | None = None):
    """Optuna's storage for ``url``: an RDB storage with heartbeats (a trial whose process died
    is failed after the grace period and retried), or ``journal:///path`` for Optuna's journal
    file (parallel workers on one machine without a database server; no heartbeats)."""
    import optuna

    from storage import redact_text, redact_url

    _quiet_optuna()
    cfg = cfg or SweepConfig(workload="-")
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = url.split(":", 1)[1].removeprefix("///").removeprefix("//")
        try:
            return optuna.storages.JournalStorage(JournalFileBackend("/" + path.lstrip("/")))
        except OSError as exc:
            raise UsageError(f"--storage {url}: cannot open the journal file ({exc.strerror})") from None
    try:
        # Opening it can meet a connection being dropped too (a server restarting): retried
        # briefly; a server that stays unreachable is reported after that.
        storage = _recovery.retry(
            _recovery.rdb_storage_class(),  # whose calls are retried when the connection drops
            url, engine_kwargs=_recovery.engine_kwargs(url), heartbeat_interval=int(cfg.heartbeat_s),
            grace_period=int(cfg.grace_s), heartbeat_stale_trial_callback=_recovery.retry_callback(cfg.max_retry),
            what="opening the Optuna storage", budget_s=STORAGE_OPEN_RETRY_S)  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        reason = redact_text(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise UsageError(f"--storage {redact_url(url)}: cannot open the Optuna storage ({reason})") from None
    if url.startswith("sqlite"):
        _fast_sqlite(storage.engine)
    return storage


def _fast_sqlite(engine) -> None:
    """WAL journal and ``synchronous=NORMAL`` on an SQLite study database: a commit no longer
    waits for an fsync (about 20 ms per trial here), and a crash of the sweep loses nothing that
    was committed (only a power cut can lose the last transactions)."""
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    engine.dispose()  # pooled connections were opened before the listener


def _trial_timeout(cfg: SweepConfig, objective: Objective, budget: float) -> float:
    if cfg.trial_timeout:
        return cfg.trial_timeout
    if objective.measure == "throughput":
        return 120.0
    return 2 * budget + 60


def _failure_tag(outcome: TrialOutcome) -> str:
    return outcome.cause or ""


class _Sweep:
    def __init__(self, cfg: SweepConfig, ws: Workspace, progress: ProgressFn | None,
                 executor=None, tracker=None) -> None:  # fmt: skip
        self.cfg, self.ws = cfg, ws
        self.progress = progress or (lambda event, data: None)
        self.objective = get_objective(cfg.objective)
        self.spec = " ".join(cfg.command) if cfg.command else canonical_spec(cfg.workload)
        #: Knobs a launched command's template applies (read, as far as the report goes).
        self.template_knobs: list[str] = []
        self._executor, self._tracker = executor, tracker
        self.failures: list[dict[str, Any]] = []
        self._peaks: dict[str, tuple[float | None, str | None]] = {}
        # Workers of one study must not sample the same configs: offset the sampler's seed.
        self.seed = None if cfg.seed is None else cfg.seed + cfg.worker_index
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.probe_info: dict[str, Any] | None = None
        #: Checked before each trial: True stops starting trials (a cancelled sweep).
        self.should_stop: Callable[[], bool] = lambda: False
        self.cancelled = False

    # -- setup (nothing written until every check passed)
    def prepare(self) -> None:
        from search_spaces import Capabilities, SpaceError, load_space
        from storage import StoreError, open_store
        from tuner.executor import make_executor
        from tuner.tracking import check_database, check_tracking, make_tracker

        cfg, ws = self.cfg, self.ws
        cfg.validate()
        if cfg.workers > 1 and ws.storage.startswith("sqlite"):
            raise UsageError(f"--workers {cfg.workers}: parallel workers need a database server for "
                             "the Optuna storage (--storage postgresql://...), or Optuna's journal "
                             "file on one machine (--storage journal:///path/optuna.journal); "
                             "SQLite would fail with 'database is locked'")  # fmt: skip
        if not ws.storage.startswith("journal:"):
            check_database(ws.storage, "--storage")
        check_database(ws.db, "--db")
        if cfg.track:
            check_tracking(ws.tracking_uri)
        self.executor = self._executor or make_executor(cfg.framework, isolate=cfg.isolate,
                                                        log_dir=None)  # fmt: skip
        self.workload = cfg.describe_command() if cfg.command else self.executor.describe(self.spec)
        check_name("--name" if cfg.command else f"--workload {cfg.workload}: name", self.workload.get("name"))
        devices = [Device.from_discovery(cfg.framework, d) for d in self.executor.devices()]
        self.device = select(devices, cfg.device)
        caps = get_backend(cfg.framework).capabilities(self.device.kind)
        capabilities = Capabilities(params=frozenset(caps["params"]),
                                    choices={k: frozenset(v) for k, v in caps["choices"].items()},
                                    framework=cfg.framework)  # fmt: skip
        try:
            self.space = load_space(cfg.framework, self.device.kind, resources=self.device.resources,
                                    override=cfg.space, supported=capabilities)  # fmt: skip
        except SpaceError as exc:
            raise UsageError(str(exc)) from None
        if cfg.command:
            from tuner.trial.launcher import command_space, template_fields

            self.space = command_space(self.space, cfg.command)
            self.template_knobs = template_fields(cfg.command)
        self.baseline = self.space.defaults()
        self.study_name = cfg.study or (f"{self.workload['name']}-{cfg.framework}-"
                                        f"{self.device.spec.replace(':', '')}-{cfg.objective}")  # fmt: skip
        self.budget = float(cfg.budget_s or self.workload["budget_s"])
        # Only now touch the databases and the workspace.
        ws.prepare()
        if getattr(self.executor, "log_dir", "") is None:
            self.executor.log_dir = str(ws.logs)
        with ws.setup_lock():  # another sweep starting now waits until the schemas are made
            self.storage = _storage(ws.storage, cfg)
            try:
                self.store = open_store(ws.db, create=True)
            except StoreError as exc:
                raise UsageError(f"--db: {exc}") from None
            self.tracker = self._tracker or make_tracker(ws, track=cfg.track)
        _recovery.harden(self)  # store writes, MLflow calls: retried when the connection drops

    def create_study(self):
        import optuna

        _quiet_optuna()  # again: importing MLflow resets warning filters
        study = optuna.create_study(
            storage=self.storage, study_name=self.study_name, load_if_exists=True,
            sampler=_sampler(self.cfg.sampler, self.seed, self.space),
            pruner=_pruner(self.cfg.pruner, self.objective.measure),
            direction=self.objective.direction,
        )  # fmt: skip
        if study.direction.name.lower() != self.objective.direction:
            raise UsageError(f"--study {self.study_name}: exists with direction "
                             f"{study.direction.name.lower()}, not {self.objective.direction}")  # fmt: skip
        for key, mine in (("workload", self.workload["name"]), ("framework", self.cfg.framework),
                          ("device", self.device.fingerprint)):  # fmt: skip
            prior = study.user_attrs.get(key)
            if prior and prior != mine:
                what = f"device {prior[:12]}" if key == "device" else f"{key} {prior}"
                raise UsageError(f"--study {self.study_name}: belongs to {what}, not this one "
                                 "(results from different setups must not mix; name another "
                                 "study with --study)")  # fmt: skip
        for key, value in (("workload", self.workload["name"]), ("framework", self.cfg.framework),
                           ("device", self.device.fingerprint), ("objective", self.cfg.objective)):  # fmt: skip
            study.set_user_attr(key, value)
        # A trial of a killed worker on this machine: failed and retried now, not after the
        # grace period (other machines' go by heartbeats).
        _recovery.fail_stale(study, self.cfg.grace_s, self.cfg.max_retry)
        self.bound_batch_size(study)
        # The baseline runs once per study; again only if its run was interrupted.
        if not any(t.user_attrs.get("baseline") and t.user_attrs.get("cause") not in NOT_COUNTED
                   for t in study.get_trials(deepcopy=False)):  # fmt: skip
            study.enqueue_trial(self.space.suggested_params(self.baseline),
                                user_attrs={"baseline": True})  # fmt: skip
        return study

    # -- batch-size bound, MFU
    def bound_batch_size(self, study) -> None:
        """Cap ``batch_size`` at the largest that fits on this device (found once per study by a
        probe in a trial process, then kept in the study so a resumed study searches the same
        space)."""
        from search_spaces import SpaceError

        spec = self.space.params.get("batch_size")
        wanted = self.cfg.batch_probe == "on" or (self.cfg.batch_probe == "auto" and self.device.kind != "cpu")
        if spec is None or spec.type != "int" or not wanted:
            return
        if "probe" not in get_backend(self.cfg.framework).measures:
            return
        bound = study.user_attrs.get("max_batch_size")
        if bound is None:
            bound = self.probe(max(spec.choices) if spec.choices else int(spec.high))
            if bound is None:
                return
            study.set_user_attr("max_batch_size", bound)
        try:
            self.space = self.space.capped("batch_size", int(bound))
        except SpaceError as exc:
            raise UsageError(f"--device {self.cfg.device}: {exc}") from None
        self.baseline = self.space.defaults()
        if self.cfg.sampler == "grid":
            study.sampler = _sampler("grid", self.seed, self.space)

    def probe(self, high: int) -> int | None:
        """Run the batch-size probe; return the bound, or None if it told nothing."""
        self.progress("probe", {"max": high})
        seen: dict[int, bool] = {}

        def on_report(bs: int, fitted: float) -> bool:
            seen[int(bs)] = bool(fitted)
            return False

        config = {**self.baseline, "probe_max": high}
        outcome = self.execute(self.request(config, seed=self.cfg.seed or 0, number=None,
                                            label="batch-probe", measure="probe"), on_report)  # fmt: skip
        info = {"tried": sorted(seen.items())}
        if outcome.status == "ok":
            bound = int(outcome.metrics["max_batch_size"])
            info.update(outcome.metrics)
        else:  # killed mid-probe (the kernel's OOM killer): keep what the reports told
            fits = [b for b, ok in seen.items() if ok]
            failed = [b for b, ok in seen.items() if not ok]
            bound = max(fits) if fits else None
            info.update(failure=outcome.cause, message=outcome.message, first_failure=min(failed, default=None))
        self.probe_info = {**info, "max_batch_size": bound}
        self.progress("probed", self.probe_info)
        return bound

    def add_mfu(self, config: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Achieved FLOP/s and MFU (nanoGPT's way: achieved over peak) of a measured trial, from
        the workload's FLOPs per sample and the device's peak in the trial's precision: the
        vendor table when the device is in it, else a matmul measured here once per precision."""
        flops, sps = self.workload.get("flops_per_sample"), metrics.get("throughput_sps")
        if not flops or not sps:
            return
        peak, source = self.peak_flops(str(config.get("precision", "fp32")))
        achieved = float(sps) * float(flops)
        metrics["achieved_tflops"] = achieved / 1e12
        if peak:
            devices = int(metrics.get("devices_used") or 1)
            metrics["peak_tflops"] = peak * devices / 1e12
            metrics["mfu"] = achieved / (peak * devices)
            metrics["mfu_peak_source"] = source

    def peak_flops(self, precision: str) -> tuple[float | None, str | None]:
        from tuner.backends._flops import lookup_peak

        if precision in self._peaks:
            return self._peaks[precision]
        found = lookup_peak(self.device.name, precision) if self.device.kind != "cpu" else None
        if found is not None:
            self._peaks[precision] = (found[0], f"table:{found[1]}")
        elif "peak" in get_backend(self.cfg.framework).measures:
            out = self.execute(self.request({"precision": precision}, seed=0, number=None,
                                            label=f"peak-{precision}", measure="peak"))  # fmt: skip
            peak = out.metrics.get("peak_flops") if out.status == "ok" else None
            self._peaks[precision] = (peak, "measured matmul" if peak else None)
        else:
            self._peaks[precision] = (None, None)
        return self._peaks[precision]

    # -- many workers
    def share(self, study, run_id: str | None) -> None:
        """Put what a ``perftune worker`` needs to join into the study: the sweep's settings,
        the search-space override's text (the worker may be on another machine) and the MLflow
        run its trials nest under."""
        cfg = self.cfg
        shared = {k: getattr(cfg, k) for k in ("workload", "framework", "device", "objective", "trials",
                                                "sampler", "pruner", "seed", "trial_timeout", "budget_s",
                                                "batch_probe", "max_retry", "heartbeat_s", "grace_s",
                                                "command", "name", "target", "mode", "eval_interval_s")}  # fmt: skip
        shared["workload"] = None if cfg.command else self.spec
        if cfg.space:
            with open(cfg.space) as f:
                shared["space_yaml"], shared["space_name"] = f.read(), os.path.basename(cfg.space)
        study.set_user_attr("perftune_sweep", shared)
        study.set_user_attr("mlflow_run_id", run_id)

    def spawn_workers(self) -> list[subprocess.Popen]:
        """``workers - 1`` ``perftune worker`` processes on this machine (this one is the first).
        The database URLs reach them in their environment (:meth:`Workspace.environ`), readable
        by this user only, never on their command lines, which any user sees (``ps``)."""
        cmd = [sys.executable, "-m", "tuner.cli", "worker", "--study", self.study_name, "--quiet"]
        env = {**os.environ, **self.ws.environ(), "PERFTUNE_NO_PROGRESS": "1"}
        procs = []
        for i in range(1, self.cfg.workers):
            with open(self.log_file(f"worker-{i}"), "ab") as log:  # the worker keeps its own copy
                procs.append(subprocess.Popen([*cmd, "--worker-index", str(i)], env=env,
                                              stdout=subprocess.DEVNULL, stderr=log))  # fmt: skip
        return procs

    def wait_workers(self, procs: list[subprocess.Popen]) -> None:
        for i, p in enumerate(procs, 1):
            if p.wait() != 0:
                self.failures.append({"trial": None, "cause": "worker", "message":
                                      f"worker {i} exited with status {p.returncode} (see "
                                      f"{self.log_file(f'worker-{i}')})"})  # fmt: skip

    @staticmethod
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

    # -- helpers
    def trial_budget(self, study) -> float:
        """Training-time cap of a time-to-target trial: the workload's budget, tightened to
        ``BOUND_FACTOR`` x the best time so far (a trial still short of the target by then
        cannot win; the slack leaves room for noise, which the confirmation round settles)."""
        if self.objective.measure != "converge":
            return self.budget
        try:
            best = float(study.best_value)
        except ValueError:
            return self.budget
        return max(self.budget * 0.05, min(self.budget, BOUND_FACTOR * best))

    def request(self, config: dict[str, Any], *, seed: int, number: int | None, label: str,
                measure: str | None = None) -> TrialRequest:  # fmt: skip
        return TrialRequest(
            workload=self.spec, framework=self.cfg.framework, device=self.cfg.device,
            config=config, measure=measure or self.objective.measure, seed=seed,
            device_info=self.device.to_dict(),
            budget_s=self.cfg.budget_s, timeout_s=_trial_timeout(self.cfg, self.objective, self.budget),
            trial_number=number,
            log_path=str(self.log_file(label)),
            command=self.cfg.command, description=self.workload if self.cfg.command else None,
        )  # fmt: skip

    def execute(self, request: TrialRequest, on_report=None) -> TrialOutcome:
        """Run ``request`` on the executor. The outcome's message (the trial's own words, which
        may quote a URL with its password) is redacted before anything records it."""
        from storage import redact_text

        outcome = self.executor.run(request, on_report)
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
                "workload": self.workload["name"], "objective": self.cfg.objective,
                "study": self.study_name}  # fmt: skip
        return {**base, **{k: str(v) for k, v in extra.items() if v is not None}}

    @staticmethod
    def _finished(study) -> list:
        """Trials that count towards ``--trials``. Not counted: configs rejected before running,
        interrupted trials, and trials whose worker died (FAIL without a cause: failed by
        ``fail_stale_trials`` and retried as a new trial)."""
        from optuna.trial import TrialState

        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return [t for t in study.get_trials(deepcopy=False, states=done)
                if t.user_attrs.get("cause") not in NOT_COUNTED
                and not (t.state == TrialState.FAIL and "cause" not in t.user_attrs)]  # fmt: skip

    def _wait_for_others(self, study) -> bool:
        """All trials are handed out: wait while other workers' trials run (a dead worker's
        trial is failed, after the grace period or at once on this machine, and retried here).
        True if there is more to do."""
        from optuna.trial import TrialState

        storage = study._storage
        if not (hasattr(storage, "is_heartbeat_enabled") and storage.is_heartbeat_enabled()):
            return False  # without heartbeats a dead worker's trial cannot be told from a slow one
        while study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            time.sleep(min(2.0, self.cfg.heartbeat_s))
            _recovery.fail_stale(study, self.cfg.grace_s, self.cfg.max_retry)
            if self._started(study) < self.cfg.trials:
                return True
        return False

    # -- the loop
    def _started(self, study) -> int:
        """Trials that count towards ``--trials``, finished or running in any worker."""
        from optuna.trial import TrialState

        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        return len(self._finished(study)) + len(running)

    def _surplus(self, study, trial) -> bool:
        """Workers that asked at the same moment may overshoot ``--trials``: the trials numbered
        first keep their place, a later one is given back (FAIL, cause ``surplus``, not counted;
        it has no params yet, so the samplers see nothing)."""
        from optuna.trial import TrialState

        ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if t.number < trial.number] + [t for t in self._finished(study) if t.number < trial.number]  # fmt: skip
        if len(ahead) < self.cfg.trials:
            return False
        trial.set_user_attr("cause", "surplus")
        study.tell(trial, state=TrialState.FAIL)
        return True

    def run_trials(self, study, deadline: float | None) -> None:
        done = len(self._finished(study))
        self.progress("start", {"total": self.cfg.trials, "done": done})
        #: Why each config rejected since the last trial that ran was rejected (a list each).
        self.rejected: list[list[str]] = []
        sampler = study.sampler
        while self._started(study) < self.cfg.trials or self._wait_for_others(study):
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self.should_stop():
                self.cancelled = True
                break
            if hasattr(sampler, "is_exhausted") and sampler.is_exhausted(study):
                break
            _recovery.fail_stale(study, self.cfg.grace_s, self.cfg.max_retry)  # dead workers' trials
            trial = study.ask()
            _recovery.claim(trial)  # user attrs worker (host:pid) and worker_process
            if self._surplus(study, trial):  # only when workers asked at the same moment
                break
            try:
                counted = self.one_trial(study, trial)
            except BaseException as exc:
                # Leave nothing RUNNING: whatever stopped us is recorded on the trial.
                _fail_if_running(study, trial, exc)
                raise
            if counted:
                done = len(self._finished(study))
                best = None
                with contextlib.suppress(ValueError):
                    best = study.best_value
                self.progress("trial", {"done": done, "best": best, **self.last})

    def one_trial(self, study, trial) -> bool:
        """Sample, run, tell and log one trial; False if it does not count towards --trials."""
        from optuna.trial import TrialState

        config = self.space.sample(trial)
        trial.set_user_attr("config", config)
        violations = self.space.violations(config)
        reasons = [f"constraint {v!r}" for v in violations]
        if not violations:
            try:
                get_backend(self.cfg.framework).check_config(config, self.device.to_dict())
            except InvalidConfig as exc:
                violations, reasons = [str(exc)], [self._backend_said(str(exc))]
        if violations:
            trial.set_user_attr("cause", "invalid")
            trial.set_user_attr("message", "; ".join(violations))
            study.tell(trial, state=TrialState.PRUNED)  # the sampler learns to avoid it
            self.count_invalid(reasons)
            return False

        def on_report(step: int, value: float) -> bool:
            trial.report(value, step)
            return trial.should_prune()

        request = self.request(config, seed=self.cfg.seed or 0, number=trial.number,
                               label=f"trial-{trial.number}")  # fmt: skip
        request.budget_s = self.trial_budget(study)
        with _heartbeat(trial, self.storage):
            outcome = self.execute(request, on_report)
        value = self.objective.value(outcome.metrics) if outcome.status == "ok" else None
        if outcome.status == "ok":
            self.add_mfu(config, outcome.metrics)
        if outcome.status == "failed" and outcome.cause == "oom":
            # An infeasible point, not a plain failure: PRUNED with a violated constraint, so
            # the samplers (TPE, GP, NSGA) learn that this region does not fit in memory.
            state, note = TrialState.PRUNED, "oom"
            trial.set_constraint("fits_in_memory", 1.0)
            trial.set_user_attr("cause", "oom")
            trial.set_user_attr("infeasible", True)
            trial.set_user_attr("message", outcome.message)
            self.failures.append({"trial": trial.number, "cause": "oom",
                                  "message": outcome.message, "config": config})  # fmt: skip
        elif outcome.status == "failed":
            state, note = TrialState.FAIL, outcome.cause
            trial.set_user_attr("cause", outcome.cause)
            trial.set_user_attr("message", outcome.message)
            self.failures.append({"trial": trial.number, "cause": outcome.cause,
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
            trial.set_user_attr("knobs_read", sorted({*outcome.knobs_read, *self.template_knobs}))
        trial.set_user_attr("wall_s", outcome.wall_s)
        if state == TrialState.COMPLETE:
            study.tell(trial, value)
        else:
            study.tell(trial, state=state)
        self.log_trial(trial.number, config, outcome, value,
                       "FAIL" if note == "oom" else state.name, note)  # fmt: skip
        self.last = {"number": trial.number, "state": state.name, "value": value, "cause": note,
                     "wall_s": outcome.wall_s}  # fmt: skip
        if outcome.usage:  # the training code is unusable as it is (it measured nothing)
            what = "the command" if self.cfg.command else f"--workload {self.spec}"
            raise UsageError(f"{what}: {outcome.message}")
        if note in NOT_COUNTED:  # the backend rejected the config
            self.count_invalid([self._backend_said(outcome.message or note)])
            return False
        self.rejected.clear()
        return True

    def _backend_said(self, message: str) -> str:
        return f"the {self.cfg.framework} backend ({message})"

    def count_invalid(self, reasons: list[str]) -> None:
        """Count a config rejected before it could run (told to Optuna already, as ``invalid``:
        it does not count towards ``--trials``). The ``MAX_CONSECUTIVE_INVALID``-th in a row
        stops the sweep with a UsageError naming what rejected the most of them: a constraint
        (the search space is at fault) or the backend (the workload is)."""
        self.rejected.append(reasons)
        if len(self.rejected) < MAX_CONSECUTIVE_INVALID:
            return
        counts = Counter(r for rs in self.rejected for r in rs)
        reason, times = counts.most_common(1)[0]
        subject = f"--workload {self.spec}"
        if reason.startswith("constraint "):
            subject = f"search space {self.space.name}"
        raise UsageError(f"{subject}: {len(self.rejected)} configs in a row were rejected, "
                         f"{times} of them by {reason}")  # fmt: skip

    def log_trial(self, number: int | None, config: dict[str, Any], outcome: TrialOutcome,
                  value: float | None, state: str, note: str | None, phase: str = "search") -> None:  # fmt: skip
        metrics = dict(outcome.metrics)
        if value is not None:
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
        name = f"trial-{number}" if phase == "search" else phase
        status = "FAILED" if state == "FAIL" else "FINISHED"
        self.tracker.log_trial(
            name, config, metrics, curves,
            self.tags(trial_state=state, failure_cause=note if state == "FAIL" else None,
                      outcome=note, optuna_trial_number=number, phase=phase,
                      energy_source=metrics.get("energy_source"),
                      mfu_peak_source=metrics.get("mfu_peak_source"),
                      failure_message=(outcome.message or "")[:500] if state == "FAIL" else None),
            status=status,
        )  # fmt: skip

    # -- confirmation
    def confirm(self, study) -> tuple[Measured | None, Measured | None]:
        from optuna.trial import TrialState

        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        complete.sort(key=lambda t: t.value, reverse=self.objective.direction == "maximize")
        baseline_key = json.dumps(self.baseline, sort_keys=True)
        candidates: list[Measured] = [Measured("baseline", self.baseline, [])]
        seen = {baseline_key}
        for t in complete:
            cfg = t.user_attrs.get("config") or t.params
            key = json.dumps(cfg, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            candidates.append(Measured(f"candidate-{t.number}", cfg, [], trial_number=t.number))
            if len(candidates) > self.cfg.confirm_top:
                break
        total = len(candidates) * self.cfg.confirm_repeats
        i = 0
        for cand in candidates:
            for r in range(self.cfg.confirm_repeats):
                i += 1
                self.progress("confirm", {"label": cand.label, "repeat": r + 1, "i": i, "total": total})
                seed = (self.cfg.seed or 0) + 1000 + r
                outcome = self.execute(self.request(cand.config, seed=seed, number=cand.trial_number,
                                                    label=f"{cand.label}-r{r + 1}"))  # fmt: skip
                value = self.objective.value(outcome.metrics) if outcome.status == "ok" else None
                if value is None:
                    cand.failures.append(outcome.cause or "not_reached")
                else:
                    self.add_mfu(cand.config, outcome.metrics)
                    cand.values.append(value)
                    cand.metrics = outcome.metrics
            stats = cand.stats
            self.tracker.log_trial(
                f"confirm-{cand.label}", cand.config,
                {"objective_median": stats["median"], "objective_spread": stats["spread"],
                 "objective_min": stats["min"], "objective_max": stats["max"]} if stats else {},
                {"objective_repeat": list(enumerate(cand.values))},
                self.tags(phase="confirmation", candidate=cand.label,
                          optuna_trial_number=cand.trial_number,
                          failures=",".join(cand.failures) or None),
            )  # fmt: skip
        base = candidates[0]
        qualified = [c for c in candidates if c.ok]
        if not qualified:
            return base, None
        pick = min if self.objective.direction == "minimize" else max
        winner = pick(qualified, key=lambda c: c.stats["median"])
        return base, winner

    # -- the end
    def artifacts(self, study, winner: Measured | None, base: Measured | None, report: dict) -> None:
        import yaml

        with tempfile.TemporaryDirectory() as tmp:
            if winner is not None:
                path = os.path.join(tmp, "best_config.yaml")
                with open(path, "w") as f:
                    yaml.safe_dump({"workload": self.workload["name"], "framework": self.cfg.framework,
                                    "device": self.device.to_dict(), "objective": self.cfg.objective,
                                    "config": winner.config, "value": winner.stats,
                                    "baseline": base.stats if base else None,
                                    "speedup": report.get("speedup")}, f, sort_keys=False)  # fmt: skip
                self.tracker.log_artifact(path)
            path = os.path.join(tmp, "search_space.json")
            with open(path, "w") as f:
                json.dump(self.space.to_dict(), f, indent=2, default=str)
            self.tracker.log_artifact(path)
            self._plots(study, tmp)

    def _plots(self, study, tmp: str) -> None:
        import optuna.visualization as vis
        from optuna.trial import TrialState

        plots = {"optimization_history": vis.plot_optimization_history,
                 "intermediate_values": vis.plot_intermediate_values}  # fmt: skip
        if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) >= 2:
            plots["param_importances"] = vis.plot_param_importances
        for name, fn in plots.items():
            try:
                with warnings.catch_warnings():  # importance warns on small studies; fine here
                    warnings.simplefilter("ignore")
                    fig = fn(study)
                path = os.path.join(tmp, f"{name}.html")
                fig.write_html(path, include_plotlyjs=True, full_html=True)
                self.tracker.log_artifact(path, "plots")
            except Exception as exc:  # noqa: BLE001 - a plot is not worth failing a sweep
                self.failures.append({"trial": None, "cause": "plot", "message": f"{name}: {exc}"})


def run_worker(study_name: str, ws: Workspace, progress: ProgressFn | None = None, *,
               worker_index: int = 1, executor=None, tracker=None) -> dict[str, Any]:  # fmt: skip
    """``perftune worker``: join an existing study and run its trials until it has its total,
    logging them under the sweep's MLflow run. The sweep that created the study (``perftune
    sweep``, or the same command again) confirms and stores the best afterwards."""
    import optuna

    from storage import redact_url

    _quiet_optuna()
    if ws.storage.startswith("sqlite:///") and not os.path.exists(ws.storage[len("sqlite:///"):]):
        raise UsageError(f"--study {study_name}: no such study (no Optuna storage at "
                         f"{redact_url(ws.storage)}; pass the sweep's --storage)")  # fmt: skip
    try:
        attrs = optuna.load_study(study_name=study_name, storage=_storage(ws.storage)).user_attrs
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
        sw = _Sweep(cfg, ws, progress, executor, tracker)
        try:
            sw.prepare()
            study = sw.create_study()
            sw.tracker.attach(sw.workload["name"], attrs.get("mlflow_run_id"))
            sw.run_trials(study, None)
            return {"study": study_name, "worker": sw.worker_id,
                    "trials_run": sum(t.user_attrs.get("worker") == sw.worker_id
                                      for t in study.get_trials(deepcopy=False)),
                    "trials_done": len(sw._finished(study)), "trials": cfg.trials,
                    "tracking": _close_tracker(sw, tracker)}  # fmt: skip
        finally:
            if getattr(sw, "executor", None) is not None and executor is None:
                sw.executor.close()
            if getattr(sw, "store", None) is not None:
                sw.store.close()
            _close_tracker(sw, tracker)


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
    sw = _Sweep(cfg, ws, progress, executor, tracker)
    try:
        sw.prepare()
        report = _run(sw, cfg, t0, sweep_id, should_stop)
        report.tracking = _close_tracker(sw, tracker)
        if report.tracking is not None:  # a placeholder run id may have its real id by now
            report.mlflow_run_id = sw.tracker.parent_run_id or report.mlflow_run_id
            report.mlflow_experiment_id = sw.tracker.experiment_id or report.mlflow_experiment_id
        return report
    finally:
        ex = getattr(sw, "executor", None)
        if ex is not None and executor is None:
            ex.close()
        store = getattr(sw, "store", None)
        if store is not None:
            store.close()
        _close_tracker(sw, tracker)


def _run(sw: _Sweep, cfg: SweepConfig, t0: float, sweep_id: int | None = None,
         should_stop: Callable[[], bool] | None = None) -> SweepReport:  # fmt: skip
    from optuna.trial import TrialState

    study = sw.create_study()
    # A sweep of this study killed on this machine: its store row interrupted, its MLflow run KILLED.
    _recovery.recover_sweep(sw.store, sw.study_name, sw.ws.tracking_uri if cfg.track and sw._tracker is None
                            else None, sw.workload["name"])  # fmt: skip
    device = sw.device
    sw.store.upsert_device(device.fingerprint, framework=cfg.framework, kind=device.kind,
                           name=device.name, count=device.count,
                           memory_bytes=device.memory_bytes, info=device.to_dict())  # fmt: skip
    sw.store.upsert_workload(sw.workload["name"], framework=cfg.framework,
                             info={**sw.workload, "spec": sw.spec})  # fmt: skip
    run_id = sw.tracker.start_sweep(
        sw.workload["name"], f"{sw.study_name}@{time.strftime('%Y%m%d-%H%M%S')}",
        {"workload": sw.workload["name"], "workload_spec": sw.spec, "framework": cfg.framework,
         "device": device.kind, "objective": cfg.objective, "direction": sw.objective.direction,
         "trials": cfg.trials, "sampler": cfg.sampler, "pruner": cfg.pruner, "seed": cfg.seed,
         "search_space": sw.space.name, "study": sw.study_name, "target": sw.workload["target"],
         "confirm_top": cfg.confirm_top, "confirm_repeats": cfg.confirm_repeats,
         "budget_s": sw.budget, "max_batch_size": study.user_attrs.get("max_batch_size")},
        sw.tags(perftune_role="sweep", perftune_owner=_recovery.owner_tag()),
    )  # fmt: skip
    sweep_id = sw.store.start_sweep(study_name=sw.study_name, workload=sw.workload["name"],
                                    framework=cfg.framework, device_fingerprint=device.fingerprint,
                                    objective=cfg.objective, settings={**asdict(cfg),
                                    "mlflow_experiment_id": sw.tracker.experiment_id,
                                    "owner": _recovery.owner()},
                                    mlflow_run_id=run_id, sweep_id=sweep_id)  # fmt: skip
    state, summary = "failed", None
    _track_progress(sw, sweep_id, should_stop)
    sw.share(study, run_id)
    helpers = sw.spawn_workers()
    try:
        deadline = time.monotonic() + cfg.timeout if cfg.timeout else None
        sw.run_trials(study, deadline)
        if sw.cancelled:
            sw.stop_workers(helpers)
        sw.wait_workers(helpers)
        counts: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            cause = t.user_attrs.get("cause")
            if t.state == TrialState.FAIL and cause is None:
                cause = "lost"  # its worker died; failed by the heartbeat check and retried
            key = cause if cause in (*NOT_COUNTED, "oom", "lost") else t.state.name.lower()
            counts[key] = counts.get(key, 0) + 1
        base = winner = None
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) and not sw.cancelled:
            base, winner = sw.confirm(study)
        base_stats = base.stats if base else None
        win_stats = winner.stats if winner else None
        gain = speedup(base_stats["median"] if base_stats else None,
                       win_stats["median"] if win_stats else None, sw.objective.direction)  # fmt: skip
        stored, best_id = False, None
        if winner is not None:
            rec, stored = sw.store.save_best(
                workload=sw.workload["name"], framework=cfg.framework,
                device_fingerprint=device.fingerprint, objective=cfg.objective,
                direction=sw.objective.direction, unit=sw.objective.unit, config=winner.config,
                value=win_stats["median"], spread=win_stats["spread"],
                metrics={**{k: v for k, v in winner.metrics.items()
                            if isinstance(v, int | float | bool)
                            or k in ("mfu_peak_source", "energy_source")},
                         "repeats": winner.values, "trial_number": winner.trial_number},
                baseline_config=sw.baseline,
                baseline_value=base_stats["median"] if base_stats else None,
                speedup=gain, mlflow_run_id=run_id, sweep_id=sweep_id,
            )  # fmt: skip
            best_id = rec.id
        summary = {"baseline": _side(base), "best": _side(winner), "speedup": gain}
        sw.tracker.log_summary(
            {k: v for k, v in {
                "baseline_median": base_stats and base_stats["median"],
                "baseline_spread": base_stats and base_stats["spread"],
                "best_median": win_stats and win_stats["median"],
                "best_spread": win_stats and win_stats["spread"],
                "speedup": gain, **{f"trials_{k}": v for k, v in counts.items()}}.items()
             if v is not None},
            {"best_config": json.dumps(winner.config) if winner else "none"},
        )  # fmt: skip
        if best_id is not None:
            summary["best_config_id"] = best_id
        sw.artifacts(study, winner, base, summary)
        state = "cancelled" if sw.cancelled else "completed"
        return SweepReport(
            study_name=sw.study_name, workload=sw.workload["name"], framework=cfg.framework,
            device=device.to_dict(), objective=cfg.objective, direction=sw.objective.direction,
            unit=sw.objective.unit, trials=counts, baseline=_side(base), best=_side(winner),
            speedup=gain, stored=stored, best_config_id=best_id, mlflow_run_id=run_id,
            mlflow_experiment_id=sw.tracker.experiment_id, failures=sw.failures,
            duration_s=time.monotonic() - t0, sweep_id=sweep_id,
            batch_probe=sw.probe_info or ({"max_batch_size": study.user_attrs["max_batch_size"]}
                                          if "max_batch_size" in study.user_attrs else None),
            cancelled=sw.cancelled, warnings=unread_knobs_warning(study, sw.space),
        )  # fmt: skip
    except KeyboardInterrupt:
        state = "interrupted"
        raise
    finally:
        sw.stop_workers(helpers)
        try:
            n = len(study.get_trials(deepcopy=False))
            complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            sw.store.finish_sweep(sweep_id, state=state, n_trials=n, n_complete=complete,
                                  summary=summary if state in ("completed", "cancelled") else None)  # fmt: skip
        except Exception:  # noqa: BLE001 - never hide the original error
            pass
        sw.tracker.end_sweep({"completed": "FINISHED", "interrupted": "KILLED",
                              "cancelled": "KILLED"}.get(state, "FAILED"))  # fmt: skip


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


def _track_progress(sw: _Sweep, sweep_id: int, should_stop: Callable[[], bool] | None) -> None:
    """After each counted trial, write the sweep's progress to its store row and read back its
    cancel flag; stop starting trials once it (or ``should_stop()``) is set."""
    progress, flag = sw.progress, {"cancel": False}

    def tracked(event: str, data: dict[str, Any]) -> None:
        if event in ("start", "trial"):
            with contextlib.suppress(Exception):  # progress is worth no failed sweep
                flag["cancel"] = sw.store.update_progress(sweep_id, trials_done=data.get("done"),
                                                          best_value=data.get("best"))  # fmt: skip
        progress(event, data)

    sw.progress = tracked
    sw.should_stop = lambda: flag["cancel"] or bool(should_stop and should_stop())


def _close_tracker(sw: _Sweep, given) -> dict[str, Any] | None:
    """Close the tracker the sweep made (not one passed in): a bounded flush of what it
    spooled. Idempotent."""
    tracker = getattr(sw, "tracker", None)
    return tracker.close() if tracker is not None and given is None else None


def _side(m: Measured | None) -> dict[str, Any] | None:
    if m is None:
        return None
    shown = ("throughput_sps", "mfu", "achieved_tflops", "mfu_peak_source", "joules_per_sample",
             "avg_power_w", "energy_source", "peak_device_memory_mb", "peak_rss_mb")  # fmt: skip
    return {"label": m.label, "config": m.config, "trial_number": m.trial_number,
            "values": m.values, "failures": m.failures, "stats": m.stats,
            "metrics": {k: m.metrics[k] for k in shown if k in m.metrics}}  # fmt: skip


__all__ = ["PRUNERS", "SAMPLERS", "PerftuneError", "SweepConfig", "SweepReport", "run_sweep", "run_worker"]
