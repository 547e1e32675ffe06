"""analysis: negated mentions, and where each competitor came from

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 03:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Server defaults fill the rows already there: no stored mention was negated, and every
    # stored competitor was a tracked one matched in the answer.
    with op.batch_alter_table("run_mentions") as batch:
        batch.add_column(
            sa.Column("negated", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    with op.batch_alter_table("run_competitors") as batch:
        batch.add_column(
            sa.Column("source", sa.String(length=16), server_default="tracked", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("run_competitors") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("run_mentions") as batch:
        batch.drop_column("negated")
