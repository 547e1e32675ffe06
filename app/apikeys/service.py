"""A partner's API keys: listed (never their secret), created with scopes and an expiry,
revoked, and rotated (a new secret; the old one keeps working for a grace period)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.apikeys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, ApiKeyRotate
from app.apikeys.scopes import Scope
from app.audit import record_audit
from app.auth import Principal, hash_api_key, new_api_key
from app.db.models import ApiKey
from app.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from app.pagination import Page, PageParams, paginate
from app.partners.service import get_partner

PREFIX_LENGTH = 10


def key_read(key: ApiKey, now: datetime) -> ApiKeyRead:
    return ApiKeyRead(
        id=key.id,
        partner_id=key.partner_id,
        name=key.name,
        prefix=key.prefix,
        scopes=[Scope(scope) for scope in key.scopes],
        status=_status(key, now),
        created_at=key.created_at,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
        revoked_at=key.revoked_at,
        replaced_by=key.replaced_by,
    )


def _status(key: ApiKey, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


async def list_keys(
    session: AsyncSession,
    principal: Principal,
    partner_id: uuid.UUID,
    page: PageParams,
    now: datetime,
) -> Page[ApiKeyRead]:
    partner = await get_partner(session, principal, partner_id)
    query = select(ApiKey).where(ApiKey.partner_id == partner.id)
    return await paginate(
        session, query, (ApiKey.created_at.desc(), ApiKey.id), page, lambda k: key_read(k, now)
    )


async def create_key(
    session: AsyncSession,
    principal: Principal,
    partner_id: uuid.UUID,
    data: ApiKeyCreate,
    now: datetime,
) -> ApiKeyCreated:
    partner = await get_partner(session, principal, partner_id)
    _no_escalation(principal, data.scopes)
    if data.expires_at is not None and data.expires_at <= now:
        raise InvalidInputError(
            f"expires_at must be in the future (now: {now.isoformat()})", code="expiry_in_past"
        )
    created = await _insert(session, partner.id, data.name, list(data.scopes), data.expires_at)
    record_audit(
        session,
        actor=principal.actor,
        action="api_key.created",
        resource_type="partner",
        resource_id=partner.id,
        details=_details(created.key_row),
    )
    await session.commit()
    return created.read(now)


async def revoke_key(
    session: AsyncSession,
    principal: Principal,
    partner_id: uuid.UUID,
    key_id: uuid.UUID,
    now: datetime,
) -> ApiKeyRead:
    """Revoking twice changes nothing: the key stays revoked as of the first time."""
    key = await _get_key(session, principal, partner_id, key_id)
    if key.revoked_at is None:
        key.revoked_at = now
        record_audit(
            session,
            actor=principal.actor,
            action="api_key.revoked",
            resource_type="partner",
            resource_id=key.partner_id,
            details=_details(key),
        )
        await session.commit()
    return key_read(key, now)


async def rotate_key(
    session: AsyncSession,
    principal: Principal,
    partner_id: uuid.UUID,
    key_id: uuid.UUID,
    data: ApiKeyRotate,
    now: datetime,
    default_grace_seconds: int,
) -> ApiKeyCreated:
    key = await _get_key(session, principal, partner_id, key_id, for_update=True)
    status = _status(key, now)
    if status != "active":
        raise ConflictError(f"API key {key.id} is {status}", code=f"api_key_{status}")
    if key.replaced_by is not None:
        raise ConflictError(
            f"API key {key.id} was already rotated (to {key.replaced_by})", code="api_key_rotated"
        )
    grace = default_grace_seconds if data.grace_seconds is None else data.grace_seconds
    created = await _insert(session, key.partner_id, key.name, list(key.scopes), key.expires_at)
    grace_ends = now + timedelta(seconds=grace)
    key.expires_at = grace_ends if key.expires_at is None else min(key.expires_at, grace_ends)
    key.replaced_by = created.key_row.id
    record_audit(
        session,
        actor=principal.actor,
        action="api_key.rotated",
        resource_type="partner",
        resource_id=key.partner_id,
        details={
            **_details(key),
            "new_api_key_id": str(created.key_row.id),
            "old_key_expires_at": key.expires_at.isoformat(),
        },
    )
    await session.commit()
    return created.read(now)


class _Created:
    def __init__(self, key_row: ApiKey, secret: str) -> None:
        self.key_row = key_row
        self.secret = secret

    def read(self, now: datetime) -> ApiKeyCreated:
        return ApiKeyCreated(**key_read(self.key_row, now).model_dump(), key=self.secret)


async def _insert(
    session: AsyncSession,
    partner_id: uuid.UUID,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
) -> _Created:
    secret = new_api_key()
    key = ApiKey(
        partner_id=partner_id,
        name=name,
        key_hash=hash_api_key(secret),
        prefix=secret[:PREFIX_LENGTH],
        scopes=sorted(scopes),
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return _Created(key, secret)


async def _get_key(
    session: AsyncSession,
    principal: Principal,
    partner_id: uuid.UUID,
    key_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> ApiKey:
    partner = await get_partner(session, principal, partner_id)
    query = select(ApiKey).where(ApiKey.id == key_id, ApiKey.partner_id == partner.id)
    if for_update:
        query = query.with_for_update()
    key = await session.scalar(query)
    if key is None:
        raise NotFoundError(f"API key {key_id} not found")
    return key


def _no_escalation(principal: Principal, scopes: list[Scope]) -> None:
    beyond = sorted(set(scopes) - principal.scopes)
    if beyond:
        raise ForbiddenError(
            f"a key cannot give a new key scopes it does not have: {', '.join(beyond)}",
            code="insufficient_scope",
        )


def _details(key: ApiKey) -> dict[str, object]:
    return {
        "api_key_id": str(key.id),
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }
