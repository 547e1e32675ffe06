"""a batch's totals kept on its row when it ends

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:30:00.000000

Reading an ended batch (GET /batches/{id}) summed its runs and its ledger rows every time, a
cost that grew with the batch; its counts, cost and charges are now kept on the batch when it
ends. Batches that ended before are read as they were (their columns stay empty).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COUNTS = ("completed_runs", "failed_runs", "cancelled_runs", "charged_runs")
_MONEY = ("run_cost", "charged_amount")


def _money(name: str) -> sa.Column[object]:
    return sa.Column(name, app.db.types.Money(precision=18, scale=6), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("evaluation_batches") as batch:
        for name in _COUNTS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        for name in _MONEY:
            batch.add_column(_money(name))
        batch.add_column(sa.Column("simulated", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("evaluation_batches") as batch:
        for name in ("simulated", *_MONEY, *_COUNTS):
            batch.drop_column(name)
