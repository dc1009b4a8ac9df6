"""Surviving faults: a sweep killed without warning, and database connections that drop.

**Killed sweeps.** Every trial records its worker (user attrs ``worker`` = ``host:pid`` and
``worker_process`` = the process's start time and pid namespace, so a reused pid is not
mistaken for the worker). A RUNNING trial whose worker ran on this machine and is gone is dead
for sure: :func:`fail_stale` fails it at once and retries it through the storage's stale-trial
callback, the same path as heartbeats take (counted ``lost``, its config run again), instead
of waiting for the grace period. Other machines' trials still go by heartbeats.
:func:`recover_sweep` marks the dead owner's ``running`` sweep rows in perftune's store
``interrupted`` and sets its RUNNING MLflow parent runs KILLED.

**Dropped connections** (a PostgreSQL restart, ``pg_terminate_backend``, a failover):
:func:`retry` retries a database call on a connection error with backoff for up to
``RETRY_S`` seconds. The Optuna storage (:func:`rdb_storage_class`), perftune's store and the
MLflow client (:func:`harden`) go through it, each call retried where it is safe: a state
change that may have been applied before the connection dropped is checked before it is
sent again, and a trial or run whose creation may have been applied is looked up by a key it
was created with, so nothing is applied twice or left behind.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

#: How long a database call is retried on connection errors (a PostgreSQL restart takes a
#: few seconds).
RETRY_S = 60.0
#: The MLflow part of :func:`recover_sweep` gives up after this long (it is best-effort).
MLFLOW_RECOVERY_S = 10.0
HOST = socket.gethostname()


# --------------------------------------------------------------------------- who owns what


def _pidns() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


@functools.cache
def _me() -> dict[str, Any]:
    import psutil

    return {"started": round(psutil.Process().create_time(), 3), "pidns": _pidns()}


def worker_id() -> str:
    return f"{HOST}:{os.getpid()}"


def owner() -> dict[str, Any]:
    """This process, as recorded on its trials, sweep rows and MLflow parent runs."""
    return {"worker": worker_id(), "process": _me()}


def is_dead(worker: str | None, process: dict[str, Any] | None = None) -> bool:
    """True only when ``worker`` (``host:pid``) ran on this machine and that process is gone
    (or the pid now belongs to a process started later). Unknown: False."""
    import psutil

    host, _, pid = (worker or "").rpartition(":")
    if host != HOST or not pid.isdigit():
        return False
    process = process if isinstance(process, dict) else {}
    if process.get("pidns") is not None and process.get("pidns") != _pidns():
        return False  # another container with the same host name: its pids are not ours
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return True
        started = process.get("started")
        return started is not None and abs(proc.create_time() - float(started)) > 1.0
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, TypeError, ValueError):
        return False


def claim(trial) -> None:
    """Record this process as the worker of ``trial`` (unless its creation already did)."""
    me = owner()
    attrs = trial.user_attrs
    if attrs.get("worker") != me["worker"] or attrs.get("worker_process") != me["process"]:
        trial.set_user_attr("worker", me["worker"])
        trial.set_user_attr("worker_process", me["process"])


# --------------------------------------------------------------------------- killed sweeps


def retry_callback(max_retry: int):
    """Optuna's ``RetryHeartbeatStaleTrialCallback``, but the retry does not inherit the dead
    trial's worker (it would look dead between being popped and claimed)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    class _Retry(RetryHeartbeatStaleTrialCallback):
        def __call__(self, study, trial) -> None:
            trial = copy.copy(trial)
            trial.user_attrs = {k: v for k, v in trial.user_attrs.items()
                                if k not in ("worker", "worker_process")}  # fmt: skip
            super().__call__(study, trial)

    return _Retry(max_retry=max_retry)


def fail_stale(study, grace_s: float, max_retry: int) -> list[int]:
    """``optuna.storages.fail_stale_trials`` and, first, without waiting for heartbeats: fail
    (and retry once, through the stale-trial callback) every RUNNING trial whose worker on this
    machine is dead, and every RUNNING trial older than the grace period that has no worker
    (its process died between creating and claiming it). Returns the failed trials' numbers."""
    import optuna
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    getter = getattr(storage, "get_heartbeat_stale_trial_callback", None)
    callback = (getter() if getter else None) or retry_callback(max_retry)
    now, failed = datetime.now(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker")
        if worker is not None:
            dead = is_dead(worker, t.user_attrs.get("worker_process"))
        else:
            dead = t.datetime_start is not None and (now - t.datetime_start).total_seconds() > grace_s
        if not dead:
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except UpdateFinishedTrialError:
            continue  # another process failed it first
        failed.append(t.number)
        callback(study, copy.deepcopy(storage.get_trial(t._trial_id)))
    optuna.storages.fail_stale_trials(study)
    return failed


def recover_sweep(store, study_name: str, tracking_uri: str | None, experiment: str) -> dict[str, Any]:
    """A sweep of ``study_name`` killed on this machine: its ``running`` rows in perftune's
    store become ``interrupted``, its RUNNING MLflow parent runs KILLED (best-effort, at most
    ``MLFLOW_RECOVERY_S``). Returns what was done."""
    from perftune.storage import redact_text

    done: dict[str, Any] = {"sweeps": [], "runs": []}
    try:
        done["sweeps"] = store.interrupt_sweeps(
            study_name, lambda settings: is_dead(*_owner_of(settings.get("owner"))))
    except Exception as exc:  # noqa: BLE001 - recovery must not stop a sweep
        done["error"] = redact_text(f"store: {exc}")
    if tracking_uri:
        result: list[str] = []
        worker = threading.Thread(target=_kill_mlflow_runs, daemon=True,
                                  args=(tracking_uri, experiment, study_name, result))  # fmt: skip
        worker.start()
        # A tracking server may be down: the sweep goes on after a second (the run is checked
        # again on the next start); a local store answers well within the limit.
        worker.join(1.0 if tracking_uri.startswith(("http://", "https://")) else MLFLOW_RECOVERY_S)
        done["runs"] = [r for r in result if not r.startswith("error:")]
        errors = [r[len("error:"):] for r in result if r.startswith("error:")]
        if worker.is_alive() or errors:  # said once, here: the thread may outlive the wait
            done["error"] = errors[0] if errors else "the MLflow tracking store did not answer"
            print(f"perftune: could not check the MLflow runs of a killed sweep ({done['error']}); "
                  "they are checked again on the next start", file=sys.stderr)  # fmt: skip
    return done


def _owner_of(value: Any) -> tuple[str | None, dict[str, Any] | None]:
    """(worker, process) from an :func:`owner` dict, an :func:`owner_tag` value, or the JSON
    tag of runs logged before the short form."""
    if isinstance(value, str) and not value.startswith("{"):
        worker, _, rest = value.partition(" started ")
        started, _, pidns = rest.partition(" pidns ")
        try:
            return worker, {"started": float(started), "pidns": int(pidns) if pidns.isdigit() else None}
        except ValueError:
            return None, None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None, None
    if not isinstance(value, dict):
        return None, None
    return value.get("worker"), value.get("process")


def owner_tag() -> str:
    """The MLflow tag value (``perftune_owner``) naming this process, short and readable:
    ``host:pid started <epoch s> pidns <inode>``."""
    me = owner()
    return f"{me['worker']} started {me['process']['started']} pidns {me['process']['pidns']}"


def _kill_mlflow_runs(uri: str, experiment: str, study_name: str, out: list[str]) -> None:
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return
        runs = client.search_runs(
            [exp.experiment_id], max_results=1000,
            filter_string=f"tags.study = '{study_name}' AND tags.perftune_role = 'sweep' "
                          "AND attributes.status = 'RUNNING'")  # fmt: skip
        for run in runs:
            if is_dead(*_owner_of(run.data.tags.get("perftune_owner"))):
                client.set_terminated(run.info.run_id, status="KILLED")
                out.append(run.info.run_id)
    except Exception as exc:  # noqa: BLE001 - best-effort
        from perftune.storage import redact_text

        out.append(f"error:{redact_text(' '.join(str(exc).split()))[:200]}")  # redacted, then cut


# --------------------------------------------------------------------------- dropped connections


def transient(exc: BaseException) -> bool:
    """A lost or refused database connection (anywhere in the exception's chain)."""
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
                      | sa_exc.PendingRollbackError):  # fmt: skip
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if type(e).__name__ in ("SchemaNotReadyError", "StoreError"):
            return False  # perftune's store: not a connection problem, whatever caused it
        if type(e).__name__ in ("StoreUnavailableError", "OperationalError", "InterfaceError"):
            return True  # perftune's store; a bare DBAPI (psycopg, sqlite3) error
        if getattr(e, "error_code", None) == "TEMPORARILY_UNAVAILABLE":  # MLflow's SQL store
            return True
        e = e.__cause__ or e.__context__
    return False


def retry(fn: Callable[..., T], *args: Any, what: str = "database call", budget_s: float | None = None,
          check: Callable[[], tuple[bool, Any]] | None = None, **kwargs: Any) -> T:  # fmt: skip
    """``fn(*args, **kwargs)``, retried with backoff while it fails on a connection error, for up
    to ``budget_s`` (``RETRY_S``). ``check``, called before each retry, returns ``(True,
    result)`` when the failed attempt turns out to have been applied."""
    deadline = time.monotonic() + (RETRY_S if budget_s is None else budget_s)
    delay, attempt = 0.2, 0
    while True:
        try:
            if attempt and check is not None:
                applied, result = check()
                if applied:
                    return result
            return fn(*args, **kwargs)
        except Exception as exc:
            if not transient(exc) or time.monotonic() + delay > deadline:
                raise
            if attempt == 0:
                from perftune.storage import redact_text

                reason = redact_text(getattr(exc, "orig", None) or exc).strip().splitlines()
                print(f"perftune: {what}: database connection lost "
                      f"({reason[0][:160] if reason else type(exc).__name__}); retrying",
                      file=sys.stderr)  # fmt: skip
            attempt += 1
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


_RETRIED = ("create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
            "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
            "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
            "get_trial_system_attrs", "get_all_studies", "_set_trial_param", "get_trial_param",
            "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
            "get_trial_id_from_study_id_trial_number", "get_trial", "_get_trials",
            "_get_best_trial_id", "_get_stale_trial_ids")  # fmt: skip


@functools.cache
def rdb_storage_class():
    """Optuna's ``RDBStorage`` with every call retried on connection errors (idempotent ones as
    they are; a new trial is created with its worker and a key to find it by; a state change
    is checked first), and heartbeats that survive a dropped connection."""
    from optuna.storages import RDBStorage
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session
    from optuna.trial import TrialState, create_trial

    def _wrap(name: str):
        base = getattr(RDBStorage, name)

        @functools.wraps(base)
        def method(self, *args, **kwargs):
            return retry(base, self, *args, what=f"optuna {name.strip('_')}", **kwargs)

        return method

    def _once(self, study_id, template):
        """One attempt at creating a trial (Optuna's own loop retries blindly)."""
        with _create_scoped_session(self.scoped_session) as session:
            models.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            row = self._get_prepared_new_trial(study_id, template, session)
            number, trial_id, start = row.number, row.trial_id, row.datetime_start
        frozen = copy.deepcopy(template)
        frozen.number, frozen.datetime_start, frozen._trial_id = number, start, trial_id
        return frozen

    class RetryingRDBStorage(RDBStorage):
        def _create_new_trial(self, study_id, template_trial=None):
            if template_trial is not None:  # enqueue / add_trial: Optuna's way
                return retry(RDBStorage._create_new_trial, self, study_id, template_trial,
                             what="optuna create_new_trial")  # fmt: skip
            # The trial is created with its worker, and with a key to find it by if the
            # connection drops before the commit is confirmed.
            key = uuid.uuid4().hex
            me = owner()
            template = create_trial(state=TrialState.RUNNING, system_attrs={"perftune_ask": key},
                                    user_attrs={"worker": me["worker"], "worker_process": me["process"]})  # fmt: skip

            def created():
                for t in RDBStorage._get_trials(self, study_id, (TrialState.RUNNING,), set(), -1):
                    if t.system_attrs.get("perftune_ask") == key:
                        return True, t
                return False, None

            return retry(_once, self, study_id, template, what="optuna create_new_trial",
                         check=created)  # fmt: skip

        def set_trial_state_values(self, trial_id, state, values=None):
            def applied():
                now = RDBStorage.get_trial(self, trial_id).state
                if state.is_finished() and now == state:
                    return True, True  # the attempt that failed did land
                if state == TrialState.RUNNING and now == TrialState.RUNNING:
                    return True, False  # popped by us or by another worker: leave it (see fail_stale)
                return False, None

            return retry(RDBStorage.set_trial_state_values, self, trial_id, state, values,
                         what="optuna set_trial_state", check=applied)  # fmt: skip

        def record_heartbeat(self, trial_id):
            try:
                retry(RDBStorage.record_heartbeat, self, trial_id, what="optuna heartbeat")
            except Exception:  # noqa: BLE001 - a missed beat is not worth the heartbeat thread
                pass

    for name in _RETRIED:
        setattr(RetryingRDBStorage, name, _wrap(name))
    return RetryingRDBStorage


def engine_kwargs(url: str) -> dict[str, Any]:
    """Optuna's engine on a database server: test pooled connections before use (after a
    restart every pooled connection is dead) and do not wait forever for a connection."""
    if url.startswith("sqlite"):
        return {}
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql") and "connect_timeout" not in url:
        kwargs["connect_args"] = {"connect_timeout": 5}
    return kwargs


class _Retrying:
    """Every public method of the wrapped object retried on connection errors."""

    _SAFE: tuple[str, ...] = ()

    def __init__(self, inner: Any, what: str) -> None:
        self._inner, self._what = inner, what

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr) or name in ("close",):
            return attr

        @functools.wraps(attr)
        def method(*args, **kwargs):
            return retry(attr, *args, what=f"{self._what} {name}", **kwargs)

        return method


class _RetryingMlflowClient(_Retrying):
    def create_run(self, experiment_id, start_time=None, tags=None, run_name=None, **kw):
        key = uuid.uuid4().hex
        tags = {**(tags or {}), "perftune_create": key}

        def created():
            found = self._inner.search_runs([experiment_id], max_results=1,
                                            filter_string=f"tags.perftune_create = '{key}'")  # fmt: skip
            return (True, found[0]) if found else (False, None)

        return retry(self._inner.create_run, experiment_id, start_time=start_time, tags=tags,
                     run_name=run_name, what="mlflow create_run", check=created, **kw)  # fmt: skip


def harden(ctx) -> None:
    """Retry the sweep's store writes and (an MLflow tracker's, unless the caller passed the
    tracker in) client calls on connection errors. ``ctx``: a ``perftune.sweep.SweepContext``."""
    if getattr(ctx, "store", None) is not None and not isinstance(ctx.store, _Retrying):
        ctx.store = _Retrying(ctx.store, "store")
    client = getattr(getattr(ctx, "tracker", None), "client", None)
    if client is not None and not isinstance(client, _Retrying) and ctx.given_tracker is None:
        ctx.tracker.client = _RetryingMlflowClient(client, "mlflow")
