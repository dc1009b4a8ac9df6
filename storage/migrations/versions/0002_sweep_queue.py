"""sweep queue: one perftune_sweeps row covers a sweep's whole life

States ``queued`` and ``cancelled``; a queued sweep has no study, workload, device or start
time yet; the submitted request, who claimed it, its error, a cancel flag and live progress.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 00:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATES = "state IN ('running', 'completed', 'failed', 'interrupted')"
_NEW_STATES = "state IN ('queued', 'running', 'completed', 'failed', 'interrupted', 'cancelled')"


def _ts() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    # Batch mode: SQLite cannot alter columns or constraints in place (the table is copied).
    # The CHECK is named through the naming convention, as in 0001 (so the name in the
    # database is ck_perftune_sweeps_ck_perftune_sweeps_state).
    with op.batch_alter_table("perftune_sweeps") as batch:
        batch.drop_constraint("ck_perftune_sweeps_state", type_="check")
        batch.create_check_constraint("ck_perftune_sweeps_state", _NEW_STATES)
        for name in ("study_name", "workload_id", "device_id"):
            kind = sa.String(length=255) if name == "study_name" else sa.Integer()
            batch.alter_column(name, existing_type=kind, nullable=True)
        batch.alter_column("started_at", existing_type=_ts(), nullable=True)
        batch.add_column(sa.Column("request", sa.JSON(none_as_null=True), nullable=True))
        batch.add_column(sa.Column("submitted_at", _ts(), nullable=True))
        batch.add_column(sa.Column("worker", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("error", sa.String(length=1000), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))  # fmt: skip
        batch.add_column(sa.Column("trials_done", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("best_value", sa.Float(), nullable=True))
        batch.create_index("ix_perftune_sweeps_state", ["state"])


def downgrade() -> None:
    # Rows 0001 cannot hold: sweeps that never started; a cancelled sweep reads as interrupted.
    op.execute("DELETE FROM perftune_sweeps WHERE workload_id IS NULL OR device_id IS NULL "
               "OR started_at IS NULL OR study_name IS NULL")  # fmt: skip
    op.execute("UPDATE perftune_sweeps SET state = 'interrupted' WHERE state = 'cancelled'")
    with op.batch_alter_table("perftune_sweeps") as batch:
        batch.drop_index("ix_perftune_sweeps_state")
        for name in ("best_value", "trials_done", "cancel_requested", "error", "worker",
                     "submitted_at", "request"):  # fmt: skip
            batch.drop_column(name)
        batch.alter_column("started_at", existing_type=_ts(), nullable=False)
        for name in ("study_name", "workload_id", "device_id"):
            kind = sa.String(length=255) if name == "study_name" else sa.Integer()
            batch.alter_column(name, existing_type=kind, nullable=False)
        batch.drop_constraint("ck_perftune_sweeps_state", type_="check")
        batch.create_check_constraint("ck_perftune_sweeps_state", _OLD_STATES)
