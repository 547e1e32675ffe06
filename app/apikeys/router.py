from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, status

from app.api.deps import Context, CurrentPrincipal, Session
from app.apikeys import service
from app.apikeys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead, ApiKeyRotate
from app.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/partners/{partner_id}/api-keys", tags=["api-keys"])


@router.get("")
async def list_api_keys(
    partner_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[ApiKeyRead]:
    """The partner's keys, newest first: prefix, scopes, expiry, last use; never the secret."""
    return await service.list_keys(session, principal, partner_id, page, context.clock.now())


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_api_key(
    partner_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    data: Annotated[ApiKeyCreate | None, Body()] = None,
) -> ApiKeyCreated:
    """A new key, shown once. Without a body: every scope, no expiry."""
    return await service.create_key(
        session, principal, partner_id, data or ApiKeyCreate(), context.clock.now()
    )


@router.post("/{key_id}/revoke")
async def revoke_api_key(
    partner_id: uuid.UUID,
    key_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> ApiKeyRead:
    """The key stops working at once (401)."""
    return await service.revoke_key(session, principal, partner_id, key_id, context.clock.now())


@router.post(
    "/{key_id}/rotate",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "The key is revoked, expired or already rotated"}},
)
async def rotate_api_key(
    partner_id: uuid.UUID,
    key_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
    data: Annotated[ApiKeyRotate | None, Body()] = None,
) -> ApiKeyCreated:
    """A new key with the same name, scopes and expiry; the old one keeps working for the
    grace period, then expires."""
    return await service.rotate_key(
        session,
        principal,
        partner_id,
        key_id,
        data or ApiKeyRotate(),
        context.clock.now(),
        context.settings.api_key_rotation_grace_seconds,
    )
