"""Partners' webhook endpoints and their delivery log. A partner key manages its own partner's
endpoints only (others' are 404, as if absent); the operator's token manages every partner's."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record_audit
from app.auth import Principal
from app.db.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from app.errors import ConflictError, InvalidInputError, NotFoundError
from app.pagination import Page, PageParams, paginate
from app.partners.service import get_partner
from app.webhooks.schemas import (
    AttemptRead,
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookUpdate,
)
from app.webhooks.sender import WebhookSender
from app.webhooks.signing import new_secret
from app.webhooks.urls import UnsafeUrlError


async def create_webhook(
    session: AsyncSession,
    sender: WebhookSender,
    principal: Principal,
    partner_id: uuid.UUID,
    data: WebhookCreate,
) -> WebhookCreated:
    _require_access(principal, partner_id)
    # Resolved before the database is touched: no transaction waits on DNS.
    await _check_url(sender, data.url)
    partner = await get_partner(session, principal, partner_id)
    endpoint = WebhookEndpoint(
        partner_id=partner.id,
        url=data.url,
        description=data.description,
        events=list(data.events),
        secret=new_secret(),
        enabled=True,
    )
    session.add(endpoint)
    await session.flush()
    record_audit(
        session,
        actor=principal.actor,
        action="webhook.created",
        resource_type="webhook",
        resource_id=endpoint.id,
        details={"partner_id": str(partner.id), "url": endpoint.url, "events": endpoint.events},
    )
    await session.commit()
    read = WebhookRead.model_validate(endpoint)
    return WebhookCreated(**read.model_dump(), secret=endpoint.secret)


async def list_webhooks(
    session: AsyncSession, principal: Principal, partner_id: uuid.UUID, page: PageParams
) -> Page[WebhookRead]:
    await get_partner(session, principal, partner_id)
    query = select(WebhookEndpoint).where(WebhookEndpoint.partner_id == partner_id)
    order = (WebhookEndpoint.created_at, WebhookEndpoint.id)
    return await paginate(session, query, order, page, WebhookRead.model_validate)


async def get_webhook(
    session: AsyncSession,
    principal: Principal,
    partner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    *,
    for_update: bool = False,
) -> WebhookEndpoint:
    await get_partner(session, principal, partner_id)
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.id == webhook_id, WebhookEndpoint.partner_id == partner_id
    )
    if for_update:
        query = query.with_for_update()
    endpoint = await session.scalar(query)
    if endpoint is None:
        raise NotFoundError(f"webhook {webhook_id} not found")
    return endpoint


async def update_webhook(
    session: AsyncSession,
    sender: WebhookSender,
    principal: Principal,
    partner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    data: WebhookUpdate,
) -> tuple[WebhookEndpoint, bool]:
    """Returns the endpoint and whether it was enabled again (its pending deliveries resume)."""
    _require_access(principal, partner_id)
    changes = data.model_dump(exclude_unset=True)
    for field in ("url", "events", "enabled"):
        if field in changes and changes[field] is None:
            raise InvalidInputError(f"{field} cannot be null", code="invalid_webhook")
    if "url" in changes:
        await _check_url(sender, changes["url"])
    endpoint = await get_webhook(session, principal, partner_id, webhook_id, for_update=True)
    resumed = changes.get("enabled") is True and not endpoint.enabled
    for field, value in changes.items():
        setattr(endpoint, field, value)
    record_audit(
        session,
        actor=principal.actor,
        action="webhook.updated",
        resource_type="webhook",
        resource_id=endpoint.id,
        details=changes,
    )
    await session.commit()
    return endpoint, resumed


async def delete_webhook(
    session: AsyncSession, principal: Principal, partner_id: uuid.UUID, webhook_id: uuid.UUID
) -> None:
    """Its deliveries and their log go with it; a message still on the queue finds nothing."""
    endpoint = await get_webhook(session, principal, partner_id, webhook_id, for_update=True)
    record_audit(
        session,
        actor=principal.actor,
        action="webhook.deleted",
        resource_type="webhook",
        resource_id=endpoint.id,
        details={"partner_id": str(partner_id), "url": endpoint.url},
    )
    await session.delete(endpoint)
    await session.commit()


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    partner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    page: PageParams,
    status: DeliveryStatus | None,
) -> Page[DeliveryRead]:
    """The delivery log, newest first, each delivery with every attempt made."""
    endpoint = await get_webhook(session, principal, partner_id, webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = (
        await session.execute(
            query.add_columns(WebhookEvent.type)
            .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
            .limit(page.limit)
            .offset(page.offset)
        )
    ).all()
    attempts: defaultdict[uuid.UUID, list[AttemptRead]] = defaultdict(list)
    if rows:
        logged = await session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([delivery.id for delivery, _ in rows]))
            .order_by(WebhookAttempt.attempt)
        )
        for attempt in logged:
            attempts[attempt.delivery_id].append(AttemptRead.model_validate(attempt))
    items = [
        _delivery_read(delivery, event_type, attempts[delivery.id]) for delivery, event_type in rows
    ]
    return Page(items=items, total=total, limit=page.limit, offset=page.offset)


async def redeliver(
    session: AsyncSession,
    principal: Principal,
    partner_id: uuid.UUID,
    webhook_id: uuid.UUID,
    delivery_id: uuid.UUID,
) -> DeliveryRead:
    """Send the delivery's event again as a new delivery: attempts and the retry schedule
    start from now; the original keeps its log. The caller dispatches it after the commit."""
    endpoint = await get_webhook(session, principal, partner_id, webhook_id)
    original = await session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id
        )
    )
    if original is None:
        raise NotFoundError(f"delivery {delivery_id} not found")
    if not endpoint.enabled:
        raise ConflictError(
            f"webhook {endpoint.id} is disabled; enable it to redeliver", code="webhook_disabled"
        )
    event = await session.get_one(WebhookEvent, original.event_id)
    delivery = WebhookDelivery(endpoint_id=endpoint.id, event_id=original.event_id)
    session.add(delivery)
    await session.flush()
    record_audit(
        session,
        actor=principal.actor,
        action="webhook.redelivered",
        resource_type="webhook",
        resource_id=endpoint.id,
        details={
            "event_id": original.event_id,
            "delivery_id": str(original.id),
            "new_delivery_id": str(delivery.id),
        },
    )
    await session.commit()
    return _delivery_read(delivery, event.type, [])


def _delivery_read(
    delivery: WebhookDelivery, event_type: str, attempts: list[AttemptRead]
) -> DeliveryRead:
    return DeliveryRead(
        id=delivery.id,
        endpoint_id=delivery.endpoint_id,
        event_id=delivery.event_id,
        event_type=event_type,
        status=delivery.status,
        next_attempt_at=delivery.next_attempt_at,
        created_at=delivery.created_at,
        completed_at=delivery.completed_at,
        attempts=attempts,
    )


def _require_access(principal: Principal, partner_id: uuid.UUID) -> None:
    # The same answer as for a partner that does not exist.
    if not principal.can_access(partner_id):
        raise NotFoundError(f"partner {partner_id} not found")


async def _check_url(sender: WebhookSender, url: str) -> None:
    try:
        await sender.check(url)
    except UnsafeUrlError as exc:
        raise InvalidInputError(str(exc), code="webhook_url_refused") from None
