"""scoped, expiring API keys; audit events from other services

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 12:00:00.000000

API keys get scopes (every existing key keeps full access: read, trigger, manage), an expiry,
when they were last used and the key that replaced them on rotation. Audit events get the
producer's event id (unique: the audit queue is at-least-once) and their source, and an index
for reading the trail newest first.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ALL_SCOPES = ["read", "trigger", "manage"]


def _time(name: str) -> sa.Column[object]:
    return sa.Column(name, app.db.types.UTCDateTime(timezone=True), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scopes", sa.JSON(), nullable=True))
        batch.add_column(_time("expires_at"))
        batch.add_column(_time("last_used_at"))
        batch.add_column(sa.Column("replaced_by", sa.Uuid(), nullable=True))
        batch.create_index(op.f("ix_api_keys_partner_id"), ["partner_id"], unique=False)
    api_keys = sa.table("api_keys", sa.column("scopes", sa.JSON()))
    op.execute(api_keys.update().values(scopes=ALL_SCOPES))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("scopes", existing_type=sa.JSON(), nullable=False)

    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("event_id", sa.String(length=100), nullable=True))
        batch.add_column(
            sa.Column("source", sa.String(length=100), server_default="senso", nullable=False)
        )
        batch.create_unique_constraint(op.f("uq_audit_events_event_id"), ["event_id"])
        batch.create_index("ix_audit_events_occurred_at_id", ["occurred_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_index("ix_audit_events_occurred_at_id")
        batch.drop_constraint(op.f("uq_audit_events_event_id"), type_="unique")
        batch.drop_column("source")
        batch.drop_column("event_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index(op.f("ix_api_keys_partner_id"))
        for column in ("replaced_by", "last_used_at", "expires_at", "scopes"):
            batch.drop_column(column)
