"""The audit trail: events other services send to the audit SQS queue (raw or SNS-wrapped),
stored once; invalid ones left for the DLQ; and GET /audit-events, scoped and paged."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select

from app.context import AppContext
from app.db.models import AuditEvent
from app.metrics import REGISTRY
from app.queue.provision import create_queue_with_dlq
from app.settings import Settings
from tests.factories import create_org, create_partner, expect
from tests.test_api_errors import error_body
from tests.test_api_keys import as_key, new_key
from tests.worker_support import eventually, queue_counts
from worker.audit import AuditConsumer

AUDIT_MAX_RECEIVES = 1


@pytest.fixture
def audit_queue(settings: Settings) -> str:
    name = f"audit-{uuid.uuid4().hex[:12]}"
    return create_queue_with_dlq(settings, name, max_receive_count=AUDIT_MAX_RECEIVES)


@pytest.fixture
async def consumer(context: AppContext, audit_queue: str) -> AsyncIterator[AuditConsumer]:
    audit = AuditConsumer(context, audit_queue)
    yield audit
    audit.queue.close()


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "audit_event",
        "version": 1,
        "event_id": f"billing-{uuid.uuid4().hex}",
        "occurred_at": "2026-11-30T09:15:00+00:00",
        "source": "billing-service",
        "actor": "user:42",
        "action": "invoice.sent",
        "resource_type": "partner",
        "resource_id": str(uuid.uuid4()),
        "details": {"invoice": "INV-7"},
    }
    body.update(overrides)
    return body


def sns_wrapped(inner: dict[str, Any]) -> dict[str, Any]:
    """The envelope an SNS → SQS subscription delivers (without raw message delivery)."""
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:audit",
        "Message": json.dumps(inner),
        "Timestamp": "2026-11-30T09:15:01.000Z",
        "SignatureVersion": "1",
        "Signature": "c2lnbmF0dXJl",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
    }


def consumed(outcome: str) -> float:
    value = REGISTRY.get_sample_value("senso_audit_events_consumed_total", {"outcome": outcome})
    return value or 0.0


async def stored_events(context: AppContext) -> list[AuditEvent]:
    async with context.sessions() as session:
        return list(
            await session.scalars(select(AuditEvent).where(AuditEvent.event_id.is_not(None)))
        )


async def test_raw_sns_duplicate_and_invalid_events(
    context: AppContext, consumer: AuditConsumer, sqs: SQSClient, audit_queue: str
) -> None:
    raw, wrapped = event(), event(action="payment.received", details={})
    bodies = [
        json.dumps(raw),
        json.dumps(sns_wrapped(wrapped)),
        json.dumps(raw),  # sent twice by its producer
        "not json at all",
        json.dumps(event(actor="")),
        json.dumps(event(unexpected="field")),
        json.dumps(sns_wrapped({"type": "audit_event"})),
    ]
    for body in bodies:
        sqs.send_message(QueueUrl=audit_queue, MessageBody=body)
    before = {k: consumed(k) for k in ("stored", "duplicate", "invalid")}

    handled = 0
    while handled < len(bodies):
        messages = await consumer.queue.receive(wait_seconds=1)
        for message in messages:
            await consumer.handle(message)
        handled += len(messages)

    rows = {row.event_id: row for row in await stored_events(context)}
    assert set(rows) == {raw["event_id"], wrapped["event_id"]}
    stored = rows[raw["event_id"]]
    assert (stored.source, stored.actor, stored.action) == (
        "billing-service",
        "user:42",
        "invoice.sent",
    )
    assert stored.occurred_at == datetime(2026, 11, 30, 9, 15, tzinfo=UTC)
    assert stored.details == {"invoice": "INV-7"}
    assert rows[wrapped["event_id"]].action == "payment.received"
    assert {k: consumed(k) - v for k, v in before.items()} == {
        "stored": 2,
        "duplicate": 1,
        "invalid": 4,
    }
    # The valid ones are deleted; the invalid ones stay, in flight, for the redrive policy.
    assert await queue_counts(sqs, audit_queue) == (0, 4)


async def test_an_invalid_event_reaches_the_dlq(
    consumer: AuditConsumer, sqs: SQSClient, audit_queue: str
) -> None:
    sqs.send_message(QueueUrl=audit_queue, MessageBody='{"type": "audit_event"}')
    [message] = await consumer.queue.receive(wait_seconds=1)
    await consumer.handle(message)
    # Its visibility timeout ends now (SQS's clock is not ours to move): the next receive is
    # one too many for the redrive policy, and SQS moves it to the DLQ.
    sqs.change_message_visibility(
        QueueUrl=audit_queue, ReceiptHandle=message.receipt_handle, VisibilityTimeout=0
    )
    assert await consumer.queue.receive(wait_seconds=0) == []
    dlq = sqs.get_queue_url(QueueName=audit_queue.rsplit("/", 1)[1] + "-dlq")["QueueUrl"]
    moved = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1).get("Messages", [])
    assert [m["Body"] for m in moved] == ['{"type": "audit_event"}']


async def test_the_consumer_runs_until_stopped(
    context: AppContext, consumer: AuditConsumer, sqs: SQSClient, audit_queue: str
) -> None:
    sent = event()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    sqs.send_message(QueueUrl=audit_queue, MessageBody=json.dumps(sns_wrapped(sent)))

    async def stored() -> bool:
        return [row.event_id for row in await stored_events(context)] == [sent["event_id"]]

    await eventually(stored, what="the event in the trail")
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert await queue_counts(sqs, audit_queue) == (0, 0)


async def test_audit_events_are_scoped_filtered_and_paged(
    api: httpx.AsyncClient, context: AppContext, consumer: AuditConsumer, sqs: SQSClient,
    audit_queue: str,
) -> None:  # fmt: skip
    mine, other = await create_partner(api), await create_partner(api)
    my_org = await create_org(api, mine, questions=1, engines=("openai",), locations=("US",))
    await create_org(api, other, questions=1, engines=("openai",), locations=("US",))
    batch = expect(await api.post(f"/orgs/{my_org.org_id}/evaluations"), 202)["batch_id"]
    # An event another service wrote about my org joins my trail.
    now = datetime.now(UTC).isoformat()
    external = event(resource_type="org", resource_id=my_org.org_id, occurred_at=now)
    sqs.send_message(QueueUrl=audit_queue, MessageBody=json.dumps(external))
    [message] = await consumer.queue.receive(wait_seconds=1)
    await consumer.handle(message)

    everything = expect(await api.get("/audit-events?limit=200"), 200)["items"]
    resources = {(e["resource_type"], e["resource_id"]) for e in everything}
    assert ("partner", other) in resources
    assert ("batch", batch) in resources
    times = [e["occurred_at"] for e in everything]
    assert times == sorted(times, reverse=True)

    key = (await new_key(api, mine, scopes=["read"]))["key"]
    async with as_key(api, key) as partner:
        seen = expect(await partner.get("/audit-events?limit=200"), 200)["items"]
        assert {(e["resource_type"], e["resource_id"]) for e in seen} == {
            ("partner", mine),
            ("org", my_org.org_id),
            ("batch", batch),
        }
        assert any(e["event_id"] == external["event_id"] for e in seen)
        # Page by page with the cursor: every event once, newest first.
        paged: list[str] = []
        cursor: str | None = None
        while True:
            query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = expect(await partner.get(f"/audit-events?{query}"), 200)
            assert len(page["items"]) <= 2
            paged += [e["id"] for e in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert paged == [e["id"] for e in seen]
        # Another partner's resources are filtered out, not an error.
        response = await partner.get(f"/audit-events?resource_type=partner&resource_id={other}")
        assert expect(response, 200)["items"] == []

    by_action = expect(await api.get("/audit-events?action=batch.created"), 200)["items"]
    assert [e["resource_id"] for e in by_action] == [batch]
    by_actor = expect(await api.get("/audit-events?actor=user:42"), 200)["items"]
    assert [e["event_id"] for e in by_actor] == [external["event_id"]]
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    response = await api.get("/audit-events", params={"since": future})
    assert expect(response, 200)["items"] == []
    response = await api.get("/audit-events", params={"until": "2000-01-01T00:00:00Z"})
    assert expect(response, 200)["items"] == []
    error_body(await api.get("/audit-events?cursor=bm9wZQ"), 422, "invalid_cursor")
    response = await api.get("/audit-events", params={"since": "2026-01-01T00:00:00"})
    error_body(response, 422, "validation_error")  # a time without its zone is ambiguous
