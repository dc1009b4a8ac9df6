"""The abstract config-store interface, its record type and its errors."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = [
    "BaseConfigStore",
    "BestConfigRecord",
    "SchemaNotReadyError",
    "StoreError",
    "StoreUnavailableError",
    "SweepStateError",
    "SWEEP_STATES",
    "FINAL_SWEEP_STATES",
    "DIRECTIONS",
    "HISTORY_REASONS",
]

#: Allowed values of ``perftune_sweeps.state``: ``queued`` -> ``running`` -> one of the final ones.
SWEEP_STATES = ("queued", "running", "completed", "failed", "interrupted", "cancelled")
#: States a sweep ends in.
FINAL_SWEEP_STATES = ("completed", "failed", "interrupted", "cancelled")
#: Allowed optimisation directions (Optuna's spelling).
DIRECTIONS = ("minimize", "maximize")
#: Why a result was written to ``perftune_best_config_history``.
HISTORY_REASONS = ("replaced", "not_better")


class StoreError(Exception):
    """Base class of every error raised by the config store.

    Messages are one line, never contain a password and never contain traceback text, so
    the CLI can print ``str(exc)`` as is.
    """


class StoreUnavailableError(StoreError):
    """The database cannot be reached: server down, bad URL, missing driver, unreadable file."""


class SweepStateError(StoreError):
    """The sweep is not in a state that allows the operation (e.g. cancelling a finished one)."""


class SchemaNotReadyError(StoreError):
    """The database is reachable but its perftune schema is missing or not at the head
    revision: run ``perftune db upgrade``."""


@dataclass(frozen=True)
class BestConfigRecord:
    """The best known configuration for one (workload, framework, device, objective) key.

    A detached snapshot: it holds plain Python values only, no ORM object or session, so it
    can be passed between threads and outlives the store that produced it.

    ``history`` holds earlier results for the same key, newest first; each entry is a dict
    with ``config``, ``value``, ``spread``, ``speedup``, ``metrics``, ``baseline_value``,
    ``mlflow_run_id``, ``sweep_id``, ``recorded_at`` (ISO 8601 string, UTC) and ``reason``
    (``"replaced"``: it was the best until a better or equal result superseded it;
    ``"not_better"``: a later confirmed result that did not beat the stored best).
    """

    id: int
    workload: str
    framework: str
    device_kind: str
    device_name: str
    device_fingerprint: str
    objective: str
    direction: str
    unit: str
    config: dict[str, Any]
    value: float
    spread: float | None
    metrics: dict[str, Any]
    baseline_config: dict[str, Any] | None
    baseline_value: float | None
    speedup: float | None
    mlflow_run_id: str | None
    sweep_id: int | None
    study_name: str | None
    created_at: datetime
    updated_at: datetime
    history: list[dict[str, Any]] = field(default_factory=list)
    #: 95% confidence intervals ``(low, high)`` of ``value`` and ``speedup``; None for results
    #: not measured in paired rounds (stored before perftune measured them so).
    value_interval: tuple[float, float] | None = None
    speedup_interval: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (datetimes as ISO 8601 strings)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, datetime):
                v = v.isoformat()
            elif f.name == "history":
                v = [dict(h) for h in v]
            out[f.name] = v
        return out


@dataclass(frozen=True)
class ParetoFrontRecord:
    """A multi-objective key's confirmed Pareto front: the objectives (``names`` in order, their
    ``directions`` and ``units``) and its ``points``, each a dict with ``config``, ``values``
    (medians, in objective order), ``intervals`` (95%, ``[low, high]`` or None each),
    ``metrics``, ``trial_number`` and ``label`` (``"baseline"`` when the default is on it).
    A detached snapshot, as :class:`BestConfigRecord`."""

    id: int
    workload: str
    framework: str
    device_kind: str
    device_name: str
    device_fingerprint: str
    objective: str
    names: list[str]
    directions: list[str]
    units: list[str]
    points: list[dict[str, Any]]
    mlflow_run_id: str | None
    sweep_id: int | None
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (getattr(self, f.name).isoformat() if f.name == "updated_at" else getattr(self, f.name))
                for f in fields(self)}  # fmt: skip


class BaseConfigStore(abc.ABC):
    """Persistent store of devices, workloads, sweeps and best configurations.

    Contract shared by all implementations:

    * **Thread safety**: every method is safe to call concurrently from several threads
      on one store object; each call runs in its own short transaction.
    * **Atomicity**: each method is one transaction: it either fully applies or not at all.
    * **Ownership**: the store owns its connection resources and releases them in
      :meth:`close` (also called by ``with store: ...``). Records returned are detached
      plain values.
    * **Errors**: :class:`StoreUnavailableError` when the database cannot be reached,
      :class:`SchemaNotReadyError` when the schema is missing, :class:`StoreError` for
      referential problems (unknown workload/device/sweep); invalid arguments (unknown
      sweep state or direction, NaN value) raise :class:`ValueError`.
    * Device fingerprints are compared case-insensitively (stored lower-case).
    """

    @abc.abstractmethod
    def upsert_device(
        self,
        fingerprint: str,
        *,
        framework: str,
        kind: str,
        name: str,
        count: int,
        memory_bytes: int | None,
        info: dict[str, Any],
    ) -> int:
        """Insert or update the device with this fingerprint; refresh ``last_seen``.

        Returns the device id. Idempotent.
        """

    @abc.abstractmethod
    def upsert_workload(self, name: str, *, framework: str, info: dict[str, Any]) -> int:
        """Insert or update the workload ``(name, framework)``; returns its id. Idempotent."""

    @abc.abstractmethod
    def start_sweep(
        self,
        *,
        study_name: str,
        workload: str,
        framework: str,
        device_fingerprint: str,
        objective: str,
        settings: dict[str, Any],
        mlflow_run_id: str | None = None,
        sweep_id: int | None = None,
    ) -> int:
        """Record a sweep in state ``"running"``; returns the sweep id.

        The workload and the device must have been upserted first, otherwise
        :class:`StoreError` naming the missing one is raised. With ``sweep_id`` (a queued
        sweep claimed by :meth:`claim_sweep`) no row is created: that row, which must be
        ``running``, gets the study, workload, device, settings and run id
        (:class:`SweepStateError` otherwise; :class:`StoreError` if it does not exist).
        """

    @abc.abstractmethod
    def finish_sweep(
        self,
        sweep_id: int,
        *,
        state: str,
        n_trials: int | None,
        n_complete: int | None,
        summary: dict[str, Any] | None = None,
        mlflow_run_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Set the final state (one of :data:`FINAL_SWEEP_STATES`), the trial counts
        (``None`` keeps the stored ones), ``finished_at`` and the one-line ``error`` (kept to
        1000 characters). ``summary`` and ``mlflow_run_id`` are only overwritten when given.
        Raises :class:`StoreError` if the sweep does not exist."""

    @abc.abstractmethod
    def replace_mlflow_run_id(self, old: str, new: str) -> int:
        """Point every sweep, best config and history entry recorded with MLflow run id
        ``old`` (a tracking spool's placeholder) at ``new``; returns the rows changed."""

    @abc.abstractmethod
    def get_sweep(self, sweep_id: int) -> dict[str, Any] | None:
        """The sweep as a JSON-serialisable dict, or ``None`` if unknown.

        Keys: ``id``, ``state``, ``study_name``, ``workload``, ``framework``, ``device_kind``,
        ``device_name``, ``device_fingerprint`` (``None`` until it starts, except the workload,
        framework and device the request names), ``objective``, ``submitted_at``,
        ``started_at``, ``finished_at`` (ISO 8601 or ``None``), ``trials_total``,
        ``trials_done``, ``best_value``, ``n_trials``, ``n_complete``, ``mlflow_run_id``,
        ``settings``, ``summary``, ``request``, ``worker``, ``error``, ``cancel_requested``.
        """

    @abc.abstractmethod
    def last_sweep(self, study_name: str) -> dict[str, Any] | None:
        """The newest sweep of Optuna study ``study_name`` that ran (as :meth:`get_sweep`;
        queued ones not counted), or ``None``."""

    @abc.abstractmethod
    def queue_sweep(self, request: dict[str, Any], *, objective: str) -> int:
        """Record a submitted sweep in state ``"queued"`` (``request`` is what a worker will
        run: plain JSON values); returns its id. Nothing is validated here."""

    @abc.abstractmethod
    def interrupt_sweeps(self, study_name: str,
                         is_dead: Callable[[dict[str, Any]], bool]) -> list[int]:  # fmt: skip
        """Mark the ``running`` sweeps of ``study_name`` whose owner is dead (``is_dead`` of
        their ``settings``) ``interrupted``; returns their ids. One transaction."""

    @abc.abstractmethod
    def requeue_sweeps(self, is_dead: Callable[[dict[str, Any]], bool]) -> list[int]:
        """Queued sweeps whose worker died while running them: each ``running`` sweep that came
        from the queue and for which ``is_dead({"settings": ..., "worker": ...})`` is true goes
        back to ``queued`` (its settings cleared; the next claim resumes its study), or to
        ``cancelled`` if a cancel was requested. Returns their ids. Rows another transaction
        has locked are skipped."""

    @abc.abstractmethod
    def claim_sweep(self, worker: str) -> dict[str, Any] | None:
        """Take the oldest queued sweep: it becomes ``running``, claimed by ``worker``
        (``host:pid``), with ``started_at`` now; returns it (as :meth:`get_sweep`), or
        ``None`` if none is queued.

        Atomic across threads, processes and machines: each queued sweep is claimed by exactly
        one caller (PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: a conditional
        update inside ``BEGIN IMMEDIATE``).
        """

    @abc.abstractmethod
    def update_progress(self, sweep_id: int, *, trials_done: int | None = None,
                        best_value: float | None = None) -> bool:  # fmt: skip
        """Record a running sweep's progress (what is given; non-finite values as ``None``)
        and return whether its cancellation was requested. With neither argument it only
        reads the flag. Raises :class:`StoreError` if the sweep does not exist."""

    @abc.abstractmethod
    def cancel_sweep(self, sweep_id: int) -> dict[str, Any] | None:
        """Cancel a sweep: a queued one becomes ``cancelled`` at once (``finished_at`` now), a
        running one gets ``cancel_requested`` (its loop stops between trials and marks it
        ``cancelled``); cancelling it twice is harmless. Returns the sweep after the change,
        ``None`` if unknown; :class:`SweepStateError` if it has already finished."""

    @abc.abstractmethod
    def list_sweeps(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Sweeps (as :meth:`get_sweep`), newest first, optionally of one state; at most
        ``limit``. An unknown ``state`` raises :class:`ValueError`."""

    @abc.abstractmethod
    def list_devices(self) -> list[dict[str, Any]]:
        """Every device recorded (by a sweep that ran on it), most recently seen first: dicts
        with ``id``, ``fingerprint``, ``framework``, ``kind``, ``name``, ``count``,
        ``memory_bytes``, ``info``, ``first_seen``, ``last_seen``."""

    @abc.abstractmethod
    def save_best(
        self,
        *,
        workload: str,
        framework: str,
        device_fingerprint: str,
        objective: str,
        direction: str,
        unit: str,
        config: dict[str, Any],
        value: float,
        spread: float | None,
        metrics: dict[str, Any],
        baseline_config: dict[str, Any] | None,
        baseline_value: float | None,
        speedup: float | None,
        mlflow_run_id: str | None,
        sweep_id: int | None,
        value_interval: tuple[float, float] | None = None,
        speedup_interval: tuple[float, float] | None = None,
    ) -> tuple[BestConfigRecord, bool]:
        """Offer a confirmed result for the key (workload, framework, device, objective).

        One transaction, safe under concurrent writers (also from other processes):

        * no best yet: insert it, return ``(record, True)``;
        * the new result is better per ``direction``: the previous best moves to the history
          with reason ``"replaced"``, the new one is stored, ``(record, True)``. With a
          ``value_interval`` (its 95% confidence interval), better means better beyond it:
          the interval's worse end beats the stored value. Without one, better or equal;
        * otherwise the stored best is kept, the new result goes to the history with
          reason ``"not_better"``, and ``(stored record, False)`` is returned.

        Raises :class:`StoreError` if the workload/device is unknown or if ``direction``
        differs from the one already stored for the key.
        """

    @abc.abstractmethod
    def get_best(
        self,
        *,
        workload: str | None,
        framework: str | None = None,
        device: str | None = None,
        objective: str | None = None,
    ) -> list[BestConfigRecord]:
        """Best configs of a workload (``None``: of every workload), optionally filtered.

        ``device`` matches the device kind (``"cpu"``, ``"cuda"``), the device model name
        (both case-insensitive) or a fingerprint prefix of at least 6 hex characters.
        Ordered by workload, then objective, then best first within an objective (lowest value
        first for ``minimize``, highest first for ``maximize``). Records include their history.
        """

    @abc.abstractmethod
    def get_best_by_id(self, best_id: int) -> BestConfigRecord | None:
        """One best config by id, with its history, or ``None``."""

    @abc.abstractmethod
    def save_front(self, *, workload: str, framework: str, device_fingerprint: str, objective: str,
                   names: list[str], directions: list[str], units: list[str],
                   points: list[dict[str, Any]], mlflow_run_id: str | None,
                   sweep_id: int | None) -> ParetoFrontRecord:  # fmt: skip
        """Store the confirmed Pareto front of a multi-objective key (see
        :class:`ParetoFrontRecord`), replacing the one stored before. ``points`` must be
        non-empty, each with as many finite ``values`` as ``names``."""

    @abc.abstractmethod
    def get_fronts(self, *, workload: str | None, framework: str | None = None,
                   device: str | None = None, objective: str | None = None) -> list[ParetoFrontRecord]:  # fmt: skip
        """Stored fronts, filtered as :meth:`get_best` filters (``objective``: a name the key
        contains), by workload then key."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release all connection resources. Idempotent."""

    def __enter__(self) -> BaseConfigStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
