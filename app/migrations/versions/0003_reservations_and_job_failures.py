"""reservations and the job's own failure count

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 22:00:00.000000

Partners get `reserved` and CHECK constraints keeping the balance and what is available
(balance − reserved) from going below zero. Batches get the price they were admitted at, what
they still reserve, the job's own failure and dead-letter redrive counts, and a cancel request.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTNER_CHECKS = {
    "balance_not_negative": "CAST(balance AS NUMERIC) >= 0",
    "reserved_not_negative": "CAST(reserved AS NUMERIC) >= 0",
    "available_not_negative": "CAST(balance AS NUMERIC) - CAST(reserved AS NUMERIC) >= 0",
}
_BATCH_CHECK = ("reserved_not_negative", "CAST(reserved_amount AS NUMERIC) >= 0")


def _money(name: str, **options: object) -> sa.Column[object]:
    return sa.Column(name, app.db.types.Money(precision=18, scale=6), **options)  # type: ignore[arg-type]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("partners") as batch:
        batch.add_column(_money("reserved", server_default=sa.text("0"), nullable=False))
    for name, condition in _PARTNER_CHECKS.items():
        _add_check("partners", name, condition, postgres)

    with op.batch_alter_table("evaluation_batches") as batch:
        batch.add_column(_money("price_per_run", nullable=True))
        batch.add_column(_money("reserved_amount", server_default=sa.text("0"), nullable=False))
        for counter in ("job_failures", "job_redrives"):
            batch.add_column(
                sa.Column(counter, sa.Integer(), server_default=sa.text("0"), nullable=False)
            )
        batch.add_column(
            sa.Column("cancel_requested_at", app.db.types.UTCDateTime(timezone=True), nullable=True)
        )
    # Batches admitted before reservations existed were priced at their partner's price.
    op.execute(
        "UPDATE evaluation_batches SET price_per_run = (SELECT partners.price_per_run "
        "FROM orgs JOIN partners ON partners.id = orgs.partner_id "
        "WHERE orgs.id = evaluation_batches.org_id)"
    )
    with op.batch_alter_table("evaluation_batches") as batch:
        batch.alter_column(
            "price_per_run",
            existing_type=app.db.types.Money(precision=18, scale=6),
            nullable=False,
        )
    _add_check("evaluation_batches", *_BATCH_CHECK, postgres)


def _add_check(table: str, name: str, condition: str, postgres: bool) -> None:
    full_name = f"ck_{table}_{name}"
    if postgres:
        # NOT VALID: a balance the old code let go negative does not block the upgrade; every
        # write from now on is checked, so it can only be topped up, never spent further.
        op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {full_name} CHECK ({condition}) NOT VALID")
        return
    with op.batch_alter_table(table) as batch:
        batch.create_check_constraint(op.f(full_name), sa.text(condition))


def downgrade() -> None:
    with op.batch_alter_table("evaluation_batches") as batch:
        batch.drop_constraint(op.f(f"ck_evaluation_batches_{_BATCH_CHECK[0]}"), type_="check")
        for column in (
            "cancel_requested_at",
            "job_redrives",
            "job_failures",
            "reserved_amount",
            "price_per_run",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("partners") as batch:
        for name in _PARTNER_CHECKS:
            batch.drop_constraint(op.f(f"ck_partners_{name}"), type_="check")
        batch.drop_column("reserved")
