from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AuditEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    event_id: str | None = Field(description="The producer's id, for events of the audit queue")
    source: str = Field(description="senso, or the service that sent the event")
    occurred_at: datetime
    actor: str
    action: str
    resource_type: str
    resource_id: str
    details: dict[str, Any]


class AuditEventPage(BaseModel):
    items: list[AuditEventRead]
    limit: int
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page"
    )
