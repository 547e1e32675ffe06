"""samples, stored summaries and cell metrics, re-scoring, webhooks, what each answer searched

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 09:00:00.000000

Orgs and batches get `samples` / `max_samples`; a run is unique on its cell and sample index.
Batches keep their cells, the most runs adaptive asks may reach, and the summary computed when
they completed; `cell_metrics` holds each cell's metrics for trends. Runs record whether the LLM
analysis ran, the extraction version, and what the engine searched. Re-score requests and the
webhook endpoints, events, deliveries and attempts get their tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db.types

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, app.db.types.UTCDateTime(timezone=True), nullable=nullable)


def _status(name: str, values: Sequence[str], constraint: str) -> sa.Column[object]:
    return sa.Column(
        name,
        sa.Enum(*values, name=constraint, native_enum=False, length=16, create_constraint=True),
        nullable=False,
    )


def upgrade() -> None:
    one = sa.text("1")
    with op.batch_alter_table("orgs") as batch:
        batch.add_column(sa.Column("samples", sa.Integer(), server_default=one, nullable=False))
        batch.add_column(sa.Column("max_samples", sa.Integer(), nullable=True))

    with op.batch_alter_table("evaluation_batches") as batch:
        zero = sa.text("0")
        batch.add_column(sa.Column("cells", sa.Integer(), server_default=zero, nullable=False))
        batch.add_column(sa.Column("samples", sa.Integer(), server_default=one, nullable=False))
        batch.add_column(sa.Column("max_samples", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("max_runs", sa.Integer(), server_default=zero, nullable=False))
        batch.add_column(sa.Column("summary", sa.JSON(), nullable=True))
        batch.add_column(_time("summarised_at"))
    # Batches from before samples asked each cell once.
    op.execute("UPDATE evaluation_batches SET cells = total_runs, max_runs = total_runs")

    with op.batch_alter_table("question_runs") as batch:
        batch.add_column(sa.Column("sample", sa.Integer(), server_default=one, nullable=False))
        batch.add_column(sa.Column("surface", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("searched", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("search_queries", sa.JSON(), nullable=True))
        batch.add_column(
            sa.Column("surface_present", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch.add_column(
            sa.Column("analysed", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("extraction_version", sa.Integer(), nullable=True))
        batch.drop_constraint(
            "uq_question_runs_batch_id_question_id_engine_id_location", type_="unique"
        )
        batch.create_unique_constraint(
            "uq_question_runs_batch_id_question_id_engine_id_location_sample",
            ["batch_id", "question_id", "engine_id", "location", "sample"],
        )

    op.create_table(
        "cell_metrics",
        sa.Column("batch_id", sa.Uuid(), nullable=False),
        sa.Column("question_id", sa.Uuid(), nullable=False),
        sa.Column("engine_id", sa.String(length=64), nullable=False),
        sa.Column("location", sa.String(length=2), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("batch_date", sa.Date(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("answers", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["evaluation_batches.id"],
            name=op.f("fk_cell_metrics_batch_id_evaluation_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "batch_id",
            "question_id",
            "engine_id",
            "location",
            "metric",
            name=op.f("pk_cell_metrics"),
        ),
    )
    op.create_index(
        "ix_cell_metrics_org_metric_date", "cell_metrics", ["org_id", "metric", "batch_date"]
    )

    op.create_table(
        "rescore_requests",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("org_id", sa.Uuid(), nullable=False),
        sa.Column("date_from", sa.Date(), nullable=False),
        sa.Column("date_to", sa.Date(), nullable=False),
        _status("status", ["pending", "running", "completed", "failed"], "rescore_status"),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _time("created_at", nullable=False),
        _time("started_at"),
        _time("completed_at"),
        _time("last_enqueued_at"),
        sa.ForeignKeyConstraint(
            ["org_id"],
            ["orgs.id"],
            name=op.f("fk_rescore_requests_org_id_orgs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rescore_requests")),
    )
    op.create_index(
        op.f("ix_rescore_requests_org_id"), "rescore_requests", ["org_id"], unique=False
    )

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.String(length=500), nullable=True),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _time("failing_since"),
        _time("created_at", nullable=False),
        _time("updated_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_webhook_endpoints_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index(
        op.f("ix_webhook_endpoints_partner_id"), "webhook_endpoints", ["partner_id"], unique=False
    )

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("partner_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        _time("created_at", nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
            name=op.f("fk_webhook_events_partner_id_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_events")),
    )
    op.create_index(
        op.f("ix_webhook_events_partner_id"), "webhook_events", ["partner_id"], unique=False
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        _status("status", ["pending", "succeeded", "failed"], "delivery_status"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _time("next_attempt_at"),
        _time("last_enqueued_at"),
        _time("created_at", nullable=False),
        _time("completed_at"),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["webhook_endpoints.id"],
            name=op.f("fk_webhook_deliveries_endpoint_id_webhook_endpoints"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["webhook_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_webhook_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_endpoint_id"),
        "webhook_deliveries",
        ["endpoint_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_webhook_deliveries_event_id"), "webhook_deliveries", ["event_id"], unique=False
    )
    op.create_index(
        "ix_webhook_deliveries_status_next",
        "webhook_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )

    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        _time("attempted_at", nullable=False),
        sa.Column("succeeded", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        sa.UniqueConstraint(
            "delivery_id", "attempt", name=op.f("uq_webhook_attempts_delivery_id_attempt")
        ),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_index("ix_webhook_deliveries_status_next", table_name="webhook_deliveries")
    op.drop_index(op.f("ix_webhook_deliveries_event_id"), table_name="webhook_deliveries")
    op.drop_index(op.f("ix_webhook_deliveries_endpoint_id"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index(op.f("ix_webhook_events_partner_id"), table_name="webhook_events")
    op.drop_table("webhook_events")
    op.drop_index(op.f("ix_webhook_endpoints_partner_id"), table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
    op.drop_index(op.f("ix_rescore_requests_org_id"), table_name="rescore_requests")
    op.drop_table("rescore_requests")
    op.drop_index("ix_cell_metrics_org_metric_date", table_name="cell_metrics")
    op.drop_table("cell_metrics")
    with op.batch_alter_table("question_runs") as batch:
        batch.drop_constraint(
            "uq_question_runs_batch_id_question_id_engine_id_location_sample", type_="unique"
        )
        batch.create_unique_constraint(
            "uq_question_runs_batch_id_question_id_engine_id_location",
            ["batch_id", "question_id", "engine_id", "location"],
        )
        for column in (
            "extraction_version",
            "analysed",
            "surface_present",
            "search_queries",
            "searched",
            "surface",
            "sample",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("evaluation_batches") as batch:
        for column in ("summarised_at", "summary", "max_runs", "max_samples", "samples", "cells"):
            batch.drop_column(column)
    with op.batch_alter_table("orgs") as batch:
        batch.drop_column("max_samples")
        batch.drop_column("samples")
