"""Who is calling: the operator's API token (admin) or a partner's API key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.scopes import ALL_SCOPES, Scope
from app.db.models import ApiKey
from app.errors import ForbiddenError, UnauthorizedError

API_KEY_PREFIX = "sk_"
MISSING_CREDENTIALS = "send 'Authorization: Bearer <token>'"
INVALID_CREDENTIALS = "invalid API token"
# last_used_at is a day-to-day signal; writing it on every request would cost a write each.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    """Admin when partner_id is None; otherwise confined to one partner's resources, and to
    what its key's scopes allow."""

    partner_id: uuid.UUID | None
    scopes: frozenset[str] = ALL_SCOPES
    key_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.partner_id is None

    @property
    def actor(self) -> str:
        return "admin" if self.partner_id is None else f"partner:{self.partner_id}"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError("this operation needs the operator's API token")

    def require_scope(self, scope: Scope) -> None:
        if scope not in self.scopes:
            has = ", ".join(sorted(self.scopes)) or "none"
            raise ForbiddenError(
                f"this API key has no '{scope}' scope (it has: {has})", code="insufficient_scope"
            )

    def can_access(self, partner_id: uuid.UUID) -> bool:
        return self.partner_id is None or self.partner_id == partner_id


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


async def authenticate(
    session: AsyncSession, authorization: str | None, api_token: SecretStr | None, now: datetime
) -> Principal:
    """The caller, or UnauthorizedError: no bearer token, an unknown one, or a key that was
    revoked or has expired by `now`. A key's use is recorded at most once a minute."""
    token = bearer_token(authorization)
    if token is None:
        raise UnauthorizedError(MISSING_CREDENTIALS)
    if api_token is not None and hmac.compare_digest(
        token.encode(), api_token.get_secret_value().encode()
    ):
        return Principal(partner_id=None)
    if not token.startswith(API_KEY_PREFIX):
        raise UnauthorizedError(INVALID_CREDENTIALS)
    # Looking up the digest, not the key, keeps the comparison independent of the secret.
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(token)))
    if key is None:
        raise UnauthorizedError(INVALID_CREDENTIALS)
    if key.revoked_at is not None:
        raise UnauthorizedError("this API key was revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise UnauthorizedError("this API key has expired")
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        await session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
        await session.commit()
    return Principal(partner_id=key.partner_id, scopes=frozenset(key.scopes), key_id=key.id)


def bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
