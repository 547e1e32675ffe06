"""Webhook delivery end to end, over real connections: the API over HTTP, Postgres, moto's SQS,
the worker in this process, and a real HTTP receiver on a loopback port.

Time that must pass (retry waits) passes on the injected clock; nothing sleeps for it. A retry
message carries a delay of one real second at most here (WEBHOOK_MAX_DELAY_SECONDS=1), and is
sent on again until the clock says its attempt is due.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from app.context import AppContext
from app.db.models import (
    BatchStatus,
    CellMetric,
    DeliveryStatus,
    EvaluationBatch,
    OrgQuestion,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)
from app.evaluations.pipeline import mark_batch_failed
from app.settings import Settings
from app.webhooks.outbox import dispatch_outbox, emit_event, stable_event_id
from devtools.embedded import run_worker_task
from tests.clock import OffsetClock
from tests.conftest import make_settings, operator_client
from tests.db_checks import audit_actions
from tests.factories import create_org, create_partner, expect, trigger, wait_for_batch
from tests.servers import silent_server
from tests.test_api_management import partner_client
from tests.webhook_support import Receiver, attempts_of, deliveries_of, receiver
from tests.worker_support import eventually, queue_counts

TIMEOUT = 2.0  # WEBHOOK_TIMEOUT_SECONDS here: what the attempt at a hanging receiver waits


def webhook_settings(
    postgres_url: str, queue_url: str, sqs_endpoint: str, **overrides: object
) -> Settings:
    values: dict[str, object] = {
        "webhook_allow_insecure_urls": True,
        "webhook_timeout_seconds": TIMEOUT,
        "webhook_max_delay_seconds": 1,
        **overrides,
    }
    return make_settings(postgres_url, queue_url, sqs_endpoint, **values)


@pytest.fixture
def settings(postgres_url: str, queue_url: str, sqs_endpoint: str) -> Settings:
    return webhook_settings(postgres_url, queue_url, sqs_endpoint)


@pytest.fixture
async def hooks() -> AsyncIterator[Receiver]:
    async with receiver() as server:
        yield server


async def register(
    api: httpx.AsyncClient, partner_id: str, url: str, events: list[str]
) -> dict[str, Any]:
    created: dict[str, Any] = expect(
        await api.post(f"/partners/{partner_id}/webhooks", json={"url": url, "events": events}),
        201,
    )
    return created


async def emit(context: AppContext, partner_id: str, payload: dict[str, Any]) -> str:
    """What domain code does: the event in its transaction, the outbox after the commit."""
    event_id = stable_event_id("metric.changed", uuid.uuid4())
    async with context.sessions() as session:
        created = await emit_event(
            session,
            partner_id=uuid.UUID(partner_id),
            type="metric.changed",
            payload=payload,
            event_id=event_id,
        )
        await session.commit()
    assert created
    await dispatch_outbox(context)
    return event_id


async def only_delivery(context: AppContext, endpoint_id: str) -> WebhookDelivery:
    (delivery,) = await deliveries_of(context, endpoint_id)
    return delivery


async def wait_attempts(context: AppContext, endpoint_id: str, count: int) -> WebhookDelivery:
    """Until the endpoint's one delivery has `count` attempts recorded (and its next message is
    sent, when it is to be retried)."""

    async def recorded() -> bool:
        delivery = await only_delivery(context, endpoint_id)
        return delivery.attempts >= count

    await eventually(recorded, what=f"{count} attempt(s)")
    delivery = await only_delivery(context, endpoint_id)
    assert delivery.attempts == count
    return delivery


def advance(clock: OffsetClock, seconds: float) -> None:
    clock.offset += timedelta(seconds=seconds)


async def test_a_completed_batch_is_delivered_signed(
    api: httpx.AsyncClient, context: AppContext, hooks: Receiver
) -> None:
    await _completed_batch_flow(api, context, hooks)


async def test_a_completed_batch_is_delivered_on_embedded_sqlite(
    sqlite_url: str, queue_url: str, sqs_endpoint: str, hooks: Receiver
) -> None:
    settings = webhook_settings(sqlite_url, queue_url, sqs_endpoint, redis_url=None)
    async with (
        AppContext.create(settings) as context,
        operator_client(settings, context) as api,
    ):
        await _completed_batch_flow(api, context, hooks)


async def _completed_batch_flow(
    api: httpx.AsyncClient, context: AppContext, hooks: Receiver
) -> None:
    partner_id = await create_partner(api)
    async with partner_client(api, partner_id) as client:
        endpoint = await register(client, partner_id, hooks.url, ["batch.completed"])
        # Not subscribed to batch.completed: told nothing.
        other = await register(client, partner_id, hooks.url + "/failed", ["batch.failed"])
    setup = await create_org(api, partner_id, questions=2, engines=("openai",), locations=("US",))
    batch_id = await trigger(api, setup.org_id)
    async with run_worker_task(context):
        batch = await wait_for_batch(api, batch_id)
        assert batch["status"] == "completed"
        await eventually(lambda: len(hooks.requests) >= 1, what="the webhook")
        await wait_attempts(context, endpoint["id"], 1)

    (request,) = hooks.requests
    assert request.path == "/hooks"
    # Verified by the specification's own package, with the secret shown at registration.
    document = Webhook(endpoint["secret"]).verify(request.body, request.headers)
    assert request.headers["webhook-id"] == (await batch_events(context, batch_id))[0]
    assert request.headers["content-type"] == "application/json"
    assert document["type"] == "batch.completed"
    assert datetime.fromisoformat(document["timestamp"]).tzinfo is not None
    assert document["data"] == {
        "batch_id": batch_id,
        "org_id": setup.org_id,
        "batch_date": batch["batch_date"],
        "status": "completed",
        "total_runs": 2,
        "completed_runs": 2,
        "failed_runs": 0,
        "charged_amount": "0.100000",
        "error": None,
    }
    assert await deliveries_of(context, other["id"]) == []

    log = expect(await api.get(f"/partners/{partner_id}/webhooks/{endpoint['id']}/deliveries"), 200)
    assert log["total"] == 1
    (delivery,) = log["items"]
    assert delivery["event_id"] == request.headers["webhook-id"]
    assert delivery["event_type"] == "batch.completed"
    assert delivery["status"] == "succeeded"
    assert delivery["completed_at"]
    (attempt,) = delivery["attempts"]
    assert attempt["attempt"] == 1
    assert attempt["succeeded"] is True
    assert attempt["status_code"] == 200
    assert attempt["error"] is None


async def test_retries_after_500s_and_a_timeout_on_the_schedule(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock, hooks: Receiver
) -> None:
    partner_id = await create_partner(api)
    endpoint = await register(api, partner_id, hooks.url, ["metric.changed"])
    hooks.script = [500, 503, "hang"]
    async with run_worker_task(context):
        event_id = await emit(context, partner_id, {"metric": "visibility", "verdict": "down"})
        first = await wait_attempts(context, endpoint["id"], 1)
        (failed,) = await attempts_of(context, first.id)
        assert (failed.status_code, failed.error, failed.succeeded) == (500, "HTTP 500", False)
        assert first.status == DeliveryStatus.PENDING
        assert first.next_attempt_at is not None
        # 5 s after the attempt (on the clock): the schedule's first wait.
        assert 5 <= (first.next_attempt_at - failed.attempted_at).total_seconds() < 10

        advance(clock, 5)
        second = await wait_attempts(context, endpoint["id"], 2)
        assert second.next_attempt_at is not None
        assert 290 < (second.next_attempt_at - clock.now()).total_seconds() <= 300
        # Four minutes on, the retry is not due: its message comes and is sent on unanswered.
        advance(clock, 240)
        waited_from = clock.now()

        async def sent_on() -> bool:
            delivery = await only_delivery(context, endpoint["id"])
            return (
                delivery.last_enqueued_at is not None and delivery.last_enqueued_at >= waited_from
            )

        await eventually(sent_on, what="the early message to be sent on")
        assert (await only_delivery(context, endpoint["id"])).attempts == 2
        assert len(hooks.requests) == 2

        advance(clock, 60)
        third = await wait_attempts(context, endpoint["id"], 3)
        assert third.next_attempt_at is not None
        assert 1790 < (third.next_attempt_at - clock.now()).total_seconds() <= 1800

        advance(clock, 1800)
        done = await wait_attempts(context, endpoint["id"], 4)

    assert done.status == DeliveryStatus.SUCCEEDED
    attempts = await attempts_of(context, done.id)
    assert [(a.attempt, a.status_code, a.succeeded) for a in attempts] == [
        (1, 500, False),
        (2, 503, False),
        (3, None, False),
        (4, 200, True),
    ]
    timed_out = attempts[2]
    assert timed_out.error == f"timeout: no answer within {TIMEOUT:g} s"
    assert TIMEOUT * 1000 * 0.9 <= timed_out.duration_ms < TIMEOUT * 1000 * 3
    # The attempts were made when the clock said so: 5 s, 5 min, 30 min apart at least.
    gaps = [(b.attempted_at - a.attempted_at).total_seconds() for a, b in pairwise(attempts)]
    assert [gap >= wait for gap, wait in zip(gaps, (5, 300, 1800), strict=True)] == [True] * 3, gaps

    # Every attempt is the same event, signed anew with its own timestamp.
    assert len(hooks.requests) == 4
    verifier = Webhook(endpoint["secret"])
    for request in hooks.requests:
        assert request.headers["webhook-id"] == event_id
        assert request.body == hooks.requests[0].body
        at = datetime.fromtimestamp(int(request.headers["webhook-timestamp"]), UTC)
        assert request.headers["webhook-signature"] == verifier.sign(event_id, at, request.body)
    assert json.loads(hooks.requests[0].body)["data"] == {"metric": "visibility", "verdict": "down"}
    async with context.sessions() as session:
        failing = await session.scalar(
            select(WebhookEndpoint.failing_since).where(
                WebhookEndpoint.id == uuid.UUID(endpoint["id"])
            )
        )
    assert failing is None


async def test_retries_used_up_mark_the_endpoint_failing_until_a_redelivery_succeeds(
    postgres_url: str, queue_url: str, sqs_endpoint: str, hooks: Receiver
) -> None:
    settings = webhook_settings(
        postgres_url, queue_url, sqs_endpoint, webhook_retry_schedule="5s,1m"
    )
    clock = OffsetClock()
    hooks.default = 500
    async with (
        AppContext.create(settings, clock) as context,
        operator_client(settings, context) as api,
    ):
        partner_id = await create_partner(api)
        endpoint = await register(api, partner_id, hooks.url, ["metric.changed"])
        path = f"/partners/{partner_id}/webhooks/{endpoint['id']}"
        async with run_worker_task(context):
            await emit(context, partner_id, {"n": 1})
            await wait_attempts(context, endpoint["id"], 1)
            advance(clock, 5)
            await wait_attempts(context, endpoint["id"], 2)
            advance(clock, 60)
            failed = await wait_attempts(context, endpoint["id"], 3)
            assert failed.status == DeliveryStatus.FAILED
            assert failed.next_attempt_at is None
            hook = expect(await api.get(path), 200)
            assert hook["failing_since"] is not None

            # The endpoint is fixed; the event is sent again, attempts starting now.
            hooks.default = 200
            again = expect(await api.post(f"{path}/deliveries/{failed.id}/redeliver"), 202)
            assert again["status"] == "pending"
            assert again["event_id"] == failed.event_id
            assert again["attempts"] == []

            async def redelivered() -> bool:
                log = expect(await api.get(f"{path}/deliveries"), 200)
                return bool(log["items"][0]["status"] == "succeeded")

            await eventually(redelivered, what="the redelivery")

        log = expect(await api.get(f"{path}/deliveries"), 200)
        assert log["total"] == 2
        newest, original = log["items"]
        assert newest["id"] == again["id"]
        assert [a["status_code"] for a in newest["attempts"]] == [200]
        assert original["status"] == "failed"
        assert [a["status_code"] for a in original["attempts"]] == [500, 500, 500]
        failed_only = expect(await api.get(f"{path}/deliveries?status=failed"), 200)
        assert [d["id"] for d in failed_only["items"]] == [original["id"]]
        assert expect(await api.get(path), 200)["failing_since"] is None
        assert len(hooks.requests) == 4
        assert await audit_actions(context, endpoint["id"]) == [
            "webhook.created",
            "webhook.redelivered",
        ]


async def batch_events(context: AppContext, batch_id: str) -> list[str]:
    """The ids of the batch's events, each checked to be derived from the ending it tells of."""
    async with context.sessions() as session:
        ended_at = await session.scalar(
            select(EvaluationBatch.completed_at).where(EvaluationBatch.id == uuid.UUID(batch_id))
        )
        events = list(await session.scalars(select(WebhookEvent).order_by(WebhookEvent.created_at)))
    assert events[-1].id == stable_event_id(events[-1].type, batch_id, ended_at)
    return [event.id for event in events if event.payload.get("batch_id") == batch_id]


async def test_a_failed_batch_is_told_once_per_ending(
    api: httpx.AsyncClient, context: AppContext, hooks: Receiver
) -> None:
    partner_id = await create_partner(api)
    endpoint = await register(api, partner_id, hooks.url, ["batch.failed", "batch.completed"])
    setup = await create_org(api, partner_id, questions=1, engines=("openai",), locations=("US",))
    batch_id = await trigger(api, setup.org_id)
    # Failed before any worker ran it; failing it again tells nothing more.
    await mark_batch_failed(context, uuid.UUID(batch_id), "redrive_limit: for the test")
    await mark_batch_failed(context, uuid.UUID(batch_id), "redrive_limit: again")
    (first,) = await batch_events(context, batch_id)
    async with context.sessions() as session:
        created = await emit_event(
            session,
            partner_id=uuid.UUID(partner_id),
            type="batch.failed",
            payload={},
            event_id=first,
        )
        await session.commit()
    assert created is False, "an event id that exists creates nothing"
    assert len(await deliveries_of(context, endpoint["id"])) == 1
    # Resumed, it fails again: a second ending, told as a second event.
    assert await trigger(api, setup.org_id) == batch_id
    await mark_batch_failed(context, uuid.UUID(batch_id), "redrive_limit: once more")
    first_again, second = await batch_events(context, batch_id)
    assert first_again == first != second

    async with run_worker_task(context):

        async def delivered() -> bool:
            deliveries = await deliveries_of(context, endpoint["id"])
            return [d.status for d in deliveries] == [DeliveryStatus.SUCCEEDED] * 2

        await eventually(delivered, what="both deliveries")
    documents = {
        request.headers["webhook-id"]: Webhook(endpoint["secret"]).verify(
            request.body, request.headers
        )
        for request in hooks.requests
    }
    assert set(documents) == {first, second}
    assert len(hooks.requests) == 2
    for event_id, error in (
        (first, "redrive_limit: for the test"),
        (second, "redrive_limit: once more"),
    ):
        document = documents[event_id]
        assert document["type"] == "batch.failed"
        assert document["data"]["status"] == "failed"
        assert document["data"]["error"] == error
        assert document["data"]["charged_amount"] == "0.000000"
        assert document["data"]["total_runs"] == 1


async def test_a_lost_message_is_sent_again_by_the_reconciler(
    api: httpx.AsyncClient,
    context: AppContext,
    clock: OffsetClock,
    hooks: Receiver,
    sqs: SQSClient,
    queue_url: str,
) -> None:
    partner_id = await create_partner(api)
    endpoint = await register(api, partner_id, hooks.url, ["metric.changed"])
    await emit(context, partner_id, {"n": 1})
    # The message is lost (read and deleted by someone else).
    response = await asyncio.to_thread(
        sqs.receive_message, QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    )
    (message,) = response["Messages"]
    assert json.loads(message["Body"])["type"] == "deliver_webhook"
    await asyncio.to_thread(
        sqs.delete_message, QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"]
    )
    async with run_worker_task(context) as worker:
        # Just sent: not taken for lost yet.
        await worker.reconciler.run_once()
        assert await queue_counts(sqs, queue_url) == (0, 0)
        advance(clock, context.settings.webhook_resend_after_seconds)
        await worker.reconciler.run_once()
        delivered = await wait_attempts(context, endpoint["id"], 1)
    assert delivered.status == DeliveryStatus.SUCCEEDED
    assert len(hooks.requests) == 1


async def test_a_disabled_endpoint_is_sent_nothing_until_enabled(
    api: httpx.AsyncClient,
    context: AppContext,
    hooks: Receiver,
    sqs: SQSClient,
    queue_url: str,
) -> None:
    partner_id = await create_partner(api)
    endpoint = await register(api, partner_id, hooks.url, ["metric.changed"])
    path = f"/partners/{partner_id}/webhooks/{endpoint['id']}"
    expect(await api.patch(path, json={"enabled": False}), 200)
    await emit(context, partner_id, {"n": 1})
    # Disabled when the event happened: no delivery at all.
    assert await deliveries_of(context, endpoint["id"]) == []

    expect(await api.patch(path, json={"enabled": True}), 200)
    await emit(context, partner_id, {"n": 2})
    expect(await api.patch(path, json={"enabled": False}), 200)
    async with run_worker_task(context):
        # Its message arrives while the endpoint is disabled: the delivery waits.
        async def dropped() -> bool:
            return await queue_counts(sqs, queue_url) == (0, 0)

        await eventually(dropped, what="the message to be dropped")
        assert hooks.requests == []
        assert expect(await api.post(f"{path}/deliveries/{uuid.uuid4()}/redeliver"), 404)
        pending = await only_delivery(context, endpoint["id"])
        assert pending.status == DeliveryStatus.PENDING
        conflict = expect(await api.post(f"{path}/deliveries/{pending.id}/redeliver"), 409)
        assert conflict["error"] == "webhook_disabled"
        # Enabled again: what waited goes out at once.
        expect(await api.patch(path, json={"enabled": True}), 200)
        delivered = await wait_attempts(context, endpoint["id"], 1)
    assert delivered.status == DeliveryStatus.SUCCEEDED
    assert json.loads(hooks.requests[0].body)["data"] == {"n": 2}


async def test_the_delivery_refuses_an_address_the_guard_would_refuse_now(
    api: httpx.AsyncClient, context: AppContext, hooks: Receiver
) -> None:
    """Registered while loopback was allowed; the worker checks again before each attempt."""
    partner_id = await create_partner(api)
    url = hooks.url.replace("http://", "https://")
    endpoint = await register(api, partner_id, url, ["metric.changed"])
    strict = context.settings.model_copy(update={"webhook_allow_insecure_urls": False})
    async with (
        AppContext.create(strict, context.clock) as worker_context,
        run_worker_task(worker_context),
    ):
        await emit(worker_context, partner_id, {"n": 1})
        refused = await wait_attempts(context, endpoint["id"], 1)
    (attempt,) = await attempts_of(context, refused.id)
    assert attempt.status_code is None
    assert attempt.error == "refused: 127.0.0.1 is a loopback address"
    assert refused.status == DeliveryStatus.PENDING, "retried on the schedule, like any failure"
    assert hooks.requests == []


async def test_an_unanswered_send_after_the_commit_is_made_good_by_the_reconciler(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock, hooks: Receiver
) -> None:
    partner_id = await create_partner(api)
    endpoint = await register(api, partner_id, hooks.url, ["metric.changed"])
    async with silent_server() as sqs_down:
        frozen = context.settings.model_copy(
            update={"aws_endpoint_url": sqs_down, "sqs_call_timeout": 0.2, "sqs_call_attempts": 1}
        )
        async with AppContext.create(frozen, clock) as api_side:
            # The event is committed; sending its message fails: nothing raises.
            await emit(api_side, partner_id, {"n": 1})
    (delivery,) = await deliveries_of(context, endpoint["id"])
    assert delivery.last_enqueued_at is not None
    async with run_worker_task(context) as worker:
        advance(clock, context.settings.webhook_resend_after_seconds)
        await worker.reconciler.run_once()
        delivered = await wait_attempts(context, endpoint["id"], 1)
    assert delivered.status == DeliveryStatus.SUCCEEDED


async def test_a_real_change_after_a_batch_is_told_as_metric_changed(
    api: httpx.AsyncClient, context: AppContext, hooks: Receiver, clock: OffsetClock
) -> None:
    """The week before shows the org nowhere; today's batch shows it: visibility is up,
    and the partner hears it once, signed; metrics within noise are not told."""
    partner_id = await create_partner(api)
    async with partner_client(api, partner_id) as client:
        endpoint = await register(client, partner_id, hooks.url, ["metric.changed"])
    setup = await create_org(api, partner_id, questions=5, engines=("openai", "anthropic"))
    expect(await api.patch(f"/orgs/{setup.org_id}", json={"samples": 2}), 200)
    org_id = uuid.UUID(setup.org_id)
    today = clock.today()
    async with context.sessions() as session:
        questions = list(
            await session.scalars(select(OrgQuestion.id).where(OrgQuestion.org_id == org_id))
        )
        for days_back in range(7, 14):
            day = today - timedelta(days=days_back)
            earlier = EvaluationBatch(
                org_id=org_id,
                batch_date=day,
                status=BatchStatus.COMPLETED,
                price_per_run=Decimal("0.05"),
            )
            session.add(earlier)
            await session.flush()
            session.add_all(
                CellMetric(
                    batch_id=earlier.id,
                    question_id=question,
                    engine_id=engine,
                    location=location,
                    metric="visibility",
                    org_id=org_id,
                    batch_date=day,
                    value=0.0,
                    answers=2,
                )
                for question in questions
                for engine in ("openai", "anthropic")
                for location in ("US", "GB")
            )
        await session.commit()

    batch_id = await trigger(api, setup.org_id)
    async with run_worker_task(context):
        batch = await wait_for_batch(api, batch_id)
        assert batch["status"] == "completed"

        async def all_delivered() -> bool:
            deliveries = await deliveries_of(context, endpoint["id"])
            return bool(deliveries) and all(
                d.status == DeliveryStatus.SUCCEEDED for d in deliveries
            )

        await eventually(all_delivered, what="every metric.changed delivered")

    documents = [Webhook(endpoint["secret"]).verify(r.body, r.headers) for r in hooks.requests]
    assert {d["type"] for d in documents} == {"metric.changed"}
    told = {(d["data"]["metric"], d["data"]["scope"], d["data"]["key"]): d for d in documents}
    overall = told[("visibility", "overall", None)]["data"]
    assert overall["verdict"] == "up"
    assert overall["batch_id"] == batch_id
    assert overall["previous"] == 0.0
    assert overall["interval"][0] > 0
    assert overall["window_days"] == 7
    changes = expect(await api.get(f"/orgs/{setup.org_id}/changes"), 200)
    assert changes["metrics"]["visibility"]["overall"]["verdict"] == "up"
    for (metric, scope, key), document in told.items():
        assert document["data"]["verdict"] in ("up", "down")
        section = changes["metrics"][metric]
        shown = (
            section["overall"]
            if scope == "overall"
            else section["by_engine" if scope == "engine" else "by_location"][key]
        )
        assert shown["verdict"] == document["data"]["verdict"]
    # Nothing was measured before for the other metrics: no change to tell.
    assert {metric for metric, _, _ in told} == {"visibility"}
    assert len(hooks.requests) == len(told), "each change told once"
