"""Who is calling: the operator's API token (admin) or a partner's API key."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import ApiKey
from app.errors import ForbiddenError, UnauthorizedError

API_KEY_PREFIX = "sk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Admin when partner_id is None; otherwise confined to one partner's resources."""

    partner_id: uuid.UUID | None

    @property
    def is_admin(self) -> bool:
        return self.partner_id is None

    @property
    def actor(self) -> str:
        return "admin" if self.partner_id is None else f"partner:{self.partner_id}"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ForbiddenError("this operation needs the operator's API token")

    def can_access(self, partner_id: uuid.UUID) -> bool:
        return self.partner_id is None or self.partner_id == partner_id


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


async def authenticate(
    session: AsyncSession, authorization: str | None, api_token: SecretStr | None
) -> Principal:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthorizedError("send 'Authorization: Bearer <token>'")
    token = token.strip()
    if api_token is not None and hmac.compare_digest(
        token.encode(), api_token.get_secret_value().encode()
    ):
        return Principal(partner_id=None)
    if token.startswith(API_KEY_PREFIX):
        # Looking up the digest, not the key, keeps the comparison independent of the secret.
        partner_id = await session.scalar(
            select(ApiKey.partner_id).where(
                ApiKey.key_hash == hash_api_key(token), ApiKey.revoked_at.is_(None)
            )
        )
        if partner_id is not None:
            return Principal(partner_id=partner_id)
    raise UnauthorizedError("invalid API token")
