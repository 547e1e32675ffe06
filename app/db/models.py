"""The schema of DESIGN §3. Unique constraints here are the contract the pipeline relies on."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db.types import Money, UTCDateTime, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        Decimal: Money(),
        dict[str, Any]: JSON(),
    }


def table_of(model: type[Base]) -> Table:
    """The model's table, for Core statements of many rows: they skip the ORM's per-row work."""
    return Base.metadata.tables[model.__tablename__]


class BatchStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # never asked: its batch was cancelled first


class StepStatus(enum.StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as plain strings with a CHECK, so adding a member later needs no Postgres enum type.
    return Enum(cls, name=name, native_enum=False, length=16, values_callable=_values)


def _values(cls: type[enum.StrEnum]) -> list[str]:
    return [member.value for member in cls]


# Money is text on SQLite: the casts make these checks numeric on both dialects.
_BALANCE = "CAST(balance AS NUMERIC)"
_RESERVED = "CAST(reserved AS NUMERIC)"


class Partner(Base):
    __tablename__ = "partners"
    __table_args__ = (
        CheckConstraint(f"{_BALANCE} >= 0", name="balance_not_negative"),
        CheckConstraint(f"{_RESERVED} >= 0", name="reserved_not_negative"),
        CheckConstraint(f"{_BALANCE} - {_RESERVED} >= 0", name="available_not_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    balance: Mapped[Decimal]
    # Held for admitted batches' runs not yet charged: available = balance − reserved.
    reserved: Mapped[Decimal] = mapped_column(default=Decimal(0))
    price_per_run: Mapped[Decimal]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def available(self) -> Decimal:
        """What new batches are admitted against."""
        return self.balance - self.reserved


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    partner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # What the key may do: read, trigger, manage (app.apikeys.scopes maps routes to them).
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # Set when the key was rotated: the key that replaced it (this one expires after a grace).
    replaced_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    aliases: Mapped[list[str]] = mapped_column(JSON, default=list)
    domains: Mapped[list[str]] = mapped_column(JSON, default=list)
    competitors: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Asks of each (question, engine, country) cell per batch; with max_samples, a cell whose
    # answers disagree gets further asks, one at a time, up to max_samples.
    samples: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    max_samples: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OrgQuestion(Base):
    __tablename__ = "org_questions"
    __table_args__ = (UniqueConstraint("org_id", "text"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    text: Mapped[str] = mapped_column(String(1000))
    position: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class OrgEngine(Base):
    __tablename__ = "org_engines"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True
    )
    engine_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class OrgLocation(Base):
    __tablename__ = "org_locations"

    org_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("orgs.id", ondelete="CASCADE"), primary_key=True
    )
    country: Mapped[str] = mapped_column(String(2), primary_key=True)


class OrgNameVariation(Base):
    __tablename__ = "org_name_variations"
    __table_args__ = (UniqueConstraint("org_id", "variation"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    variation: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(64))
    names_fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvaluationBatch(Base):
    __tablename__ = "evaluation_batches"
    __table_args__ = (
        UniqueConstraint("org_id", "batch_date"),
        Index("ix_evaluation_batches_status_heartbeat", "status", "heartbeat_at"),
        CheckConstraint("CAST(reserved_amount AS NUMERIC) >= 0", name="reserved_not_negative"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id"))
    batch_date: Mapped[date] = mapped_column(Date)
    status: Mapped[BatchStatus] = mapped_column(
        _enum(BatchStatus, "batch_status"), default=BatchStatus.PENDING
    )
    total_runs: Mapped[int] = mapped_column(Integer, default=0)  # runs created so far
    # The matrix as admitted: cells, asks per cell, and the most runs adaptive asks may reach
    # (what the reservation covers).
    cells: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    samples: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    max_samples: Mapped[int | None] = mapped_column(Integer)
    max_runs: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    # Computed once when the batch completes (and again on re-scoring): what results serve.
    summary: Mapped[dict[str, Any] | None]
    # The summary's methodology on its own: trends and reports pool it over many batches.
    methodology: Mapped[dict[str, Any] | None]
    summarised_at: Mapped[datetime | None]
    # Kept when the batch ends (`runs.store_totals`), so that reading an ended batch costs the
    # same whatever its size; None while it is live.
    completed_runs: Mapped[int | None] = mapped_column(Integer)
    failed_runs: Mapped[int | None] = mapped_column(Integer)
    cancelled_runs: Mapped[int | None] = mapped_column(Integer)
    run_cost: Mapped[Decimal | None]
    simulated: Mapped[bool | None] = mapped_column(Boolean)
    charged_runs: Mapped[int | None] = mapped_column(Integer)
    charged_amount: Mapped[Decimal | None]
    triggered_by: Mapped[str] = mapped_column(String(100), default="api")
    user_id: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    # The partner's price when the batch was admitted: what its reservation and charges use.
    price_per_run: Mapped[Decimal]
    # What this batch still holds of its partner's `reserved`.
    reserved_amount: Mapped[Decimal] = mapped_column(default=Decimal(0))
    job_attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker started it
    # The job's own failures since it was admitted: restarts, drains and redeliveries are not.
    job_failures: Mapped[int] = mapped_column(Integer, default=0)
    job_redrives: Mapped[int] = mapped_column(Integer, default=0)  # copies sent back from the DLQ
    cancel_requested_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    last_enqueued_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]


class BatchStep(Base):
    __tablename__ = "batch_steps"

    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("evaluation_batches.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[StepStatus] = mapped_column(_enum(StepStatus, "step_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class QuestionRun(Base):
    __tablename__ = "question_runs"
    __table_args__ = (
        UniqueConstraint("batch_id", "question_id", "engine_id", "location", "sample"),
        Index("ix_question_runs_batch_status", "batch_id", "status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("evaluation_batches.id", ondelete="CASCADE")
    )
    question_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("org_questions.id"))
    question_text: Mapped[str] = mapped_column(String(1000))
    engine_id: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(String(2))
    sample: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))  # 1-based
    status: Mapped[RunStatus] = mapped_column(
        _enum(RunStatus, "run_status"), default=RunStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None]
    answer_text: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(100))
    raw_response: Mapped[dict[str, Any] | None]
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[Decimal | None]
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    simulated: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the answer was: where it came from (api, scraped_ui, serp), whether the engine
    # searched the web (null: the provider does not say), the queries it searched, and whether
    # the surface was there at all (a results page without an AI Overview).
    surface: Mapped[str | None] = mapped_column(String(16))
    searched: Mapped[bool | None] = mapped_column(Boolean)
    search_queries: Mapped[list[str] | None] = mapped_column(JSON)
    surface_present: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # How its facts were found: the LLM analysis ran on it, and the extraction rules' version.
    analysed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    extraction_version: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    charged_at: Mapped[datetime | None]


class RunMention(Base):
    __tablename__ = "run_mentions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("question_runs.id", ondelete="CASCADE"), unique=True
    )
    mentioned: Mapped[bool] = mapped_column(Boolean)
    mention_count: Mapped[int] = mapped_column(Integer)
    first_position: Mapped[int | None] = mapped_column(Integer)
    list_position: Mapped[int | None] = mapped_column(Integer)
    sentiment: Mapped[str | None] = mapped_column(String(16))
    snippet: Mapped[str | None] = mapped_column(Text)
    org_cited: Mapped[bool] = mapped_column(Boolean)
    # Named only to say nothing is known about it: such an answer does not count as visibility.
    negated: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class RunCompetitor(Base):
    __tablename__ = "run_competitors"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("question_runs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    mention_count: Mapped[int] = mapped_column(Integer)
    list_position: Mapped[int | None] = mapped_column(Integer)
    first_position: Mapped[int | None] = mapped_column(Integer)
    # "tracked": a configured competitor matched in the answer; "analysis": named by the analyst.
    source: Mapped[str] = mapped_column(String(16), default="tracked", server_default="tracked")


class RunCitation(Base):
    __tablename__ = "run_citations"
    __table_args__ = (UniqueConstraint("run_id", "rank"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("question_runs.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(String(255))
    title: Mapped[str | None] = mapped_column(Text)
    rank: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    is_org_domain: Mapped[bool] = mapped_column(Boolean)


class UsageLedgerEntry(Base):
    __tablename__ = "usage_ledger"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    question_run_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("question_runs.id"), unique=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("evaluation_batches.id"), index=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id"), index=True)
    amount: Mapped[Decimal]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_resource", "resource_type", "resource_id"),
        Index("ix_audit_events_occurred_at_id", "occurred_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # Events from the audit queue carry their producer's id: stored once however often sent.
    event_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    source: Mapped[str] = mapped_column(String(100), default="senso", server_default="senso")
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100))
    resource_type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CellMetric(Base):
    """One metric of one (question, engine, country) cell of a completed batch: the mean of its
    completed samples. Trends and change verdicts are computed from these rows."""

    __tablename__ = "cell_metrics"
    __table_args__ = (Index("ix_cell_metrics_org_metric_date", "org_id", "metric", "batch_date"),)

    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("evaluation_batches.id", ondelete="CASCADE"), primary_key=True
    )
    question_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    engine_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    location: Mapped[str] = mapped_column(String(2), primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    org_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    batch_date: Mapped[date] = mapped_column(Date)
    value: Mapped[float] = mapped_column(Float)
    answers: Mapped[int] = mapped_column(Integer)  # samples of the cell that gave a value


class RescoreStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class RescoreRequest(Base):
    __tablename__ = "rescore_requests"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"), index=True)
    date_from: Mapped[date] = mapped_column(Date)
    date_to: Mapped[date] = mapped_column(Date)
    status: Mapped[RescoreStatus] = mapped_column(
        _enum(RescoreStatus, "rescore_status"), default=RescoreStatus.PENDING
    )
    requested_by: Mapped[str] = mapped_column(String(200))
    batches: Mapped[int] = mapped_column(Integer, default=0)
    runs: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    last_enqueued_at: Mapped[datetime | None]


class WebhookEndpoint(Base):
    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    partner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(String(500))
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Standard Webhooks signing secret (`whsec_` + base64); shown once, when created.
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set when a delivery used up its retries; cleared by the next successful delivery.
    failing_since: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class WebhookEvent(Base):
    __tablename__ = "webhook_events"

    # Stable: derived from what produced the event, so producing it again changes nothing.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("partners.id", ondelete="CASCADE"), index=True
    )
    type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # retries used up


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[str] = mapped_column(
        ForeignKey("webhook_events.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_enqueued_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    attempted_at: Mapped[datetime]
    succeeded: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)


class ReportLink(Base):
    """A shareable report: its token (signed, never stored) names this row, so a link can be
    listed and revoked. A link without `date_from` follows the last `days` days up to the day
    it is opened; with one, it shows that fixed range."""

    __tablename__ = "report_links"
    __table_args__ = (Index("ix_report_links_org_created", "org_id", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("orgs.id", ondelete="CASCADE"))
    partner_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("partners.id", ondelete="CASCADE"))
    date_from: Mapped[date | None] = mapped_column(Date)
    date_to: Mapped[date | None] = mapped_column(Date)
    days: Mapped[int | None] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_opened_at: Mapped[datetime | None]
