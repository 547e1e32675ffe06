"""The `deliver_webhook` job kind: one attempt of a delivery per message.

A message names its delivery and the attempt it is for. On receipt:
- a delivery that ended, or whose attempt was made meanwhile (a duplicate), drops the message;
- a delivery not due yet (a retry waiting longer than SQS can delay a message) sends the
  message on again, delayed WEBHOOK_MAX_DELAY_SECONDS at most;
- otherwise the attempt is claimed for as long as it may take (so no other copy makes it),
  the event is POSTed, signed, and the attempt recorded: 2xx ends the delivery and clears the
  endpoint's `failing_since`; anything else schedules the next attempt by
  WEBHOOK_RETRY_SCHEDULE, or, with the schedule used up, fails the delivery and marks the
  endpoint failing.
What the delivery is due for lives in the database, so a message that is lost, or a worker
that dies mid-attempt, delays a delivery but never loses it: the reconciler sends it again.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update

from app.context import AppContext
from app.db.models import (
    DeliveryStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from app.db.upsert import rows_affected
from app.errors import describe_error
from app.jobs import JobControl, JobKind
from app.queue.messages import DeliverWebhook
from app.settings import Settings
from app.webhooks.outbox import send_due_deliveries
from app.webhooks.sender import AttemptResult
from app.webhooks.signing import signed_headers

logger = logging.getLogger(__name__)

# Beyond the attempt's own timeout: the database work around it.
LEASE_MARGIN_SECONDS = 30.0


def attempt_lease(settings: Settings) -> float:
    """How long a claimed attempt may take before another copy of its message may make it."""
    return settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS


def deliver_webhook_kind(settings: Settings) -> JobKind[DeliverWebhook]:
    return JobKind(
        type="deliver_webhook",
        handle=deliver_webhook,
        timeout=attempt_lease(settings),
        # A failure of ours (the database, the queue) ends the message at once: the delivery's
        # state is in the database, and the reconciler sends it again once it is overdue.
        max_attempts=1,
        record_failure=_count_failure,
        on_exhausted=_drop_failed_message,
        on_dead_letter=_drop_dead_letter,
        reconcile=_reconcile,
    )


def event_body(event: WebhookEvent) -> bytes:
    """The request body, the same on every attempt: Standard Webhooks' type, timestamp, data."""
    document = {
        "type": event.type,
        "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": event.payload,
    }
    return json.dumps(document, separators=(",", ":")).encode()


async def deliver_webhook(context: AppContext, job: DeliverWebhook, control: JobControl) -> None:
    now = context.clock.now()
    async with context.sessions() as session:
        row = (
            await session.execute(
                select(WebhookDelivery, WebhookEndpoint, WebhookEvent)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(WebhookEvent, WebhookEvent.id == WebhookDelivery.event_id)
                .where(WebhookDelivery.id == job.delivery_id)
            )
        ).first()
        if row is None:
            logger.info("webhook delivery gone (its endpoint was deleted); message dropped")
            return
        delivery, endpoint, event = row
        if delivery.status != DeliveryStatus.PENDING or delivery.attempts + 1 != job.attempt:
            logger.info("webhook attempt already made; duplicate message dropped")
            return
        if not endpoint.enabled:
            # Paused: marked as having no message, so it is sent as soon as the endpoint is
            # enabled again.
            await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == job.delivery_id,
                    WebhookDelivery.attempts == job.attempt - 1,
                )
                .values(last_enqueued_at=None)
            )
            await session.commit()
            logger.info("webhook endpoint disabled; delivery paused")
            return
        due = delivery.next_attempt_at
        if due is not None and due > now:
            await session.rollback()
            await _wait_on(context, job, due, now)
            return
        claimed = await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == job.delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.attempts == job.attempt - 1,
                or_(
                    WebhookDelivery.next_attempt_at.is_(None),
                    WebhookDelivery.next_attempt_at <= now,
                ),
            )
            .values(next_attempt_at=now + timedelta(seconds=attempt_lease(context.settings)))
        )
        if not rows_affected(claimed):
            logger.info("webhook attempt claimed by another copy; message dropped")
            return
        url, secret, event_id, body = endpoint.url, endpoint.secret, event.id, event_body(event)
        await session.commit()
    result = await context.webhooks.post(url, body, signed_headers(secret, event_id, now, body))
    await _record(context, job, result, now)


async def _wait_on(context: AppContext, job: DeliverWebhook, due: datetime, now: datetime) -> None:
    """Not due yet: the message goes back to the queue, delayed as long as SQS allows."""
    async with context.sessions() as session:
        moved = await session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == job.delivery_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.attempts == job.attempt - 1,
            )
            .values(last_enqueued_at=now)
        )
        await session.commit()
    if rows_affected(moved):
        await _send(context, job, due, now)


async def _record(
    context: AppContext, job: DeliverWebhook, result: AttemptResult, attempted_at: datetime
) -> None:
    settings = context.settings
    now = context.clock.now()
    retry_at: datetime | None = None
    async with context.sessions() as session:
        # Endpoint, then delivery: the order deleting an endpoint locks them in.
        endpoint = await session.scalar(
            select(WebhookEndpoint)
            .join(WebhookDelivery, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
            .where(WebhookDelivery.id == job.delivery_id)
            .with_for_update(of=WebhookEndpoint)
            .execution_options(populate_existing=True)
        )
        delivery = await session.get(
            WebhookDelivery, job.delivery_id, with_for_update=True, populate_existing=True
        )
        if (
            endpoint is None
            or delivery is None
            or delivery.status != DeliveryStatus.PENDING
            or delivery.attempts != job.attempt - 1
        ):
            # Deleted with its endpoint meanwhile, or another copy outlived the lease and
            # recorded this attempt first.
            logger.warning("webhook attempt made but no longer recordable")
            return
        session.add(
            WebhookAttempt(
                delivery_id=delivery.id,
                attempt=job.attempt,
                attempted_at=attempted_at,
                succeeded=result.succeeded,
                status_code=result.status_code,
                error=result.error,
                duration_ms=result.duration_ms,
            )
        )
        delivery.attempts = job.attempt
        delays = settings.webhook_retry_delays
        if result.succeeded:
            delivery.status = DeliveryStatus.SUCCEEDED
            delivery.completed_at, delivery.next_attempt_at = now, None
            endpoint.failing_since = None
        elif job.attempt > len(delays):
            delivery.status = DeliveryStatus.FAILED
            delivery.completed_at, delivery.next_attempt_at = now, None
            if endpoint.failing_since is None:
                endpoint.failing_since = now
        else:
            retry_at = now + timedelta(seconds=delays[job.attempt - 1])
            delivery.next_attempt_at, delivery.last_enqueued_at = retry_at, now
        await session.commit()
    outcome = {
        "status_code": result.status_code,
        "error": result.error,
        "duration_ms": result.duration_ms,
    }
    if result.succeeded:
        logger.info("webhook delivered", extra=outcome)
    elif retry_at is None:
        logger.warning("webhook delivery failed; retries used up", extra=outcome)
    else:
        logger.info("webhook attempt failed; retrying", extra={**outcome, "retry_at": retry_at})
        await _send(context, job.model_copy(update={"attempt": job.attempt + 1}), retry_at, now)


async def _send(context: AppContext, job: DeliverWebhook, due: datetime, now: datetime) -> None:
    delay = min(
        context.settings.webhook_max_delay_seconds,
        max(0, math.ceil((due - now).total_seconds())),
    )
    message = DeliverWebhook(delivery_id=job.delivery_id, attempt=job.attempt)
    try:
        await context.require_queue().send(message, delay_seconds=delay)
    except Exception as exc:
        # Recorded as sent: once overdue, the reconciler takes it for lost and sends it.
        logger.warning(
            "could not send the webhook message; the reconciler will",
            extra={"error": describe_error(exc)},
        )


async def _count_failure(context: AppContext, job: DeliverWebhook, error: str) -> int:
    # Our failure, not the endpoint's: it uses up none of the delivery's attempts.
    return 1


async def _drop_failed_message(context: AppContext, job: DeliverWebhook, error: str) -> None:
    logger.warning(
        "webhook job failed; the reconciler sends the delivery again", extra={"error": error}
    )


async def _drop_dead_letter(context: AppContext, job: DeliverWebhook) -> bool:
    # The database, not the copy, says what is still to deliver: the reconciler sends it.
    return False


async def _reconcile(context: AppContext) -> None:
    sent = await send_due_deliveries(context)
    if sent:
        logger.info("webhook deliveries sent by the reconciler", extra={"deliveries": sent})
