"""initial perftune schema

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts() -> sa.DateTime:
    """Timezone-aware timestamp (timestamptz on PostgreSQL; UTC text on SQLite)."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "perftune_devices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=128), nullable=False),
        sa.Column("framework", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=True),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("first_seen", _ts(), nullable=False),
        sa.Column("last_seen", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_perftune_devices"),
        sa.UniqueConstraint("fingerprint", name="uq_perftune_devices_fingerprint"),
    )
    op.create_table(
        "perftune_workloads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("framework", sa.String(length=64), nullable=False),
        sa.Column("info", sa.JSON(), nullable=False),
        sa.Column("created_at", _ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_perftune_workloads"),
        sa.UniqueConstraint("name", "framework", name="uq_perftune_workloads_name_framework"),
    )
    op.create_table(
        "perftune_sweeps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_name", sa.String(length=255), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("objective", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("started_at", _ts(), nullable=False),
        sa.Column("finished_at", _ts(), nullable=True),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("n_complete", sa.Integer(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("summary", sa.JSON(none_as_null=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'completed', 'failed', 'interrupted')",
            name="ck_perftune_sweeps_state",
        ),
        sa.ForeignKeyConstraint(
            ["workload_id"], ["perftune_workloads.id"], name="fk_perftune_sweeps_workload_id"
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["perftune_devices.id"], name="fk_perftune_sweeps_device_id"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_perftune_sweeps"),
    )
    op.create_index("ix_perftune_sweeps_study_name", "perftune_sweeps", ["study_name"])
    op.create_index("ix_perftune_sweeps_workload_id", "perftune_sweeps", ["workload_id"])
    op.create_index("ix_perftune_sweeps_device_id", "perftune_sweeps", ["device_id"])
    op.create_table(
        "perftune_best_configs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("framework", sa.String(length=64), nullable=False),
        sa.Column("objective", sa.String(length=64), nullable=False),
        sa.Column("direction", sa.String(length=8), nullable=False),
        sa.Column("unit", sa.String(length=32), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("spread", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("baseline_config", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("baseline_value", sa.Float(), nullable=True),
        sa.Column("speedup", sa.Float(), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _ts(), nullable=False),
        sa.Column("updated_at", _ts(), nullable=False),
        sa.CheckConstraint(
            "direction IN ('minimize', 'maximize')", name="ck_perftune_best_configs_direction"
        ),
        sa.ForeignKeyConstraint(
            ["workload_id"], ["perftune_workloads.id"], name="fk_perftune_best_configs_workload_id"
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["perftune_devices.id"], name="fk_perftune_best_configs_device_id"
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["perftune_sweeps.id"],
            name="fk_perftune_best_configs_sweep_id",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_perftune_best_configs"),
        sa.UniqueConstraint(
            "workload_id",
            "framework",
            "device_id",
            "objective",
            name="uq_perftune_best_configs_key",
        ),
    )
    op.create_index("ix_perftune_best_configs_device_id", "perftune_best_configs", ["device_id"])
    op.create_table(
        "perftune_best_config_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("best_config_id", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("spread", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("baseline_value", sa.Float(), nullable=True),
        sa.Column("speedup", sa.Float(), nullable=True),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("recorded_at", _ts(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.CheckConstraint(
            "reason IN ('replaced', 'not_better')", name="ck_perftune_best_config_history_reason"
        ),
        sa.ForeignKeyConstraint(
            ["best_config_id"],
            ["perftune_best_configs.id"],
            name="fk_perftune_best_config_history_best_config_id",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sweep_id"],
            ["perftune_sweeps.id"],
            name="fk_perftune_best_config_history_sweep_id",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_perftune_best_config_history"),
    )
    op.create_index(
        "ix_perftune_best_config_history_best_config_id",
        "perftune_best_config_history",
        ["best_config_id"],
    )


def downgrade() -> None:
    op.drop_index(
        "ix_perftune_best_config_history_best_config_id", table_name="perftune_best_config_history"
    )
    op.drop_table("perftune_best_config_history")
    op.drop_index("ix_perftune_best_configs_device_id", table_name="perftune_best_configs")
    op.drop_table("perftune_best_configs")
    op.drop_index("ix_perftune_sweeps_device_id", table_name="perftune_sweeps")
    op.drop_index("ix_perftune_sweeps_workload_id", table_name="perftune_sweeps")
    op.drop_index("ix_perftune_sweeps_study_name", table_name="perftune_sweeps")
    op.drop_table("perftune_sweeps")
    op.drop_table("perftune_workloads")
    op.drop_table("perftune_devices")
