"""SQLAlchemy implementation of :class:`~perftune.storage.BaseConfigStore`."""

from __future__ import annotations

import math
import string
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from enum import Enum
from pathlib import PurePath
from typing import Any, TypeVar

from sqlalchemy import exc, func, or_, select, update
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, contains_eager, selectinload

from ._base import (
    DIRECTIONS,
    FINAL_SWEEP_STATES,
    SWEEP_STATES,
    BaseConfigStore,
    BestConfigRecord,
    ParetoFrontRecord,
    SchemaNotReadyError,
    StoreError,
    StoreUnavailableError,
    SweepStateError,
)
from ._engine import (
    SQLITE_BEGIN_OPTION,
    make_engine,
    not_ready,
    parse_url,
    sqlite_file,
    translate_error,
)
from ._migrate import head_revision, known_revisions, revision_of, upgrade_engine
from ._models import BestConfig, BestConfigHistory, Device, ParetoFront, Sweep, Workload, utcnow
from ._urls import normalize_url, redact_url

__all__ = ["SQLConfigStore", "open_store"]

T = TypeVar("T")
_HEX = frozenset(string.hexdigits.lower())
_FINAL_SWEEP_STATES = FINAL_SWEEP_STATES
_SWEEP_OPTIONS = (selectinload(Sweep.workload), selectinload(Sweep.device))


# --------------------------------------------------------------------------- helpers


def _jsonable(value: Any) -> Any:
    """A JSON-safe copy of ``value``: numpy scalars/arrays become Python numbers/lists,
    tuples and sets become lists, datetimes ISO strings, non-finite floats ``None``
    (PostgreSQL's JSON rejects NaN/Infinity), anything else ``str()``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return _jsonable(value.value)
    if isinstance(value, PurePath):
        return str(value)
    for attr in ("tolist", "item"):  # numpy arrays / numpy, torch scalars
        fn = getattr(value, attr, None)
        if callable(fn):
            try:
                return _jsonable(fn())
            except Exception:  # fall back to str()
                continue
    return str(value)


def _json_dict(value: dict[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a dict, got {type(value).__name__}")
    return _jsonable(value)


def _finite(value: Any, what: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return f


def _opt_float(value: Any) -> float | None:
    """Optional float; non-finite values are stored as NULL."""
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _fingerprint(fp: str) -> str:
    fp = (fp or "").strip().lower()
    if not fp:
        raise ValueError("device fingerprint must not be empty")
    if len(fp) > 128:
        raise ValueError("device fingerprint longer than 128 characters")
    return fp


def _is_better_or_equal(new: float, old: float, direction: str) -> bool:
    return new <= old if direction == "minimize" else new >= old


def _improves(payload: dict[str, Any], old: float, direction: str) -> bool:
    """Whether a new result replaces a stored value: better beyond its interval when it has
    one (the interval's worse end beats ``old``), else better or equal."""
    low, high = payload["value_low"], payload["value_high"]
    if low is None or high is None:
        return _is_better_or_equal(payload["value"], old, direction)
    return high < old if direction == "minimize" else low > old


_INTERVAL_COLUMNS = ("value_low", "value_high", "speedup_low", "speedup_high")


def _pair(low: float | None, high: float | None) -> tuple[float, float] | None:
    return None if low is None or high is None else (low, high)


def _interval(bounds: tuple[float, float] | None, what: str) -> tuple[float | None, float | None]:
    if bounds is None:
        return None, None
    low, high = (_finite(b, what) for b in bounds)
    if low > high:
        raise ValueError(f"{what} must be (low, high) with low <= high, got {bounds!r}")
    return low, high


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _history_dict(h: BestConfigHistory) -> dict[str, Any]:
    return {
        "config": h.config,
        "value": h.value,
        "spread": h.spread,
        "speedup": h.speedup,
        "value_interval": _pair(h.value_low, h.value_high),
        "speedup_interval": _pair(h.speedup_low, h.speedup_high),
        "metrics": h.metrics,
        "baseline_value": h.baseline_value,
        "mlflow_run_id": h.mlflow_run_id,
        "sweep_id": h.sweep_id,
        "recorded_at": _iso(h.recorded_at),
        "reason": h.reason,
    }


def _device_matches(device: str):
    """The condition of a ``device`` filter: the kind or the model name (case-insensitive), or
    a fingerprint prefix of at least 6 hex characters."""
    d = device.strip().lower()
    conds = [func.lower(Device.kind) == d, func.lower(Device.name) == d]
    if len(d) >= 6 and set(d) <= _HEX:
        conds.append(Device.fingerprint.startswith(d, autoescape=True))
    return or_(*conds)


def _front_record(row: ParetoFront) -> ParetoFrontRecord:
    return ParetoFrontRecord(
        id=row.id, workload=row.workload.name, framework=row.framework, device_kind=row.device.kind,
        device_name=row.device.name, device_fingerprint=row.device.fingerprint, objective=row.objective,
        names=list(row.names), directions=list(row.directions), units=list(row.units),
        points=[dict(p) for p in row.points], mlflow_run_id=row.mlflow_run_id, sweep_id=row.sweep_id,
        updated_at=row.updated_at,
    )  # fmt: skip


def _record(row: BestConfig) -> BestConfigRecord:
    history = sorted(row.history, key=lambda h: (h.recorded_at, h.id), reverse=True)
    return BestConfigRecord(
        id=row.id,
        workload=row.workload.name,
        framework=row.framework,
        device_kind=row.device.kind,
        device_name=row.device.name,
        device_fingerprint=row.device.fingerprint,
        objective=row.objective,
        direction=row.direction,
        unit=row.unit,
        config=row.config,
        value=row.value,
        spread=row.spread,
        metrics=row.metrics,
        baseline_config=row.baseline_config,
        baseline_value=row.baseline_value,
        speedup=row.speedup,
        mlflow_run_id=row.mlflow_run_id,
        sweep_id=row.sweep_id,
        study_name=row.sweep.study_name if row.sweep is not None else None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        history=[_history_dict(h) for h in history],
        value_interval=_pair(row.value_low, row.value_high),
        speedup_interval=_pair(row.speedup_low, row.speedup_high),
    )


def _sweep_dict(sw: Sweep) -> dict[str, Any]:
    req = sw.request or {}
    wl, dev = sw.workload, sw.device
    settings = sw.settings or {}
    return {
        "id": sw.id,
        "state": sw.state,
        "study_name": sw.study_name,
        "workload": wl.name if wl is not None else req.get("workload"),
        "framework": wl.framework if wl is not None else req.get("framework"),
        "device_fingerprint": dev.fingerprint if dev is not None else None,
        "device_kind": dev.kind if dev is not None else req.get("device"),
        "device_name": dev.name if dev is not None else None,
        "objective": sw.objective,
        "submitted_at": _iso(sw.submitted_at),
        "started_at": _iso(sw.started_at),
        "finished_at": _iso(sw.finished_at),
        "trials_total": settings.get("trials", req.get("trials")),
        "trials_done": sw.trials_done,
        "best_value": sw.best_value,
        "n_trials": sw.n_trials,
        "n_complete": sw.n_complete,
        "mlflow_run_id": sw.mlflow_run_id,
        "settings": sw.settings,
        "summary": sw.summary,
        "request": sw.request,
        "worker": sw.worker,
        "error": sw.error,
        "cancel_requested": bool(sw.cancel_requested),
    }


def _sort_key(rec: BestConfigRecord) -> tuple[str, str, float, int]:
    return (rec.workload, rec.objective, rec.value if rec.direction == "minimize" else -rec.value, rec.id)


# --------------------------------------------------------------------------- the store


class SQLConfigStore(BaseConfigStore):
    """Config store on any SQLAlchemy database (tested: SQLite files, PostgreSQL/psycopg 3).

    Use :func:`open_store` to get one: it checks that the database is reachable and its
    schema current. Constructing ``SQLConfigStore(url)`` directly neither connects nor
    checks the schema.

    * **Ownership**: the store creates and owns one :class:`~sqlalchemy.engine.Engine`
      (connection pool); :meth:`close` (or leaving ``with store:``) disposes it. Nothing
      else should close it; :attr:`engine` is exposed for tests and migrations only.
    * **Sessions**: every public method opens its own short-lived
      :class:`~sqlalchemy.orm.Session` and transaction and closes both before returning;
      no ORM object escapes (records are plain dataclasses / dicts).
    * **Thread safety**: consequently one store object can be shared by any number of
      threads. Several processes may use the same database concurrently: on PostgreSQL
      :meth:`save_best` and the upserts lock the affected row (``SELECT ... FOR UPDATE``)
      and retry once on a unique-key insert race; on SQLite every writing transaction
      starts with ``BEGIN IMMEDIATE`` (WAL mode, 30 s busy timeout), which serialises
      writers.
    * In-memory SQLite (``sqlite://``) works with one shared connection, for tests only.
    """

    def __init__(self, url: str | URL) -> None:
        self._url: URL = parse_url(normalize_url(url)) if isinstance(url, str) else url
        self._engine: Engine = make_engine(self._url)
        self._closed = False

    # -- plumbing -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with the password redacted."""
        return redact_url(self._url.render_as_string(hide_password=False))

    @property
    def engine(self) -> Engine:
        """The engine owned by this store (do not dispose it yourself)."""
        return self._engine

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine.dispose()

    def __enter__(self) -> SQLConfigStore:
        return self

    def __repr__(self) -> str:
        return f"SQLConfigStore({self.url!r})"

    @contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[Session]:
        """One session + transaction; commits on success, rolls back on error.

        ``IntegrityError`` is re-raised as is (callers retry), other database errors are
        translated to :class:`StoreError` subclasses.
        """
        if self._closed:
            raise StoreError("the perftune config store is closed")
        try:
            with self._engine.connect() as conn:
                if write and conn.dialect.name == "sqlite":
                    conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
                with Session(bind=conn, expire_on_commit=False, autoflush=True) as s, s.begin():
                    yield s
        except exc.IntegrityError:
            raise
        except (exc.SQLAlchemyError, ImportError) as e:
            err = translate_error(e, self._url)
            raise err from (None if isinstance(err, StoreUnavailableError) else e)

    def _retry_integrity(self, fn: Callable[[], T], what: str) -> T:
        """Run ``fn`` (one transaction); on a unique-key race retry it once."""
        try:
            return fn()
        except exc.IntegrityError:
            pass
        try:
            return fn()
        except exc.IntegrityError as e:
            raise StoreError(f"{what} failed: {translate_error(e, self._url)}") from e

    @staticmethod
    def _workload_id(s: Session, name: str, framework: str) -> int:
        wid = s.scalar(
            select(Workload.id).where(Workload.name == name, Workload.framework == framework)
        )
        if wid is None:
            raise StoreError(
                f"unknown workload {name!r} (framework {framework!r}): call upsert_workload first"
            )
        return wid

    @staticmethod
    def _device_id(s: Session, fingerprint: str) -> int:
        did = s.scalar(select(Device.id).where(Device.fingerprint == fingerprint))
        if did is None:
            raise StoreError(
                f"unknown device with fingerprint {fingerprint!r}: call upsert_device first"
            )
        return did

    # -- devices & workloads --------------------------------------------------------

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
        fp = _fingerprint(fingerprint)
        info = _json_dict(info, "info")

        def op() -> int:
            with self._tx(write=True) as s:
                now = utcnow()
                dev = s.scalars(
                    select(Device).where(Device.fingerprint == fp).with_for_update()
                ).one_or_none()
                if dev is None:
                    dev = Device(fingerprint=fp, first_seen=now)
                    s.add(dev)
                dev.framework = framework
                dev.kind = kind
                dev.name = name
                dev.count = int(count)
                dev.memory_bytes = int(memory_bytes) if memory_bytes is not None else None
                dev.info = info
                dev.last_seen = now
                s.flush()
                return dev.id

        return self._retry_integrity(op, "upsert_device")

    def upsert_workload(self, name: str, *, framework: str, info: dict[str, Any]) -> int:
        info = _json_dict(info, "info")

        def op() -> int:
            with self._tx(write=True) as s:
                wl = s.scalars(
                    select(Workload)
                    .where(Workload.name == name, Workload.framework == framework)
                    .with_for_update()
                ).one_or_none()
                if wl is None:
                    wl = Workload(name=name, framework=framework, created_at=utcnow())
                    s.add(wl)
                wl.info = info
                s.flush()
                return wl.id

        return self._retry_integrity(op, "upsert_workload")

    # -- sweeps -------------------------------------------------------------------

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
        fp = _fingerprint(device_fingerprint)
        settings = _json_dict(settings, "settings")
        with self._tx(write=True) as s:
            wid, did = self._workload_id(s, workload, framework), self._device_id(s, fp)
            if sweep_id is not None:
                sweep = s.get(Sweep, sweep_id, with_for_update=True)
                if sweep is None:
                    raise StoreError(f"unknown sweep id {sweep_id}")
                if sweep.state != "running":
                    raise SweepStateError(f"sweep {sweep_id} is {sweep.state}, not running")
                sweep.study_name, sweep.workload_id, sweep.device_id = study_name, wid, did
                sweep.objective, sweep.settings = objective, settings
                sweep.mlflow_run_id = mlflow_run_id
                return sweep.id
            sweep = Sweep(
                study_name=study_name,
                workload_id=wid,
                device_id=did,
                objective=objective,
                state="running",
                started_at=utcnow(),
                finished_at=None,
                n_trials=0,
                n_complete=0,
                mlflow_run_id=mlflow_run_id,
                settings=settings,
                summary=None,
                trials_done=0,
                cancel_requested=False,
            )
            s.add(sweep)
            s.flush()
            return sweep.id

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
        if state not in _FINAL_SWEEP_STATES:
            raise ValueError(f"sweep state must be one of {_FINAL_SWEEP_STATES}, got {state!r}")
        summary_json = _json_dict(summary, "summary") if summary is not None else None
        with self._tx(write=True) as s:
            sweep = s.get(Sweep, sweep_id, with_for_update=True)
            if sweep is None:
                raise StoreError(f"unknown sweep id {sweep_id}")
            sweep.state = state
            if n_trials is not None:
                sweep.n_trials = int(n_trials)
            if n_complete is not None:
                sweep.n_complete = int(n_complete)
            sweep.finished_at = utcnow()
            if summary is not None:
                sweep.summary = summary_json
            if mlflow_run_id is not None:
                sweep.mlflow_run_id = mlflow_run_id
            if error is not None:
                sweep.error = " ".join(str(error).split())[:1000]

    def replace_mlflow_run_id(self, old: str, new: str) -> int:
        changed = 0
        with self._tx(write=True) as s:
            for model in (Sweep, BestConfig, BestConfigHistory):
                res = s.execute(update(model).where(model.mlflow_run_id == old)
                                .values(mlflow_run_id=new))  # fmt: skip
                changed += res.rowcount or 0
        return changed

    def get_sweep(self, sweep_id: int) -> dict[str, Any] | None:
        with self._tx() as s:
            sweep = s.get(Sweep, sweep_id, options=list(_SWEEP_OPTIONS))
            return _sweep_dict(sweep) if sweep is not None else None

    def last_sweep(self, study_name: str) -> dict[str, Any] | None:
        stmt = (select(Sweep).options(*_SWEEP_OPTIONS)
                .where(Sweep.study_name == study_name, Sweep.state != "queued")
                .order_by(Sweep.id.desc()).limit(1))  # fmt: skip
        with self._tx() as s:
            sweep = s.scalars(stmt).first()
            return _sweep_dict(sweep) if sweep is not None else None

    def interrupt_sweeps(self, study_name: str, is_dead: Callable[[dict[str, Any]], bool]) -> list[int]:
        """Mark the ``running`` sweeps of ``study_name`` whose owner is dead (``is_dead`` of
        their settings) ``interrupted``; returns their ids."""
        with self._tx(write=True) as s:
            rows = s.scalars(
                select(Sweep)
                .where(Sweep.study_name == study_name, Sweep.state == "running")
                .with_for_update()
            ).all()
            done = []
            for sweep in rows:
                if is_dead(sweep.settings or {}):
                    sweep.state, sweep.finished_at = "interrupted", utcnow()
                    done.append(sweep.id)
            return done

    def requeue_sweeps(self, is_dead: Callable[[dict[str, Any]], bool]) -> list[int]:
        with self._tx(write=True) as s:
            rows = s.scalars(
                select(Sweep)
                .where(Sweep.state == "running", Sweep.request.is_not(None))
                .with_for_update(skip_locked=True)
            ).all()
            done = []
            for sweep in rows:
                if not is_dead({"settings": sweep.settings or {}, "worker": sweep.worker}):
                    continue
                if sweep.cancel_requested:
                    sweep.state, sweep.finished_at = "cancelled", utcnow()
                else:  # the study resumes where the dead worker left it
                    sweep.state, sweep.worker, sweep.settings = "queued", None, {}
                done.append(sweep.id)
            return done

    # -- the queue ------------------------------------------------------------------

    def queue_sweep(self, request: dict[str, Any], *, objective: str) -> int:
        request = _json_dict(request, "request")
        with self._tx(write=True) as s:
            sweep = Sweep(objective=objective, state="queued", submitted_at=utcnow(),
                          n_trials=0, n_complete=0, settings={}, request=request,
                          trials_done=0, cancel_requested=False)  # fmt: skip
            s.add(sweep)
            s.flush()
            return sweep.id

    def claim_sweep(self, worker: str) -> dict[str, Any] | None:
        with self._tx(write=True) as s:
            # SQLite: BEGIN IMMEDIATE already serialises writers (FOR UPDATE renders nothing);
            # PostgreSQL: concurrent claimers skip the row another one has locked.
            sid = s.scalar(
                select(Sweep.id)
                .where(Sweep.state == "queued")
                .order_by(Sweep.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if sid is None:
                return None
            done = s.execute(
                update(Sweep)
                .where(Sweep.id == sid, Sweep.state == "queued")
                .values(state="running", worker=str(worker)[:255], started_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            if done.rowcount != 1:  # pragma: no cover - only without row locks
                return None
            sweep = s.get(Sweep, sid, options=list(_SWEEP_OPTIONS), populate_existing=True)
            return _sweep_dict(sweep)

    def update_progress(self, sweep_id: int, *, trials_done: int | None = None,
                        best_value: float | None = None) -> bool:  # fmt: skip
        write = trials_done is not None or best_value is not None
        with self._tx(write=write) as s:
            sweep = s.get(Sweep, sweep_id, with_for_update=write)
            if sweep is None:
                raise StoreError(f"unknown sweep id {sweep_id}")
            if trials_done is not None:
                sweep.trials_done = int(trials_done)
            if best_value is not None:
                sweep.best_value = _opt_float(best_value)
            return bool(sweep.cancel_requested)

    def cancel_sweep(self, sweep_id: int) -> dict[str, Any] | None:
        with self._tx(write=True) as s:
            sweep = s.get(Sweep, sweep_id, with_for_update=True)
            if sweep is None:
                return None
            if sweep.state == "queued":
                sweep.state, sweep.finished_at = "cancelled", utcnow()
                sweep.cancel_requested = True
            elif sweep.state == "running":
                sweep.cancel_requested = True
            else:
                raise SweepStateError(f"sweep {sweep_id} is {sweep.state}: only a queued or "
                                      "running sweep can be cancelled")  # fmt: skip
            s.flush()
            return _sweep_dict(sweep)

    def list_sweeps(self, *, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if state is not None and state not in SWEEP_STATES:
            raise ValueError(f"sweep state must be one of {SWEEP_STATES}, got {state!r}")
        stmt = select(Sweep).options(*_SWEEP_OPTIONS).order_by(Sweep.id.desc())
        if state is not None:
            stmt = stmt.where(Sweep.state == state)
        with self._tx() as s:
            return [_sweep_dict(sw) for sw in s.scalars(stmt.limit(max(0, int(limit))))]

    def list_devices(self) -> list[dict[str, Any]]:
        with self._tx() as s:
            rows = s.scalars(select(Device).order_by(Device.last_seen.desc(), Device.id.desc()))
            return [{"id": d.id, "fingerprint": d.fingerprint, "framework": d.framework,
                     "kind": d.kind, "name": d.name, "count": d.count,
                     "memory_bytes": d.memory_bytes, "info": d.info,
                     "first_seen": _iso(d.first_seen), "last_seen": _iso(d.last_seen)}
                    for d in rows]  # fmt: skip

    # -- best configs ---------------------------------------------------------------

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
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        fp = _fingerprint(device_fingerprint)
        payload: dict[str, Any] = {
            "config": _json_dict(config, "config"),
            "value": _finite(value, "value"),
            "spread": _opt_float(spread),
            "metrics": _json_dict(metrics, "metrics"),
            "baseline_value": _opt_float(baseline_value),
            "speedup": _opt_float(speedup),
            "mlflow_run_id": mlflow_run_id,
            "sweep_id": sweep_id,
        }
        payload["value_low"], payload["value_high"] = _interval(value_interval, "value_interval")
        payload["speedup_low"], payload["speedup_high"] = _interval(
            speedup_interval, "speedup_interval"
        )
        base_cfg = (
            _json_dict(baseline_config, "baseline_config") if baseline_config is not None else None
        )

        def op() -> tuple[BestConfigRecord, bool]:
            with self._tx(write=True) as s:
                wid = self._workload_id(s, workload, framework)
                did = self._device_id(s, fp)
                if sweep_id is not None and s.get(Sweep, sweep_id) is None:
                    raise StoreError(f"unknown sweep id {sweep_id}")
                now = utcnow()
                row = s.scalars(
                    select(BestConfig)
                    .where(
                        BestConfig.workload_id == wid,
                        BestConfig.framework == framework,
                        BestConfig.device_id == did,
                        BestConfig.objective == objective,
                    )
                    .with_for_update()
                ).one_or_none()
                if row is None:
                    row = BestConfig(
                        workload_id=wid,
                        device_id=did,
                        framework=framework,
                        objective=objective,
                        direction=direction,
                        unit=unit,
                        baseline_config=base_cfg,
                        created_at=now,
                        updated_at=now,
                        **payload,
                    )
                    s.add(row)
                    improved = True
                else:
                    if row.direction != direction:
                        raise StoreError(
                            f"objective {objective!r} is stored with direction "
                            f"{row.direction!r}, got {direction!r}"
                        )
                    improved = _improves(payload, row.value, direction)
                    if improved:
                        s.add(
                            BestConfigHistory(
                                best_config_id=row.id,
                                config=row.config,
                                value=row.value,
                                spread=row.spread,
                                metrics=row.metrics,
                                baseline_value=row.baseline_value,
                                speedup=row.speedup,
                                **{k: getattr(row, k) for k in _INTERVAL_COLUMNS},
                                mlflow_run_id=row.mlflow_run_id,
                                sweep_id=row.sweep_id,
                                recorded_at=now,
                                reason="replaced",
                            )
                        )
                        for key, val in payload.items():
                            setattr(row, key, val)
                        row.unit = unit
                        row.baseline_config = base_cfg
                        row.updated_at = now
                    else:
                        s.add(
                            BestConfigHistory(
                                best_config_id=row.id,
                                recorded_at=now,
                                reason="not_better",
                                **payload,
                            )
                        )
                s.flush()
                s.expire(row, ["history"])
                return _record(row), improved

        return self._retry_integrity(op, "save_best")

    def get_best(
        self,
        *,
        workload: str | None,
        framework: str | None = None,
        device: str | None = None,
        objective: str | None = None,
    ) -> list[BestConfigRecord]:
        stmt = (
            select(BestConfig)
            .join(BestConfig.workload)
            .join(BestConfig.device)
            .options(
                contains_eager(BestConfig.workload),
                contains_eager(BestConfig.device),
                selectinload(BestConfig.sweep),
                selectinload(BestConfig.history),
            )
        )
        if workload is not None:
            stmt = stmt.where(Workload.name == workload)
        if framework is not None:
            stmt = stmt.where(BestConfig.framework == framework)
        if objective is not None:  # a name matches its qualified keys too (``NAME@limits``)
            stmt = stmt.where(or_(BestConfig.objective == objective,
                                  BestConfig.objective.startswith(f"{objective}@", autoescape=True)))  # fmt: skip
        if device is not None:
            stmt = stmt.where(_device_matches(device))
        with self._tx() as s:
            records = [_record(row) for row in s.scalars(stmt).unique()]
        return sorted(records, key=_sort_key)

    def save_front(self, *, workload: str, framework: str, device_fingerprint: str, objective: str,
                   names: list[str], directions: list[str], units: list[str],
                   points: list[dict[str, Any]], mlflow_run_id: str | None,
                   sweep_id: int | None) -> ParetoFrontRecord:  # fmt: skip
        if not points or any(len(p.get("values") or ()) != len(names) for p in points):
            raise ValueError("a front needs points, each with one value per objective")
        for p in points:
            for v in p["values"]:
                _finite(v, "value")
        fp, rows = _fingerprint(device_fingerprint), [_json_dict(p, "point") for p in points]
        if any(d not in DIRECTIONS for d in directions):
            raise ValueError(f"directions must be among {DIRECTIONS}, got {directions!r}")

        def op() -> ParetoFrontRecord:
            with self._tx(write=True) as s:
                wid, did = self._workload_id(s, workload, framework), self._device_id(s, fp)
                row = s.scalars(select(ParetoFront).where(
                    ParetoFront.workload_id == wid, ParetoFront.framework == framework,
                    ParetoFront.device_id == did, ParetoFront.objective == objective).with_for_update()
                ).one_or_none()  # fmt: skip
                if row is None:
                    row = ParetoFront(workload_id=wid, framework=framework, device_id=did, objective=objective)
                    s.add(row)
                row.names, row.directions, row.units, row.points = list(names), list(directions), list(units), rows
                row.mlflow_run_id, row.sweep_id, row.updated_at = mlflow_run_id, sweep_id, utcnow()
                s.flush()
                s.refresh(row, ["workload", "device"])
                return _front_record(row)

        return self._retry_integrity(op, "save_front")

    def get_fronts(self, *, workload: str | None, framework: str | None = None,
                   device: str | None = None, objective: str | None = None) -> list[ParetoFrontRecord]:  # fmt: skip
        stmt = (select(ParetoFront).join(ParetoFront.workload).join(ParetoFront.device)
                .options(contains_eager(ParetoFront.workload), contains_eager(ParetoFront.device)))  # fmt: skip
        if workload is not None:
            stmt = stmt.where(Workload.name == workload)
        if framework is not None:
            stmt = stmt.where(ParetoFront.framework == framework)
        if device is not None:
            stmt = stmt.where(_device_matches(device))
        with self._tx() as s:
            found = [_front_record(row) for row in s.scalars(stmt).unique()]
        if objective is not None:  # a name the key contains: "energy" in "time-to-target,energy"
            found = [f for f in found if objective in f.names]
        return sorted(found, key=lambda f: (f.workload, f.objective, f.id))

    def get_best_by_id(self, best_id: int) -> BestConfigRecord | None:
        with self._tx() as s:
            row = s.get(
                BestConfig,
                best_id,
                options=[
                    selectinload(BestConfig.workload),
                    selectinload(BestConfig.device),
                    selectinload(BestConfig.sweep),
                    selectinload(BestConfig.history),
                ],
            )
            return _record(row) if row is not None else None


# --------------------------------------------------------------------------- opening


def open_store(url: str, *, create: bool = False) -> SQLConfigStore:
    """Open the config store at ``url`` (see :func:`normalize_url` for accepted forms).

    ``create=True`` first migrates the database to the newest schema (creating a SQLite
    file and its directory if needed): convenient for the embedded SQLite default.

    ``create=False`` never creates anything; it raises :class:`SchemaNotReadyError` if the
    SQLite file does not exist or the schema is not at the head revision, and
    :class:`StoreUnavailableError` if the database cannot be reached (bad URL, missing
    driver, server down: PostgreSQL gives up after a 3 s connect timeout).

    The caller owns the returned store and must :meth:`~SQLConfigStore.close` it.
    """
    u = parse_url(normalize_url(url))
    path = sqlite_file(u)
    if create:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        store = SQLConfigStore(u)
        try:
            upgrade_engine(store.engine)
        except BaseException as e:
            store.close()
            if isinstance(e, exc.SQLAlchemyError | ImportError):
                err = translate_error(e, u)
                raise err from (None if isinstance(err, StoreUnavailableError) else e)
            raise
        return store

    if path is not None and not path.exists():
        raise not_ready(u)
    store = SQLConfigStore(u)
    try:
        with store.engine.connect() as conn:
            rev = revision_of(conn)
        if rev is None:
            raise not_ready(u)
        head = head_revision()
        if rev != head:
            if rev in known_revisions():
                raise not_ready(u, f"is at schema revision {rev}, not {head}")
            raise SchemaNotReadyError(
                f"perftune database at {store.url} is at schema revision {rev}, unknown to "
                "this perftune (written by a newer version?): upgrade perftune"
            )
    except BaseException as e:
        store.close()
        if isinstance(e, exc.SQLAlchemyError | ImportError):
            err = translate_error(e, u)
            raise err from (None if isinstance(err, StoreUnavailableError) else e)
        raise
    return store
