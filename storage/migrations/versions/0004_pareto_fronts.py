"""pareto fronts: a multi-objective sweep's confirmed front per key

One table, ``perftune_pareto_fronts``: the key (workload, framework, device, objectives), the
objectives' names, directions and units, and the front's points as JSON.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 00:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "perftune_pareto_fronts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("framework", sa.String(length=64), nullable=False),
        sa.Column("objective", sa.String(length=255), nullable=False),
        sa.Column("names", sa.JSON(), nullable=False),
        sa.Column("directions", sa.JSON(), nullable=False),
        sa.Column("units", sa.JSON(), nullable=False),
        sa.Column("points", sa.JSON(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(length=64), nullable=True),
        sa.Column("sweep_id", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["perftune_devices.id"],
                                name="fk_perftune_pareto_fronts_device_id"),
        sa.ForeignKeyConstraint(["sweep_id"], ["perftune_sweeps.id"], ondelete="SET NULL",
                                name="fk_perftune_pareto_fronts_sweep_id"),
        sa.ForeignKeyConstraint(["workload_id"], ["perftune_workloads.id"],
                                name="fk_perftune_pareto_fronts_workload_id"),
        sa.PrimaryKeyConstraint("id", name="pk_perftune_pareto_fronts"),
        sa.UniqueConstraint("workload_id", "framework", "device_id", "objective",
                            name="uq_perftune_pareto_fronts_key"),
    )  # fmt: skip
    op.create_index("ix_perftune_pareto_fronts_device_id", "perftune_pareto_fronts", ["device_id"])


def downgrade() -> None:
    op.drop_index("ix_perftune_pareto_fronts_device_id", table_name="perftune_pareto_fronts")
    op.drop_table("perftune_pareto_fronts")
