"""Audit events other services write to the trail through the audit SQS queue.

A message is an event as JSON, or an SNS notification wrapping one (the envelope an SNS → SQS
subscription delivers without raw message delivery). Events are validated, and stored once by
their producer's `event_id`: the queue delivers at least once, and a producer may send twice.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from app.context import AppContext
from app.db.models import AuditEvent
from app.db.upsert import insert_ignoring_conflicts, rows_affected

_ID = r"^[A-Za-z0-9._:/@\-]+$"


class AuditEventMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["audit_event"] = "audit_event"
    version: Literal[1] = 1
    event_id: str = Field(min_length=1, max_length=100, pattern=_ID)
    occurred_at: AwareDatetime
    source: str = Field(min_length=1, max_length=100, pattern=_ID)
    actor: str = Field(min_length=1, max_length=200)
    action: str = Field(min_length=1, max_length=100, pattern=_ID)
    resource_type: str = Field(min_length=1, max_length=64, pattern=_ID)
    resource_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    details: dict[str, Any] = Field(default_factory=dict)


class _SnsNotification(BaseModel):
    model_config = ConfigDict(extra="allow")

    Type: Literal["Notification"]
    MessageId: str
    Message: str


class InvalidAuditMessageError(ValueError):
    """Not an audit event: left on the queue for its dead-letter queue."""


def parse_audit_message(body: str) -> AuditEventMessage:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise InvalidAuditMessageError(f"not JSON: {exc}") from None
    try:
        if isinstance(document, dict) and "Type" in document and "TopicArn" in document:
            document = json.loads(_SnsNotification.model_validate(document).Message)
        return AuditEventMessage.model_validate(document)
    except ValueError as exc:  # ValidationError is one
        count = exc.error_count() if isinstance(exc, ValidationError) else 1
        raise InvalidAuditMessageError(f"{count} validation error(s)") from None


async def store_audit_event(context: AppContext, event: AuditEventMessage) -> bool:
    """True when stored, False when an event with its id is in the trail already."""
    async with context.sessions() as session:
        result = await session.execute(
            insert_ignoring_conflicts(session, AuditEvent, ["event_id"]).values(
                id=uuid.uuid4(),
                event_id=event.event_id,
                source=event.source,
                occurred_at=event.occurred_at,
                actor=event.actor,
                action=event.action,
                resource_type=event.resource_type,
                resource_id=event.resource_id,
                details=event.details,
            )
        )
        await session.commit()
    return rows_affected(result) > 0
