"""intervals: the 95% confidence intervals of a best config's value and speedup

Four nullable columns on ``perftune_best_configs`` and ``perftune_best_config_history``; rows
stored before have none (their results were not measured in paired rounds).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 00:00:00

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("perftune_best_configs", "perftune_best_config_history")
_COLUMNS = ("value_low", "value_high", "speedup_low", "speedup_high")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            for name in _COLUMNS:
                batch.add_column(sa.Column(name, sa.Float(), nullable=True))


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            for name in _COLUMNS:
                batch.drop_column(name)
