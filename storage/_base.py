"""The abstract config-store interface, its record type and its errors."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

__all__ = [
    "BaseConfigStore",
    "BestConfigRecord",
    "SchemaNotReadyError",
    "StoreError",
    "StoreUnavailableError",
    "SWEEP_STATES",
    "DIRECTIONS",
    "HISTORY_REASONS",
]

#: Allowed values of ``perftune_sweeps.state``.
SWEEP_STATES = ("running", "completed", "failed", "interrupted")
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
    ) -> int:
        """Record a sweep in state ``"running"``; returns the sweep id.

        The workload and the device must have been upserted first, otherwise
        :class:`StoreError` naming the missing one is raised.
        """

    @abc.abstractmethod
    def finish_sweep(
        self,
        sweep_id: int,
        *,
        state: str,
        n_trials: int,
        n_complete: int,
        summary: dict[str, Any] | None = None,
        mlflow_run_id: str | None = None,
    ) -> None:
        """Set the final state (``completed``, ``failed`` or ``interrupted``), the trial
        counts and ``finished_at``. ``mlflow_run_id`` is only overwritten when given.
        Raises :class:`StoreError` if the sweep does not exist."""

    @abc.abstractmethod
    def replace_mlflow_run_id(self, old: str, new: str) -> int:
        """Point every sweep, best config and history entry recorded with MLflow run id
        ``old`` (a tracking spool's placeholder) at ``new``; returns the rows changed."""

    @abc.abstractmethod
    def get_sweep(self, sweep_id: int) -> dict[str, Any] | None:
        """The sweep as a JSON-serialisable dict, or ``None`` if unknown."""

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
    ) -> tuple[BestConfigRecord, bool]:
        """Offer a confirmed result for the key (workload, framework, device, objective).

        One transaction, safe under concurrent writers (also from other processes):

        * no best yet: insert it, return ``(record, True)``;
        * the new value is better or equal per ``direction``: the previous best moves to
          the history with reason ``"replaced"``, the new one is stored, ``(record, True)``;
        * otherwise the stored best is kept, the new result goes to the history with
          reason ``"not_better"``, and ``(stored record, False)`` is returned.

        Raises :class:`StoreError` if the workload/device is unknown or if ``direction``
        differs from the one already stored for the key.
        """

    @abc.abstractmethod
    def get_best(
        self,
        *,
        workload: str,
        framework: str | None = None,
        device: str | None = None,
        objective: str | None = None,
    ) -> list[BestConfigRecord]:
        """Best configs of a workload, optionally filtered.

        ``device`` matches the device kind (``"cpu"``, ``"cuda"``), the device model name
        (both case-insensitive) or a fingerprint prefix of at least 6 hex characters.
        Ordered by objective, then best first within an objective (lowest value first for
        ``minimize``, highest first for ``maximize``). Records include their history.
        """

    @abc.abstractmethod
    def get_best_by_id(self, best_id: int) -> BestConfigRecord | None:
        """One best config by id, with its history, or ``None``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release all connection resources. Idempotent."""

    def __enter__(self) -> BaseConfigStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
