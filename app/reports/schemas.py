from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas import Name, RequestModel

MAX_LINK_DAYS = 90  # the longest a link may stay valid
MAX_RANGE_DAYS = 366  # the longest span a report shows


class ReportLinkCreate(RequestModel):
    """What the link shows: a fixed range (`from`, optionally `to`), or, without `from`, the
    last `days` days up to the day it is opened."""

    date_from: date | None = Field(
        default=None, alias="from", description="First day of a fixed range"
    )
    date_to: date | None = Field(
        default=None, alias="to", description="Last day of a fixed range (default: today, UTC)"
    )
    days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RANGE_DAYS,
        description="A rolling range: the last `days` days when opened (default 30)",
    )
    expires_in_days: int | None = Field(
        default=None,
        ge=1,
        le=MAX_LINK_DAYS,
        description="How long the link works (default REPORT_LINK_DEFAULT_DAYS, 30; at most 90)",
    )
    label: Name | None = Field(default=None, description="Who or what the link is for")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one_kind_of_range(self) -> ReportLinkCreate:
        if self.days is not None and (self.date_from or self.date_to):
            raise ValueError("give either from/to (a fixed range) or days (a rolling one)")
        if self.date_to is not None and self.date_from is None:
            raise ValueError("a fixed range needs from")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"from ({self.date_from}) is after to ({self.date_to})")
        return self


class ReportLinkRead(BaseModel):
    id: uuid.UUID
    org_id: uuid.UUID
    label: str | None
    date_from: date | None = Field(serialization_alias="from")
    date_to: date | None = Field(serialization_alias="to")
    days: int | None = Field(description="Set for a rolling range")
    status: Literal["active", "expired", "revoked"]
    created_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    last_opened_at: datetime | None = Field(description="Within a minute")


class ReportLinkCreated(ReportLinkRead):
    url: str = Field(description="Opens the report without an API key; shown once")
