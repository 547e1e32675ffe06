"""The queue contract: a typed, versioned envelope; ids only, never secrets."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from app.db.types import utcnow

SCHEMA_VERSION: Final = 1


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = SCHEMA_VERSION
    message_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    sent_at: datetime = Field(default_factory=utcnow)


class EvaluateOrg(_Message):
    """Run (or resume) one org's evaluation batch."""

    type: Literal["evaluate_org"] = "evaluate_org"
    org_id: uuid.UUID
    batch_id: uuid.UUID
    reason: str = "api"

    def log_ids(self) -> dict[str, object]:
        return {"org_id": self.org_id, "batch_id": self.batch_id}


class RescoreOrg(_Message):
    """Re-score the stored answers of one org's batches in a date range."""

    type: Literal["rescore_org"] = "rescore_org"
    org_id: uuid.UUID
    rescore_id: uuid.UUID

    def log_ids(self) -> dict[str, object]:
        return {"org_id": self.org_id, "rescore_id": self.rescore_id}


class DeliverWebhook(_Message):
    """Make one attempt of a webhook delivery (or, before it is due, wait on)."""

    type: Literal["deliver_webhook"] = "deliver_webhook"
    delivery_id: uuid.UUID
    # The attempt this message is for: once that attempt is made, copies of it are stale.
    attempt: int = Field(ge=1)

    def log_ids(self) -> dict[str, object]:
        return {"delivery_id": self.delivery_id, "attempt": self.attempt}


# New job types join this union and the worker's handler registry.
Message = Annotated[EvaluateOrg | RescoreOrg | DeliverWebhook, Field(discriminator="type")]
MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


def parse_message(body: str) -> Message:
    """Raises pydantic.ValidationError for anything that is not a valid message."""
    return MESSAGE_ADAPTER.validate_json(body)
