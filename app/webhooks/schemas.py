from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.db.models import DeliveryStatus
from app.webhooks.urls import MAX_URL_LENGTH

EventType = Literal["batch.completed", "batch.failed", "metric.changed"]


def _unique(values: list[EventType]) -> list[EventType]:
    return list(dict.fromkeys(values))


EventTypes = Annotated[
    list[EventType],
    Field(min_length=1, max_length=3, description="The event types sent to the endpoint"),
    AfterValidator(_unique),
]
WebhookUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_URL_LENGTH,
        description="https; its host must resolve to public addresses only",
    ),
]
Description = Annotated[str, Field(max_length=500)]


class WebhookCreate(BaseModel):
    url: WebhookUrl
    events: EventTypes
    description: Description | None = None


class WebhookUpdate(BaseModel):
    url: WebhookUrl | None = None
    events: EventTypes | None = None
    description: Description | None = Field(default=None, description="null clears it")
    enabled: bool | None = Field(
        default=None,
        description="false pauses deliveries (nothing is sent, pending ones wait); true resumes",
    )


class WebhookRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    partner_id: uuid.UUID
    url: str
    description: str | None
    events: list[str]
    enabled: bool
    failing_since: datetime | None = Field(
        description="Set when a delivery used up its retries; cleared by the next success"
    )
    created_at: datetime
    updated_at: datetime


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="The Standard Webhooks signing secret (whsec_…): shown once, here"
    )


class AttemptRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    attempted_at: datetime
    succeeded: bool
    status_code: int | None = Field(description="The endpoint's HTTP status; null: no answer")
    error: str | None
    duration_ms: int


class DeliveryRead(BaseModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str = Field(description="Sent as webhook-id: the same on every attempt")
    event_type: str
    status: DeliveryStatus
    next_attempt_at: datetime | None = Field(description="When the next attempt is due")
    created_at: datetime
    completed_at: datetime | None
    attempts: list[AttemptRead] = Field(description="Every attempt made, oldest first")
