from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status

from app.api.deps import Context, CurrentPrincipal, Session
from app.db.models import DeliveryStatus
from app.pagination import Page, PageParams, page_params
from app.webhooks import service
from app.webhooks.outbox import dispatch_outbox
from app.webhooks.schemas import (
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)

router = APIRouter(
    prefix="/partners/{partner_id}/webhooks",
    tags=["webhooks"],
    responses={404: {"description": "Unknown partner or webhook, or another partner's"}},
)
_REFUSED: dict[int | str, dict[str, Any]] = {
    422: {"description": "Invalid, or the URL is refused (`webhook_url_refused`)"}
}


@router.post("", status_code=status.HTTP_201_CREATED, responses=_REFUSED)
async def create_webhook(
    partner_id: uuid.UUID,
    data: WebhookCreate,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> WebhookCreated:
    """Register an endpoint. Its signing secret is in this response only."""
    return await service.create_webhook(session, context.webhooks, principal, partner_id, data)


@router.get("")
async def list_webhooks(
    partner_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[WebhookRead]:
    return await service.list_webhooks(session, principal, partner_id, page)


@router.get("/{webhook_id}")
async def get_webhook(
    partner_id: uuid.UUID, webhook_id: uuid.UUID, session: Session, principal: CurrentPrincipal
) -> WebhookRead:
    endpoint = await service.get_webhook(session, principal, partner_id, webhook_id)
    return WebhookRead.model_validate(endpoint)


@router.patch("/{webhook_id}", responses=_REFUSED)
async def update_webhook(
    partner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    data: WebhookUpdate,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> WebhookRead:
    """Change the URL, events or description; `enabled: false` pauses deliveries."""
    endpoint, resumed = await service.update_webhook(
        session, context.webhooks, principal, partner_id, webhook_id, data
    )
    if resumed:
        # Deliveries that waited while it was disabled go out now, not at the reconciler's pass.
        await dispatch_outbox(context)
    return WebhookRead.model_validate(endpoint)


@router.delete("/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_webhook(
    partner_id: uuid.UUID, webhook_id: uuid.UUID, session: Session, principal: CurrentPrincipal
) -> Response:
    await service.delete_webhook(session, principal, partner_id, webhook_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{webhook_id}/deliveries")
async def list_deliveries(
    partner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    page: Annotated[PageParams, Depends(page_params)],
    delivery_status: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
) -> Page[DeliveryRead]:
    """The delivery log, newest first: every attempt with its status code, error and time."""
    return await service.list_deliveries(
        session, principal, partner_id, webhook_id, page, delivery_status
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    responses={409: {"description": "The webhook is disabled (`webhook_disabled`)"}},
)
async def redeliver(
    partner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
    session: Session,
    principal: CurrentPrincipal,
    context: Context,
) -> DeliveryRead:
    """Send the event again, as a new delivery whose attempts start now."""
    delivery = await service.redeliver(session, principal, partner_id, webhook_id, delivery_id)
    await dispatch_outbox(context)
    return delivery
