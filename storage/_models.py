"""SQLAlchemy ORM models of the perftune config store.

All tables are prefixed ``perftune_`` and Alembic records our schema revision in
``perftune_alembic_version``, so the store can share one database (and one PostgreSQL
schema) with Optuna's and MLflow's tables, which use their own ``alembic_version``.

The schema itself is created by the Alembic migrations in ``storage/migrations``, never by
``metadata.create_all``; a test checks that the migrations and these models agree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

__all__ = [
    "VERSION_TABLE",
    "TABLE_PREFIX",
    "Base",
    "Device",
    "Workload",
    "Sweep",
    "BestConfig",
    "BestConfigHistory",
    "ParetoFront",
    "UTCDateTime",
]

#: Alembic version table of perftune (Optuna and MLflow use ``alembic_version``).
VERSION_TABLE = "perftune_alembic_version"
TABLE_PREFIX = "perftune_"

# Deterministic constraint names (needed by Alembic batch mode on SQLite); all well
# below PostgreSQL's 63-character identifier limit.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL stores ``timestamp with time zone``; SQLite has no time zones, so values are
    stored as UTC and the UTC ``tzinfo`` is re-attached on load. Naive input is taken as UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Device(Base):
    """A device as seen by one framework (the fingerprint covers framework + hardware)."""

    __tablename__ = "perftune_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(128), unique=True)
    framework: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    count: Mapped[int] = mapped_column(Integer)
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)


class Workload(Base):
    __tablename__ = "perftune_workloads"
    __table_args__ = (
        UniqueConstraint("name", "framework", name="uq_perftune_workloads_name_framework"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    framework: Mapped[str] = mapped_column(String(64))
    info: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Sweep(Base):
    """One sweep's whole life: ``queued`` (submitted through the API, waiting for a
    ``perftune worker --queue``), ``running`` (claimed by ``worker``, progress in
    ``trials_done`` / ``best_value``), then ``completed``, ``failed`` (``error``),
    ``interrupted`` or ``cancelled``. A queued sweep has no workload or device yet (the
    worker's machine decides the device): those columns are filled in when it starts."""

    __tablename__ = "perftune_sweeps"
    __table_args__ = (
        CheckConstraint(
            "state IN ('queued', 'running', 'completed', 'failed', 'interrupted', 'cancelled')",
            name="state",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_name: Mapped[str | None] = mapped_column(String(255), index=True, nullable=True)
    workload_id: Mapped[int | None] = mapped_column(
        ForeignKey("perftune_workloads.id"), index=True, nullable=True
    )
    device_id: Mapped[int | None] = mapped_column(
        ForeignKey("perftune_devices.id"), index=True, nullable=True
    )
    objective: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    n_trials: Mapped[int] = mapped_column(Integer)
    n_complete: Mapped[int] = mapped_column(Integer)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    request: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, server_default=false())
    trials_done: Mapped[int] = mapped_column(Integer, server_default="0")
    best_value: Mapped[float | None] = mapped_column(Float, nullable=True)

    workload: Mapped[Workload | None] = relationship()
    device: Mapped[Device | None] = relationship()


class BestConfig(Base):
    """The current best result per (workload, framework, device, objective)."""

    __tablename__ = "perftune_best_configs"
    __table_args__ = (
        UniqueConstraint(
            "workload_id",
            "framework",
            "device_id",
            "objective",
            name="uq_perftune_best_configs_key",
        ),
        CheckConstraint("direction IN ('minimize', 'maximize')", name="direction"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("perftune_workloads.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("perftune_devices.id"), index=True)
    framework: Mapped[str] = mapped_column(String(64))
    objective: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    unit: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    value: Mapped[float] = mapped_column(Float)
    spread: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    baseline_config: Mapped[dict[str, Any] | None] = mapped_column(
        JSON(none_as_null=True), nullable=True
    )
    baseline_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    speedup: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: 95% confidence intervals of ``value`` and ``speedup`` (0003; None: not measured so).
    value_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    value_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    speedup_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    speedup_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sweep_id: Mapped[int | None] = mapped_column(
        ForeignKey("perftune_sweeps.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    workload: Mapped[Workload] = relationship()
    device: Mapped[Device] = relationship()
    sweep: Mapped[Sweep | None] = relationship()
    history: Mapped[list[BestConfigHistory]] = relationship(
        back_populates="best_config",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="(BestConfigHistory.recorded_at.desc(), BestConfigHistory.id.desc())",
    )


class BestConfigHistory(Base):
    """Earlier (superseded or not-better) results of a best-config key."""

    __tablename__ = "perftune_best_config_history"
    __table_args__ = (CheckConstraint("reason IN ('replaced', 'not_better')", name="reason"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    best_config_id: Mapped[int] = mapped_column(
        ForeignKey("perftune_best_configs.id", ondelete="CASCADE"), index=True
    )
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    value: Mapped[float] = mapped_column(Float)
    spread: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    baseline_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    speedup: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: 95% confidence intervals of ``value`` and ``speedup`` (0003; None: not measured so).
    value_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    value_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    speedup_low: Mapped[float | None] = mapped_column(Float, nullable=True)
    speedup_high: Mapped[float | None] = mapped_column(Float, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sweep_id: Mapped[int | None] = mapped_column(
        ForeignKey("perftune_sweeps.id", ondelete="SET NULL"), nullable=True
    )
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(16))

    best_config: Mapped[BestConfig] = relationship(back_populates="history")


class ParetoFront(Base):
    """A multi-objective sweep's confirmed Pareto front per (workload, framework, device,
    objectives) key (0004): the objectives (``names``, ``directions``, ``units``) and every
    non-dominated point (``points``: config, median values in objective order, their 95%
    intervals, metrics, trial number, label). A newer confirmed front replaces it."""

    __tablename__ = "perftune_pareto_fronts"
    __table_args__ = (
        UniqueConstraint("workload_id", "framework", "device_id", "objective",
                         name="uq_perftune_pareto_fronts_key"),  # fmt: skip
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    workload_id: Mapped[int] = mapped_column(ForeignKey("perftune_workloads.id"))
    device_id: Mapped[int] = mapped_column(ForeignKey("perftune_devices.id"), index=True)
    framework: Mapped[str] = mapped_column(String(64))
    objective: Mapped[str] = mapped_column(String(255))
    names: Mapped[list[str]] = mapped_column(JSON)
    directions: Mapped[list[str]] = mapped_column(JSON)
    units: Mapped[list[str]] = mapped_column(JSON)
    points: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sweep_id: Mapped[int | None] = mapped_column(
        ForeignKey("perftune_sweeps.id", ondelete="SET NULL"), nullable=True
    )
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    workload: Mapped[Workload] = relationship()
    device: Mapped[Device] = relationship()
