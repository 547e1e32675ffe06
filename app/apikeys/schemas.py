from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field

from app.apikeys.scopes import ALL_SCOPES, Scope
from app.schemas import Name, RequestModel

# The longest grace a rotated key may keep working for.
MAX_GRACE_SECONDS = 30 * 86_400


def _unique_scopes(values: list[Scope]) -> list[Scope]:
    return sorted(set(values))


Scopes = Annotated[
    list[Scope],
    Field(min_length=1, max_length=len(ALL_SCOPES)),
    AfterValidator(_unique_scopes),
]


class ApiKeyCreate(RequestModel):
    name: Name = "default"
    scopes: Scopes = Field(
        default_factory=lambda: sorted(ALL_SCOPES),
        description="read: every GET; trigger: start evaluations and re-scores; manage: "
        "every other change. A partner's key can only give a new key scopes it has itself",
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the key stops working (in the future); never if null"
    )


class ApiKeyRotate(RequestModel):
    grace_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old key keeps working; API_KEY_ROTATION_GRACE_SECONDS if null",
    )


class ApiKeyRead(BaseModel):
    id: uuid.UUID
    partner_id: uuid.UUID
    name: str
    prefix: str = Field(description="The key's first characters, to recognise it")
    scopes: list[Scope]
    status: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Within a minute")
    revoked_at: datetime | None
    replaced_by: uuid.UUID | None = Field(description="The key that replaced it on rotation")


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="Shown once; only its hash is stored")
