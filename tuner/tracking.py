"""Experiment tracking: every trial to MLflow.

:class:`Tracker` is the extension point; :class:`MlflowTracker` logs an experiment per workload,
a parent run per sweep and a nested run per trial, in batches (one ``log_batch`` per trial
run), and :class:`NullTracker` logs nothing. :class:`SpooledTracker` is what a sweep uses with
an MLflow tracking server: it never waits on the server (the operations go to a local spool,
:mod:`perftune._spool`, which a background thread delivers), so a server that is down or slow
does not stop trials. :func:`make_tracker` picks one for a workspace; :func:`sync_spool` is
``perftune sync``. Trackers are used from the sweep loop's thread only.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from perftune.errors import PerftuneError, UsageError

__all__ = ["MlflowTracker", "NullTracker", "SpooledTracker", "Tracker", "check_database", "check_tracking",
           "make_tracker", "runs_view", "sync_spool", "view_path"]  # fmt: skip

_MAX_BATCH = 1000  # MLflow's limit on metrics per log_batch
_MAX_PARAMS = 100
#: MLflow 3's experiment kind (the UI's "Machine learning", not "GenAI apps & agents").
KIND_TAG, KIND_ML = "mlflow.experimentKind", "custom_model_development"
#: The runs table's saved view perftune keeps on each experiment (MLflow 3's "Views" menu: an
#: experiment tag ``mlflow.sharedViewState.<id>``, opened by ``?viewStateShareKey=<id>``).
VIEW_ID = "perftune"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"


def runs_view(params: Iterable[str], direction: str) -> dict[str, Any]:
    """The state of the runs table perftune's saved view shows: the searched ``params`` and
    the objective as columns, best objective first. Sorting by a metric also lists nested runs
    flat (the UI nests children under their parent only when sorted by creation time)."""
    columns = ["metrics.`objective`", *(f"params.`{p}`" for p in params)]
    return {"orderByKey": "metrics.`objective`", "orderByAsc": direction == "minimize",
            "selectedColumns": columns}  # fmt: skip


def view_path(experiment_id: str) -> str:
    """The MLflow UI's address (after the host) of an experiment's runs in perftune's view."""
    return f"/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_ID}&workflowType=machine_learning"


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, int | float) and math.isfinite(v):
            out[k] = float(v)
    return out


class Tracker(abc.ABC):
    """Records a sweep and its trials. Not thread safe."""

    @abc.abstractmethod
    def start_sweep(self, experiment: str, run_name: str, params: Mapping[str, Any],
                    tags: Mapping[str, str]) -> str | None:  # fmt: skip
        """Open the sweep's parent run; return its id."""

    @abc.abstractmethod
    def attach(self, experiment: str, parent_run_id: str | None) -> None:
        """Log this process's trials under a parent run another process opened (a worker)."""

    @abc.abstractmethod
    def log_trial(self, name: str, params: Mapping[str, Any], metrics: Mapping[str, Any],
                  curves: Mapping[str, Iterable[tuple[int, float]]], tags: Mapping[str, str],
                  status: str = "FINISHED", start_time: int | None = None,
                  end_time: int | None = None) -> str | None:  # fmt: skip
        """Log one trial as a nested run (params, scalar metrics, step metrics, tags) that ended
        with ``status`` (FINISHED, FAILED or KILLED), ran from ``start_time`` to ``end_time``
        (ms since the epoch; default: now)."""

    @abc.abstractmethod
    def log_summary(self, metrics: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Metrics and tags on the parent run."""

    @abc.abstractmethod
    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Attach a file to the parent run."""

    @abc.abstractmethod
    def end_sweep(self, status: str = "FINISHED") -> None:
        """Close the parent run (FINISHED, FAILED or KILLED)."""

    def save_view(self, state: Mapping[str, Any]) -> None:  # noqa: B027 - optional
        """Save ``state`` (see :func:`runs_view`) as perftune's view of the runs table of the
        experiment :meth:`start_sweep` opened; a tracker that keeps no runs does nothing."""

    def end_run(self, run_id: str, status: str = "KILLED") -> None:  # noqa: B027 - optional
        """Close any run by id (e.g. the parent run of a sweep that died, left RUNNING); a
        tracker that keeps no runs does nothing."""

    def close(self) -> dict[str, Any] | None:
        """The sweep is over: deliver what is still pending (waiting a bounded time), release
        resources, and return what a report should say about tracking (None: nothing).
        Idempotent; the tracker is not used afterwards."""
        return None

    parent_run_id: str | None = None
    experiment_id: str | None = None


class NullTracker(Tracker):
    def start_sweep(self, experiment, run_name, params, tags):
        return None

    def attach(self, experiment, parent_run_id):
        pass

    def log_trial(self, name, params, metrics, curves, tags, status="FINISHED", start_time=None, end_time=None):
        return None

    def log_summary(self, metrics, tags):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def end_sweep(self, status="FINISHED"):
        pass


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A REST client prints "View run ... at" to stdout on set_terminated (after one more request)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.ERROR)


class MlflowTracker(Tracker):
    """MLflow through :class:`mlflow.MlflowClient` (no global active-run state).

    ``artifact_root`` (a folder) is used for experiments this tracker creates when the tracking
    store is local; a tracking server decides artifact locations itself.
    """

    def __init__(self, tracking_uri: str, artifact_root: str | None = None) -> None:
        _quiet_mlflow()
        from mlflow import MlflowClient

        _quiet_mlflow()  # mlflow configures its loggers on import

        self.uri = tracking_uri
        self.artifact_root = artifact_root
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.parent_run_id = None
        self.experiment_id = None

    def _experiment(self, name: str) -> str:
        """The experiment's id, created (or restored) if need be, as a classic ML experiment
        (one created before perftune tagged its kind is tagged now)."""
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            if exp.tags.get(KIND_TAG) != KIND_ML:
                self.client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND_ML)
            return exp.experiment_id
        from perftune.names import safe_filename

        location = None
        if self.artifact_root:
            location = os.path.join(self.artifact_root, safe_filename(name))
            location = "file://" + os.path.abspath(location)
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND_ML})
        except MlflowException:
            exp = self.client.get_experiment_by_name(name)  # another sweep created it just now
            if exp is None:
                raise
            return exp.experiment_id

    def _batch(self, run_id: str, params: Mapping[str, Any] = {}, metrics: Mapping[str, Any] = {},
               curves: Mapping[str, Iterable[tuple[int, float]]] = {},
               tags: Mapping[str, str] = {}, ts: int | None = None) -> None:  # fmt: skip
        from mlflow.entities import Metric, Param, RunTag

        now = ts or int(time.time() * 1000)
        ms = [Metric(k, v, now, 0) for k, v in _scalars(metrics).items()]
        for key, points in curves.items():
            ms += [Metric(key, float(v), now, int(s)) for s, v in points
                   if isinstance(v, int | float) and math.isfinite(v)]  # fmt: skip
        ps = [Param(k, str(v)[:6000]) for k, v in params.items()]
        ts = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
        first = True
        while first or ms or ps:
            self.client.log_batch(run_id, metrics=ms[:_MAX_BATCH], params=ps[:_MAX_PARAMS],
                                  tags=ts if first else [])  # fmt: skip
            ms, ps, first = ms[_MAX_BATCH:], ps[_MAX_PARAMS:], False

    def save_view(self, state: Mapping[str, Any]) -> None:
        if self.experiment_id:
            self.save_view_on(self.experiment_id, state)

    def save_view_on(self, experiment_id: str, state: Mapping[str, Any]) -> None:
        """Save ``state`` (see :func:`runs_view`) as the experiment's perftune view."""
        now = int(time.time() * 1000)
        value = {"name": VIEW_ID, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
        self.client.set_experiment_tag(experiment_id, VIEW_TAG, json.dumps(value))

    def start_sweep(self, experiment, run_name, params, tags):
        self.experiment_id = self._experiment(experiment)
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=dict(tags))
        self.parent_run_id = run.info.run_id
        self._batch(self.parent_run_id, params=params)
        return self.parent_run_id

    def attach(self, experiment: str, parent_run_id: str | None) -> None:
        """Log this process's trials under a sweep run another process started (a worker)."""
        self.experiment_id = self._experiment(experiment)
        self.parent_run_id = parent_run_id

    def log_trial(self, name, params, metrics, curves, tags, status="FINISHED", start_time=None, end_time=None):
        assert self.experiment_id is not None, "start_sweep first"
        tags = {**tags, "mlflow.parentRunId": self.parent_run_id}
        run = self.client.create_run(self.experiment_id, start_time=start_time, run_name=name, tags=tags)
        self._batch(run.info.run_id, params=params, metrics=metrics, curves=curves, ts=end_time)
        self.client.set_terminated(run.info.run_id, status=status, end_time=end_time)
        return run.info.run_id

    def log_summary(self, metrics, tags):
        if self.parent_run_id:
            self._batch(self.parent_run_id, metrics=metrics, tags=tags)

    def log_artifact(self, path, artifact_path=None):
        if self.parent_run_id:
            self.client.log_artifact(self.parent_run_id, path, artifact_path)

    def end_sweep(self, status="FINISHED"):
        if self.parent_run_id:
            self.client.set_terminated(self.parent_run_id, status=status)

    def end_run(self, run_id, status="KILLED"):
        self.client.set_terminated(run_id, status=status)


_IDLE_S = 5.0  # how often an idle delivery thread looks for other processes' ops
_MAX_BACKOFF_S = 4.0
#: Defaults of :class:`SpooledTracker`: how long ``start_sweep`` waits for the server to create
#: the parent run, and how long ``close`` waits for the rest to be delivered.
START_WAIT_S = 1.0
FLUSH_S = 5.0


class SpooledTracker(Tracker):
    """MLflow on a tracking server, never waited on.

    Every call appends its operation to the workspace's tracking spool (an SQLite file, see
    :mod:`perftune._spool`) and returns; a background thread delivers the spool to the server in
    order, with short HTTP timeouts and no retries inside a request, backing off (up to 4 s)
    while the server does not answer. ``start_sweep`` waits at most ``start_wait_s`` for the
    server to create the parent run; if it has not, it returns a placeholder id (``local-<hex>``)
    under which nested runs are spooled, and which :meth:`close` (or ``perftune sync``) replaces
    with the real id in the Optuna study and perftune's store once the server has created the
    run. :meth:`close` waits at most ``flush_s`` for the rest; what is left stays in the spool
    for the next sweep or ``perftune sync``. ``max_call_s`` is the longest any call (but
    :meth:`close`) kept its caller waiting.
    """

    def __init__(self, tracking_uri: str, home: str | os.PathLike, *, artifact_root: str | None = None,
                 storage: str | None = None, db: str | None = None, start_wait_s: float | None = None,
                 flush_s: float | None = None) -> None:  # fmt: skip
        from perftune._spool import Deliverer, Spool, spool_key

        self.uri, self.key = tracking_uri, spool_key(tracking_uri)
        self.storage, self.db = storage, db
        self.start_wait_s = START_WAIT_S if start_wait_s is None else start_wait_s
        self.flush_s = FLUSH_S if flush_s is None else flush_s
        self.spool = Spool(home)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.parent_run_id = self.experiment_id = None
        self.experiment: str | None = None
        self.placeholder: str | None = None
        self._study: str | None = None
        self.max_call_s = 0.0
        self.down: str | None = None  # why the last delivery attempt failed, while it fails
        self._deliverer = Deliverer(home, tracking_uri, artifact_root)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._passes = 0
        self._result: dict[str, Any] | None = None
        self._thread = threading.Thread(target=self._deliver_loop, name="perftune-tracking", daemon=True)
        self._thread.start()

    # -- the delivery thread
    def _deliver_loop(self) -> None:
        from perftune._spool import Busy, Transient

        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(backoff or _IDLE_S)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._deliverer.deliver(stop=self._stop.is_set)
                self.down, backoff = None, 0.0
            except Busy:
                backoff = 0.2
            except Transient as exc:
                self.down = str(exc)
                backoff = min(max(2 * backoff, 0.25), _MAX_BACKOFF_S)
            except Exception as exc:  # noqa: BLE001 - a broken spool must not stop the sweep
                from perftune.storage import redact_text

                self.down = redact_text(f"{type(exc).__name__}: {exc}")
                backoff = _MAX_BACKOFF_S
            self._passes += 1

    # -- the sweep thread
    @contextlib.contextmanager
    def _call(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.max_call_s = max(self.max_call_s, time.perf_counter() - t0)

    def _put(self, kind: str, body: dict[str, Any]) -> None:
        self.spool.append(self.key, kind, {**body, "experiment": self.experiment}, self.owner)
        self._wake.set()

    def start_sweep(self, experiment, run_name, params, tags):
        from perftune._spool import log, new_ref

        with self._call():
            self.experiment, ref, now = experiment, new_ref(), int(time.time() * 1000)
            self._study = tags.get("study")
            self._put("start", {"ref": ref, "name": run_name, "params": _strings(params, 6000),
                                "tags": _strings(tags, 5000), "start_time": now, "ts": now})  # fmt: skip
            deadline = time.monotonic() + self.start_wait_s
            run_id = None
            while run_id is None and time.monotonic() < deadline:
                time.sleep(0.02)
                run_id = self.spool.run_id(self.key, ref)
            if run_id is None:
                self.placeholder = run_id = ref
                self.spool.add_fixup(ref, self.key, self.storage, self._study, self.db)
                log.warning("perftune: the MLflow tracking server %s does not answer (%s): tracking "
                            "goes to %s and is delivered when it is back", self.key,
                            self.down or f"no run within {self.start_wait_s:g} s", self.spool.path)  # fmt: skip
            else:
                self.experiment_id = self._deliverer.experiment_ids.get(experiment)
            self.parent_run_id = run_id
            return run_id

    def attach(self, experiment, parent_run_id):
        self.experiment, self.parent_run_id = experiment, parent_run_id

    def log_trial(self, name, params, metrics, curves, tags, status="FINISHED", start_time=None, end_time=None):
        from perftune._spool import new_ref

        with self._call():
            ref, now = new_ref(), int(time.time() * 1000) if end_time is None else end_time
            points = {k: [(int(s), float(v)) for s, v in pts if isinstance(v, int | float) and math.isfinite(v)]
                      for k, pts in curves.items()}  # fmt: skip
            self._put("trial", {"ref": ref, "parent": self.parent_run_id, "name": name,
                                "params": _strings(params, 6000), "metrics": _scalars(metrics),
                                "curves": points, "tags": _strings(tags, 5000), "status": status,
                                "start_time": now if start_time is None else start_time, "end_time": now,
                                "ts": now})  # fmt: skip
            return ref

    def log_summary(self, metrics, tags):
        if self.parent_run_id:
            with self._call():
                self._put("summary", {"run": self.parent_run_id, "metrics": _scalars(metrics),
                                      "tags": _strings(tags, 5000), "ts": int(time.time() * 1000)})  # fmt: skip

    def log_artifact(self, path, artifact_path=None):
        if self.parent_run_id:
            with self._call():
                self._put("artifact", {"run": self.parent_run_id, "file": self.spool.keep_file(path),
                                       "artifact_path": artifact_path})  # fmt: skip

    def save_view(self, state):
        with self._call():
            self._put("view", {"state": dict(state)})

    def end_sweep(self, status="FINISHED"):
        if self.parent_run_id:
            self.end_run(self.parent_run_id, status)

    def end_run(self, run_id, status="KILLED"):
        with self._call():
            self._put("end", {"run": run_id, "status": status, "end_time": int(time.time() * 1000)})

    def flush(self, timeout: float) -> bool:
        """Wait at most ``timeout`` seconds for this tracker's ops to be delivered."""
        deadline = time.monotonic() + timeout
        kicked = -1
        while self.spool.count(self.key, owner=self.owner):
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            if kicked != self._passes:  # a pass ended (maybe failed): try again now, not later
                kicked = self._passes
                self._wake.set()
            time.sleep(0.05)
        return True

    def close(self) -> dict[str, Any] | None:
        from perftune._spool import apply_fixup, apply_fixups, log

        if self._result is not None:
            return self._result
        self.flush(self.flush_s)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=3.0)
        if self.placeholder and (real := self.spool.run_id(self.key, self.placeholder)):
            try:  # our own placeholder, even if a concurrent `perftune sync` took its fix-up
                apply_fixup(self.placeholder, real, self.storage, self._study, self.db)
                self.parent_run_id, self.placeholder = real, None
            except Exception as exc:  # noqa: BLE001 - left for perftune sync
                from perftune.storage import redact_text

                log.warning("perftune: could not record MLflow run %s: %s", real, redact_text(exc))
        with contextlib.suppress(Exception):
            apply_fixups(self.spool, self.key, self.storage, self.db)
        self.experiment_id = self.experiment_id or self._deliverer.experiment_ids.get(self.experiment or "")
        pending = self.spool.count(self.key)
        message = None
        if pending:
            message = (f"{pending} tracking events spooled in {self.spool.path}; they are delivered "
                       "on the next sweep or by `perftune sync`")  # fmt: skip
            log.warning("perftune: %s", message)
        self._result = {"spool": str(self.spool.path), "pending": pending,
                        "delivered": self._deliverer.delivered, "refused": self._deliverer.failed,
                        "max_call_s": round(self.max_call_s, 4), "message": message}  # fmt: skip
        if not self._thread.is_alive():
            self._deliverer.close()
        return self._result


def _strings(values: Mapping[str, Any], limit: int) -> dict[str, str]:
    return {k: str(v)[:limit] for k, v in values.items()}  # as MlflowTracker._batch logs them


def make_tracker(ws, *, track: bool = True) -> Tracker:
    """The tracker a sweep or worker in workspace ``ws`` uses: none without tracking, a
    :class:`SpooledTracker` for an MLflow tracking server (which may be down), else an
    :class:`MlflowTracker` writing the local store (SQLite, files, a database) directly."""
    if not track:
        return NullTracker()
    if ws.tracking_server:
        return SpooledTracker(ws.tracking_uri, ws.home, storage=ws.storage, db=ws.db)
    return MlflowTracker(ws.tracking_uri, str(ws.artifacts))


def sync_spool(ws, *, timeout: float = 30.0) -> dict[str, Any]:
    """``perftune sync``: deliver the workspace's spooled tracking events for
    ``ws.tracking_uri`` now. Raises :class:`PerftuneError` (nothing changed) when the server
    does not answer, or when it refused some events."""
    from perftune._spool import SPOOL_DB, Deliverer, Spool, Transient, apply_fixups, spool_key

    check_tracking(ws.tracking_uri)
    key, path = spool_key(ws.tracking_uri), ws.home / SPOOL_DB
    result = {"spool": str(path), "tracking_uri": key, "delivered": 0, "pending": 0, "refused": 0,
              "other_uris": 0}  # fmt: skip
    if not path.exists():
        return result
    spool = Spool(ws.home)
    try:
        pending = spool.count(key)
        if pending:
            deliverer = Deliverer(ws.home, ws.tracking_uri, None if ws.tracking_server else str(ws.artifacts))
            try:
                result["delivered"] = deliverer.deliver(lock_wait_s=timeout)
            except Transient as exc:
                raise PerftuneError(f"--tracking-uri {key}: cannot deliver to the MLflow tracking server "
                                    f"({exc}); {spool.count(key)} tracking events stay spooled in {path}") from None
            finally:
                deliverer.close()
        apply_fixups(spool, key, ws.storage, ws.db)
        result.update(pending=spool.count(key), refused=spool.count(key, state="failed"),
                      other_uris=spool.count(key, other_uris=True))  # fmt: skip
        if result["refused"]:
            raise PerftuneError(f"delivered {result['delivered']} tracking events; {result['refused']} were "
                                f"refused by the server (first: {spool.first_error(key)}) and stay in {path}")
        return result
    finally:
        spool.close()


def check_tracking(uri: str, timeout: float = 3.0, patience_s: float = 0.0) -> None:
    """Fail fast, with one line, on a malformed tracking URI or an unreachable tracking
    database (``patience_s``: as :func:`check_database`). A tracking server is not contacted:
    a sweep spools what it cannot deliver."""
    from perftune.storage import redact_url

    if uri.startswith(("http://", "https://")):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(uri)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
            if not parts.hostname:
                raise ValueError("no host")
        except ValueError as exc:
            raise UsageError(f"--tracking-uri {redact_url(uri)}: not a valid tracking server URL "
                             f"({exc})") from None  # fmt: skip
    elif not uri.startswith(("file:", "databricks")):
        check_database(uri, "--tracking-uri", timeout, patience_s)


def check_database(url: str, flag: str, timeout: float = 3.0, patience_s: float = 0.0) -> None:
    """Fail fast, with one line naming ``flag``, on a database that cannot be used: connect
    once to a database server; read the schema of an existing SQLite file (a corrupt file, or
    one that is not SQLite, fails here instead of half-way through the setup). Writes nothing
    and creates no file. ``patience_s``: keep trying a lost or refused connection for that long
    (a helper worker joins a sweep that has reached the database: a drop is passing)."""
    from perftune._recovery import retry
    from perftune.storage import redact_text, redact_url

    if url.startswith("sqlite"):
        _check_sqlite_file(url, flag, timeout)
        return
    import sqlalchemy as sa

    args = {"connect_timeout": int(timeout)} if url.startswith("postgresql") else {}

    def connect() -> None:
        engine = sa.create_engine(url, connect_args=args, poolclass=sa.pool.NullPool)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()

    try:
        retry(connect, what=f"{flag} check", budget_s=patience_s)
    except Exception as exc:  # noqa: BLE001
        reason = redact_text(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise UsageError(
            f"{flag} {redact_url(url)}: cannot reach the database ({reason[0] if reason else exc})"
        ) from None


def _check_sqlite_file(url: str, flag: str, timeout: float) -> None:
    """Read an existing SQLite file's schema, read-only (a missing file is created later)."""
    import sqlite3
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    from perftune.storage import redact_url

    path = make_url(url).database
    if not path or path == ":memory:" or not os.path.isfile(path):
        return
    uri = f"file:{quote(os.path.abspath(path))}?mode=ro"  # never creates the file
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=timeout)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        if "locked" in str(exc):  # busy with another process's write: usable, just not now
            return
        raise UsageError(f"{flag} {redact_url(url)}: cannot use the SQLite file ({exc})") from None
