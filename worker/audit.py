"""The audit queue's consumer: other services' events into the audit trail.

It has its own receive settings (AUDIT_SQS_MAX_MESSAGES, AUDIT_SQS_WAIT_SECONDS,
AUDIT_SQS_VISIBILITY_TIMEOUT). A stored or duplicate event is deleted from the queue; an
invalid one is logged and left, so the queue's redrive policy takes it to the DLQ; one that
could not be stored (the database is down) comes back after its visibility timeout.
"""

from __future__ import annotations

import asyncio
import logging

from app.auditlog.feed import InvalidAuditMessageError, parse_audit_message, store_audit_event
from app.clock import sleep_until_set
from app.context import AppContext
from app.errors import describe_error
from app.logging import log_context
from app.metrics import AUDIT_EVENTS
from app.queue.sqs import ReceivedMessage, SqsQueue

logger = logging.getLogger(__name__)

RECEIVE_RETRY_SECONDS = 2.0


class AuditConsumer:
    def __init__(self, context: AppContext, queue_url: str) -> None:
        settings = context.settings
        self._context = context
        # The queue's own receive settings: SqsQueue reads them from the settings it is given.
        own = settings.model_copy(
            update={
                "sqs_max_messages": settings.audit_sqs_max_messages,
                "sqs_wait_seconds": settings.audit_sqs_wait_seconds,
                "sqs_visibility_timeout": settings.audit_sqs_visibility_timeout,
            }
        )
        self.queue = SqsQueue(own, queue_url)

    async def run(self, stop: asyncio.Event) -> None:
        """Receive and store until `stop`; a long poll under way is finished first."""
        logger.info("audit consumer started", extra={"queue_url": self.queue.queue_url})
        try:
            while not stop.is_set():
                try:
                    messages = await self.queue.receive()
                except Exception as exc:
                    logger.warning(
                        "audit receive failed; retrying shortly",
                        extra={"error": describe_error(exc)},
                    )
                    await sleep_until_set(self._context.clock, stop, RECEIVE_RETRY_SECONDS)
                    continue
                for message in messages:
                    await self.handle(message)
        finally:
            self.queue.close()
        logger.info("audit consumer stopped")

    async def handle(self, message: ReceivedMessage) -> None:
        with log_context(sqs_message_id=message.message_id):
            try:
                event = parse_audit_message(message.body)
            except InvalidAuditMessageError as exc:
                AUDIT_EVENTS.labels("invalid").inc()
                logger.error(
                    "invalid audit message left for the DLQ",
                    extra={"receive_count": message.receive_count, "reason": str(exc)},
                )
                return
            try:
                stored = await store_audit_event(self._context, event)
            except Exception as exc:
                logger.warning(
                    "audit event not stored; it comes back after its visibility timeout",
                    extra={"event_id": event.event_id, "error": describe_error(exc)},
                )
                return
            AUDIT_EVENTS.labels("stored" if stored else "duplicate").inc()
            try:
                await self.queue.delete(message.receipt_handle)
            except Exception as exc:
                # Delivered again later, and stored once all the same.
                logger.warning(
                    "could not delete the audit message", extra={"error": describe_error(exc)}
                )
