"""Optuna, as perftune uses it: its storage, samplers and pruners, and quiet logs.

A ground module: the sweep (:mod:`perftune.sweep`) and the tracking spool (:mod:`perftune._spool`)
build on it, and it imports neither. Optuna itself is imported inside the functions only
(``import perftune`` must stay light).
"""

from __future__ import annotations

import contextlib
from typing import Any

from perftune import _recovery
from perftune.errors import UsageError

SAMPLERS = ("tpe", "random", "grid", "cmaes", "gp", "nsga2")
PRUNERS = ("median", "none")
#: Seconds a dropped connection may keep the Optuna storage from opening (a worker that joins
#: while the server restarts) before it is reported.
STORAGE_OPEN_RETRY_S = 10.0
#: The storage's heartbeat settings when no sweep request gives them (``SweepConfig``'s defaults).
HEARTBEAT_S = 30.0
GRACE_S = 120.0
MAX_RETRY = 2


def quiet() -> None:
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def open_storage(url: str, cfg: Any = None):
    """Optuna's storage for ``url``: an RDB storage with heartbeats (a trial whose process died
    is failed after the grace period and retried), or ``journal:///path`` for Optuna's journal
    file (parallel workers on one machine without a database server; no heartbeats).

    ``cfg``: a ``SweepConfig`` (its ``heartbeat_s``, ``grace_s`` and ``max_retry``), or None for
    their defaults."""
    import optuna

    from perftune.storage import redact_text, redact_url

    quiet()
    heartbeat_s, grace_s, max_retry = ((HEARTBEAT_S, GRACE_S, MAX_RETRY) if cfg is None
                                       else (cfg.heartbeat_s, cfg.grace_s, cfg.max_retry))  # fmt: skip
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
            url, engine_kwargs=_recovery.engine_kwargs(url), heartbeat_interval=int(heartbeat_s),
            grace_period=int(grace_s), heartbeat_stale_trial_callback=_recovery.retry_callback(max_retry),
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


@contextlib.contextmanager
def heartbeat(trial, storage):
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


def make_sampler(name: str, seed: int | None, space):
    """The sampler ``name`` (one of :data:`SAMPLERS`); ``grid`` walks ``space.grid()``."""
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return _grid_sampler_class()(space.grid(), seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.GPSampler(seed=seed)


def make_pruner(name: str, measure: str):
    """The pruner ``name`` (one of :data:`PRUNERS`) for an objective that measures ``measure``."""
    import optuna

    if name == "none":
        return optuna.pruners.NopPruner()
    # time-to-target: compare at equal training time, after 5 evaluations (1 s for the
    # built-ins) and a third of the time the best config took: earlier, the validation metric is
    # too noisy to judge a config. throughput: from the second timed window on.
    if measure == "converge":
        return _median_pruner_class()(startup=3, warmup=5, share=1 / 3)
    return _median_pruner_class()(startup=3, warmup=1, share=0.0)


def ran_their_course(study) -> list:
    """The trials whose curves are whole: the completed ones, and those that trained to their
    budget without reaching the target (perftune tells them PRUNED, ``outcome`` not_reached);
    not those a pruner stopped, nor the invalid or failed ones."""
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return [t for t in done if t.state == TrialState.COMPLETE or t.user_attrs.get("outcome") == "not_reached"]


def _median_pruner_class():
    import optuna

    class MedianPruner(optuna.pruners.BasePruner):
        """Optuna's median rule (prune a trial whose best value so far is worse than the median
        of other trials' values at the same step), over the trials that ran their course
        (:func:`ran_their_course`), from ``startup`` such trials on. Optuna's ``MedianPruner``
        counts completed trials only: on a workload where few configs reach the target it never
        starts, and every config that misses costs its whole budget. No trial is judged before
        step ``warmup``, nor before ``share`` of the steps the best completed trial reported
        (a time-to-target trial's steps are evaluations at equal training time: the warm-up
        scales with the workload)."""

        def __init__(self, startup: int, warmup: int, share: float) -> None:
            self.startup, self.warmup, self.share = startup, warmup, share

        def prune(self, study, trial) -> bool:
            import math
            import statistics

            from optuna.trial import TrialState

            step = trial.last_step
            if step is None or step < self.warmup:
                return False
            maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
            peers = ran_their_course(study)
            done = [t for t in peers if t.state == TrialState.COMPLETE and t.last_step is not None]
            if done and step < self.share * (max if maximize else min)(done, key=lambda t: t.value).last_step:
                return False
            at = [t.intermediate_values[step] for t in peers if step in t.intermediate_values]
            at = [v for v in at if not math.isnan(v)]
            if len(peers) < self.startup or not at:
                return False
            own = [v for v in trial.intermediate_values.values() if not math.isnan(v)]
            if not own:
                return True  # nothing but NaN: diverged
            median = statistics.median(at)
            if maximize:
                return max(own) < median
            return min(own) > median

    return MedianPruner


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
