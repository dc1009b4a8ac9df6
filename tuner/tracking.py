"""Experiment tracking: every trial to MLflow.

:class:`Tracker` is the extension point; :class:`MlflowTracker` logs an experiment per workload,
a parent run per sweep and a nested run per trial, in batches (one ``log_batch`` per trial
run), and :class:`NullTracker` logs nothing. Trackers are used from the sweep loop's thread only.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import time
from collections.abc import Iterable, Mapping
from typing import Any

from tuner.errors import UsageError

_MAX_BATCH = 1000  # MLflow's limit on metrics per log_batch
_MAX_PARAMS = 100


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
                  status: str = "FINISHED") -> str | None:  # fmt: skip
        """Log one trial as a nested run (params, scalar metrics, step metrics, tags)."""

    @abc.abstractmethod
    def log_summary(self, metrics: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        """Metrics and tags on the parent run."""

    @abc.abstractmethod
    def log_artifact(self, path: str, artifact_path: str | None = None) -> None:
        """Attach a file to the parent run."""

    @abc.abstractmethod
    def end_sweep(self, status: str = "FINISHED") -> None:
        """Close the parent run (FINISHED, FAILED or KILLED)."""

    parent_run_id: str | None = None
    experiment_id: str | None = None


class NullTracker(Tracker):
    def start_sweep(self, experiment, run_name, params, tags):
        return None

    def attach(self, experiment, parent_run_id):
        pass

    def log_trial(self, name, params, metrics, curves, tags, status="FINISHED"):
        return None

    def log_summary(self, metrics, tags):
        pass

    def log_artifact(self, path, artifact_path=None):
        pass

    def end_sweep(self, status="FINISHED"):
        pass


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
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
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return exp.experiment_id
        location = None
        if self.artifact_root:
            location = os.path.join(self.artifact_root, name)
            location = "file://" + os.path.abspath(location)
        return self.client.create_experiment(name, artifact_location=location)

    def _batch(self, run_id: str, params: Mapping[str, Any] = {}, metrics: Mapping[str, Any] = {},
               curves: Mapping[str, Iterable[tuple[int, float]]] = {},
               tags: Mapping[str, str] = {}) -> None:  # fmt: skip
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
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

    def log_trial(self, name, params, metrics, curves, tags, status="FINISHED"):
        assert self.experiment_id is not None, "start_sweep first"
        tags = {**tags, "mlflow.parentRunId": self.parent_run_id}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self._batch(run.info.run_id, params=params, metrics=metrics, curves=curves)
        self.client.set_terminated(run.info.run_id, status=status)
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


def check_tracking(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, with one line, if a tracking server or database cannot be reached."""
    from storage import redact_url

    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).read()
        except Exception as exc:  # noqa: BLE001
            reason = getattr(exc, "reason", exc)
            raise UsageError(f"--tracking-uri {redact_url(uri)}: cannot reach the MLflow "
                             f"tracking server ({reason})") from None  # fmt: skip
    elif not uri.startswith(("sqlite:", "file:")):
        check_database(uri, "--tracking-uri", timeout)


def check_database(url: str, flag: str, timeout: float = 3.0) -> None:
    """Connect once to a database server (not SQLite files) to fail fast on a bad URL."""
    from storage import redact_url

    if url.startswith("sqlite"):
        return
    import sqlalchemy as sa

    try:
        args = {"connect_timeout": int(timeout)} if url.startswith("postgresql") else {}
        engine = sa.create_engine(url, connect_args=args, poolclass=sa.pool.NullPool)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise UsageError(
            f"{flag} {redact_url(url)}: cannot reach the database ({reason[0] if reason else exc})"
        ) from None
