"""The webhook outbox: events are written in the transaction that produced them, and sent after
its commit.

`emit_event` records the event and one pending delivery per enabled endpoint of the partner
that subscribes to its type, inside the caller's transaction: an event exists exactly when the
change it tells of was committed. `dispatch_outbox`, called after that commit, sends a
`deliver_webhook` message for every delivery that is due and has no message on its way; the
worker's reconciler runs the same pass, so a send that failed (or a message SQS lost) is made
good within WEBHOOK_RESEND_AFTER_SECONDS plus a reconciler interval.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import ColumnElement, Uuid, and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint, WebhookEvent
from app.db.types import utcnow
from app.db.upsert import claim_each, insert_ignoring_conflicts
from app.errors import describe_error
from app.queue.messages import DeliverWebhook

if TYPE_CHECKING:
    from app.context import AppContext

logger = logging.getLogger(__name__)

EVENT_TYPES: Final = ("batch.completed", "batch.failed", "metric.changed")
# Deliveries sent per pass; the next pass (the reconciler's) takes the rest.
DISPATCH_LIMIT = 500
_EVENT_NAMESPACE = uuid.UUID("5b0f3c1e-8f7a-4c1b-9d0e-6a1f2b3c4d5e")


def stable_event_id(event_type: str, *parts: object) -> str:
    """The id of the event `event_type` about `parts` (a batch id, …): the same every time the
    same change is told, so telling it again (a retried job) creates nothing."""
    name = ":".join([event_type, *(str(part) for part in parts)])
    return "evt_" + uuid.uuid5(_EVENT_NAMESPACE, name).hex


async def emit_event(
    session: AsyncSession,
    *,
    partner_id: uuid.UUID,
    type: str,
    payload: dict[str, Any],
    event_id: str,
    endpoints: Sequence[uuid.UUID] | None = None,
) -> bool:
    """Record the event and its pending deliveries in the caller's transaction (not committed
    here); False when an event with this id already exists, which then changes nothing.
    `endpoints`: the ones subscribed to it, when the caller has read them already."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type!r}")
    inserted = await session.execute(
        insert_ignoring_conflicts(session, WebhookEvent, ["id"])
        .values(
            id=event_id,
            partner_id=partner_id,
            type=type,
            payload=payload,
            created_at=utcnow(),
        )
        .returning(WebhookEvent.id)
    )
    if inserted.first() is None:
        return False
    if endpoints is None:
        endpoints = await subscribed_endpoints(session, partner_id, type)
    for endpoint_id in endpoints:
        session.add(WebhookDelivery(endpoint_id=endpoint_id, event_id=event_id))
    await session.flush()
    return True


# A partner's enabled endpoints and the event types each wants.
Endpoints = list[tuple[uuid.UUID, list[str]]]


async def subscribed_endpoints(
    session: AsyncSession, partner_id: uuid.UUID, event_type: str
) -> list[uuid.UUID]:
    """The partner's enabled endpoints that want `event_type`: whoever an event is told to,
    and whether an event is worth working out at all."""
    return subscribed_to(await partner_endpoints(session, partner_id), event_type)


# Read as every batch ends, built once.
_PARTNER_ENDPOINTS = select(WebhookEndpoint.id, WebhookEndpoint.events).where(
    WebhookEndpoint.partner_id == bindparam("e_partner_id", type_=Uuid),
    WebhookEndpoint.enabled.is_(True),
)


async def partner_endpoints(session: AsyncSession, partner_id: uuid.UUID) -> Endpoints:
    """Read once for every event a change tells."""
    endpoints = await session.execute(_PARTNER_ENDPOINTS, {"e_partner_id": partner_id})
    return [(endpoint_id, list(events)) for endpoint_id, events in endpoints.all()]


def subscribed_to(endpoints: Endpoints, event_type: str) -> list[uuid.UUID]:
    # Subscriptions are filtered here, not in SQL: a JSON list reads the same on both dialects.
    return [endpoint_id for endpoint_id, events in endpoints if event_type in events]


async def dispatch_outbox(context: AppContext) -> int:
    """Send the deliveries that are due; returns how many were sent. Called after the commit
    that emitted events, it never raises: what it could not send, the reconciler sends."""
    try:
        return await send_due_deliveries(context)
    except Exception as exc:
        logger.warning(
            "webhook deliveries not sent; the reconciler will send them",
            extra={"error": describe_error(exc)},
        )
        return 0


def without_message(now: datetime, resend_after: float) -> tuple[ColumnElement[bool], ...]:
    """Pending deliveries of enabled endpoints that need a message: ones never sent (new, or
    whose message was dropped while their endpoint was disabled), and ones whose message
    should have been acted on by now (lost, or its worker died mid-attempt)."""
    quiet_since = now - timedelta(seconds=resend_after)
    return (
        WebhookDelivery.status == DeliveryStatus.PENDING,
        or_(
            WebhookDelivery.last_enqueued_at.is_(None),
            and_(
                WebhookDelivery.last_enqueued_at <= quiet_since,
                # A retry's message is sent ahead, delayed until its attempt is due: only once
                # the attempt is overdue is the message taken for lost.
                or_(
                    WebhookDelivery.next_attempt_at.is_(None),
                    WebhookDelivery.next_attempt_at <= quiet_since,
                ),
            ),
        ),
        WebhookDelivery.endpoint_id.in_(
            select(WebhookEndpoint.id).where(WebhookEndpoint.enabled.is_(True))
        ),
    )


async def send_due_deliveries(context: AppContext) -> int:
    """One pass of the outbox; raises when the database or the queue fails.

    Each delivery is claimed by moving its `last_enqueued_at`, so concurrent passes (the API,
    workers' reconcilers) send it once. Times are the injected clock's, like the retry
    schedule they are compared with.
    """
    queue = context.require_queue()
    now = context.clock.now()
    quiet = without_message(now, context.settings.webhook_resend_after_seconds)
    async with context.sessions() as session:
        deliveries = await claim_each(
            session,
            WebhookDelivery,
            quiet,
            {"last_enqueued_at": now},
            limit=DISPATCH_LIMIT,
            order_by=[WebhookDelivery.created_at],
        )
        claimed = [DeliverWebhook(delivery_id=d.id, attempt=d.attempts + 1) for d in deliveries]
        await session.commit()
    for message in claimed:
        await queue.send(message)
    return len(claimed)
