"""report links: shareable, signed, expiring, revocable; a batch's methodology on its own

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 22:00:00.000000

A report link's token is signed with REPORT_SIGNING_KEY and names a row here, so links can be
listed and revoked; the token itself is never stored. A batch's methodology is kept beside its
summary (copied from the summaries already stored): trends pool it over hundreds of batches,
and taking it out of each whole summary cost more than the rest of the trend.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, app.db.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "report_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("date_from", sa.Date(), nullable=True),
        sa.Column("date_to", sa.Date(), nullable=True),
        sa.Column("days", sa.Integer(), nullable=True),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        _time("created_at", nullable=False),
        _time("expires_at", nullable=False),
        _time("revoked_at"),
        _time("last_opened_at"),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_report_links_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_report_links_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_links")),
    )
    op.create_index("ix_report_links_org_created", "report_links", ["org_id", "created_at"])
    with op.batch_alter_table("evaluation_batches") as batch:
        batch.add_column(sa.Column("methodology", sa.JSON(), nullable=True))
    methodology = (
        "json_extract(summary, '$.methodology')"
        if op.get_bind().dialect.name == "sqlite"
        else "summary -> 'methodology'"
    )
    op.execute(
        f"UPDATE evaluation_batches SET methodology = {methodology} "  # noqa: S608 - constants
        "WHERE summary IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("evaluation_batches") as batch:
        batch.drop_column("methodology")
    op.drop_index("ix_report_links_org_created", table_name="report_links")
    op.drop_table("report_links")
