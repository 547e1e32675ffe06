"""`POST /evaluations/bulk` and set-based admission: many orgs' batches in one transaction,
with every rule of one org's trigger, against the real API, Postgres and moto's SQS."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import event, func, select, update

from app.context import AppContext
from app.db.models import AuditEvent, BatchStatus, EvaluationBatch, Partner, QuestionRun
from app.evaluations.jobs import resend_stalled_batches
from app.evaluations.schedule import enqueue_all
from app.queue.sqs import SqsQueue
from app.settings import Settings
from tests.clock import OffsetClock
from tests.factories import create_org, create_partner, expect, trigger
from tests.test_api_errors import error_body
from tests.test_api_keys import as_key, new_key
from tests.test_enqueue_all import take_all_jobs


async def bulk(api: httpx.AsyncClient, org_ids: list[str], **body: Any) -> dict[str, Any]:
    accepted: dict[str, Any] = expect(
        await api.post("/evaluations/bulk", json={"org_ids": org_ids, **body}), 202
    )
    return accepted


def outcomes(accepted: dict[str, Any]) -> dict[str, tuple[str, str | None]]:
    """Each org's outcome and error code, by org id."""
    return {
        item["org_id"]: (item["outcome"], (item.get("error") or {}).get("code"))
        for item in accepted["items"]
    }


async def partner_reserved(api: httpx.AsyncClient, partner_id: str) -> Decimal:
    return Decimal(expect(await api.get(f"/partners/{partner_id}"), 200)["reserved"])


async def test_creates_batches_runs_reservations_audit_events_and_one_job_each(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner = await create_partner(api, balance="10.00", price="0.05")
    first = await create_org(api, partner, questions=2, name="First")
    second = await create_org(api, partner, questions=1, name="Second")
    other = await create_org(api, await create_partner(api), questions=1, name="Other")
    org_ids = [second.org_id, first.org_id, other.org_id]

    accepted = await bulk(api, org_ids, triggered_by="nightly", user_id="u-1")

    assert accepted["counts"] == {"created": 3, "existing": 0, "resumed": 0, "skipped": 0}
    assert [item["org_id"] for item in accepted["items"]] == org_ids
    by_org = {item["org_id"]: item for item in accepted["items"]}
    assert by_org[first.org_id]["total_runs"] == first.runs == 12
    assert by_org[second.org_id]["status"] == "pending"
    batch_ids = {item["batch_id"] for item in accepted["items"]}
    jobs = take_all_jobs(sqs, str(settings.sqs_queue_url))
    assert sorted(job["batch_id"] for job in jobs) == sorted(batch_ids)
    assert {job["reason"] for job in jobs} == {"nightly"}
    batch = expect(await api.get(f"/batches/{by_org[first.org_id]['batch_id']}"), 200)
    assert (batch["triggered_by"], batch["user_id"], batch["reserved"]) == (
        "nightly",
        "u-1",
        "0.600000",
    )
    async with context.sessions() as session:
        runs = await session.scalar(
            select(func.count()).where(QuestionRun.batch_id.in_([uuid.UUID(b) for b in batch_ids]))
        )
        assert runs == first.runs + second.runs + other.runs
        events = list(
            await session.scalars(
                select(AuditEvent).where(AuditEvent.resource_id.in_(list(batch_ids)))
            )
        )
        assert await session.scalar(
            select(EvaluationBatch.last_enqueued_at).where(
                EvaluationBatch.id == uuid.UUID(by_org[first.org_id]["batch_id"])
            )
        )
    assert await partner_reserved(api, partner) == Decimal("0.05") * (first.runs + second.runs)
    assert sorted((e.action, e.actor) for e in events) == [("batch.created", "admin")] * 3
    [first_event] = [e for e in events if e.details["org_id"] == first.org_id]
    assert first_event.details == {
        "org_id": first.org_id,
        "total_runs": 12,
        "cells": 12,
        "samples": 1,
        "max_samples": None,
        "reserved": "0.600000",
        "triggered_by": "nightly",
        "user_id": "u-1",
    }


async def test_each_org_gets_its_own_outcome_and_none_stops_the_others(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner = await create_partner(api, balance="10.00", price="0.05")
    fresh = await create_org(api, partner, questions=1, name="Fresh")
    triggered = await create_org(api, partner, questions=1, name="Triggered")
    failed = await create_org(api, partner, questions=1, name="Failed")
    empty = await create_org(api, partner, questions=0, name="Empty")
    inactive = await create_org(api, partner, questions=1, name="Inactive")
    expect(await api.patch(f"/orgs/{inactive.org_id}", json={"active": False}), 200)
    broke = await create_org(api, await create_partner(api, balance="0.01"), name="Broke")
    existing_id = await trigger(api, triggered.org_id)
    failed_id = await trigger(api, failed.org_id)
    async with context.sessions() as session:
        # The failed batch has given its reservation back, as a batch that ends does.
        await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == uuid.UUID(failed_id))
            .values(status=BatchStatus.FAILED, error="boom", reserved_amount=Decimal(0))
        )
        await session.execute(
            update(Partner)
            .where(Partner.id == uuid.UUID(partner))
            .values(reserved=Decimal("0.05") * triggered.runs)
        )
        await session.commit()
    take_all_jobs(sqs, str(settings.sqs_queue_url))
    unknown = str(uuid.uuid4())
    org_ids = [
        fresh.org_id,
        triggered.org_id,
        failed.org_id,
        empty.org_id,
        inactive.org_id,
        broke.org_id,
        unknown,
    ]

    accepted = await bulk(api, org_ids)

    assert outcomes(accepted) == {
        fresh.org_id: ("created", None),
        triggered.org_id: ("existing", None),
        failed.org_id: ("resumed", None),
        empty.org_id: ("skipped", "empty_matrix"),
        inactive.org_id: ("skipped", "org_inactive"),
        broke.org_id: ("skipped", "insufficient_balance"),
        unknown: ("skipped", "not_found"),
    }
    assert accepted["counts"] == {"created": 1, "existing": 1, "resumed": 1, "skipped": 4}
    by_org = {item["org_id"]: item for item in accepted["items"]}
    assert by_org[triggered.org_id]["batch_id"] == existing_id
    assert (by_org[failed.org_id]["batch_id"], by_org[failed.org_id]["status"]) == (
        failed_id,
        "pending",
    )
    short = by_org[broke.org_id]["error"]["message"]
    assert short.endswith("required 1.500000, available 0.010000")
    jobs = take_all_jobs(sqs, str(settings.sqs_queue_url))
    assert sorted(job["batch_id"] for job in jobs) == sorted(
        [by_org[fresh.org_id]["batch_id"], failed_id]
    )
    runs = fresh.runs + triggered.runs + failed.runs
    assert await partner_reserved(api, partner) == Decimal("0.05") * runs


async def test_a_partner_key_triggers_its_own_orgs_and_sees_no_other(
    api: httpx.AsyncClient, sqs: SQSClient, settings: Settings
) -> None:
    mine, theirs = await create_partner(api), await create_partner(api)
    own = await create_org(api, mine, questions=1)
    other = await create_org(api, theirs, questions=1)
    trigger_key = (await new_key(api, mine, scopes=["trigger"]))["key"]
    read_key = (await new_key(api, mine, scopes=["read"]))["key"]

    async with as_key(api, trigger_key) as client:
        accepted = await bulk(client, [own.org_id, other.org_id])
    async with as_key(api, read_key) as client:
        refused = await client.post("/evaluations/bulk", json={"org_ids": [own.org_id]})

    assert outcomes(accepted) == {
        own.org_id: ("created", None),
        other.org_id: ("skipped", "not_found"),
    }
    assert accepted["items"][1]["error"]["message"] == f"org {other.org_id} not found"
    assert expect(await api.get(f"/orgs/{other.org_id}/batches"), 200)["items"] == []
    error_body(refused, 403, "insufficient_scope")
    [job] = take_all_jobs(sqs, str(settings.sqs_queue_url))
    assert job["org_id"] == own.org_id


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"org_ids": []}, "at least 1 item"),
        ({"org_ids": [str(uuid.uuid4()) for _ in range(1001)]}, "at most 1000 items"),
        ({"org_ids": ["6b1f0c53-1b9a-4bd4-9a35-5d6f2b7c1e01"] * 2}, "each org once"),
        ({"org_ids": [str(uuid.uuid4())], "priority": "high"}, "Extra inputs"),
        ({"org_ids": ["not-a-uuid"]}, "valid UUID"),
    ],
)
async def test_a_bad_body_is_a_422_naming_the_field(
    api: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    detail = error_body(await api.post("/evaluations/bulk", json=body), 422, "validation_error")

    assert any(message in error["msg"] for error in detail), detail


async def test_a_job_not_sent_leaves_the_batch_to_the_reconciler(
    api: httpx.AsyncClient,
    context: AppContext,
    settings: Settings,
    sqs: SQSClient,
    sqs_endpoint: str,
) -> None:
    setup = await create_org(api, await create_partner(api), questions=1)
    working = context.queue
    context.queue = SqsQueue(settings, f"{sqs_endpoint}/123456789012/missing-{uuid.uuid4().hex}")
    try:
        accepted = await bulk(api, [setup.org_id])
    finally:
        context.queue.close()
        context.queue = working

    [item] = accepted["items"]
    assert (item["outcome"], item["status"]) == ("created", "pending")
    assert take_all_jobs(sqs, str(settings.sqs_queue_url)) == []
    stalled = settings.model_copy(update={"stall_after_seconds": 0})
    async with AppContext.create(stalled) as reconciling:
        await resend_stalled_batches(reconciling)
    [job] = take_all_jobs(sqs, str(settings.sqs_queue_url))
    assert (job["batch_id"], job["reason"]) == (item["batch_id"], "reconciler")


async def test_enqueue_all_creates_a_chunk_in_as_many_statements_whatever_its_size(
    api: httpx.AsyncClient,
    context: AppContext,
    clock: OffsetClock,
    settings: Settings,
    sqs: SQSClient,
) -> None:
    """The statements a chunk takes do not grow with its orgs; the cap holds across chunks."""
    partner = await create_partner(api)
    for n in range(7):
        await create_org(api, partner, questions=1, engines=("openai",), name=f"Org {n}")
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    engine = context.db.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        small = await enqueue_all(context, per_second=1000, chunk=2)
        few = len(statements)
        clock.move_to(clock.today() + timedelta(days=1))
        statements.clear()
        large = await enqueue_all(context, per_second=3, chunk=7)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert [r.outcome for r in small + large] == ["enqueued"] * 14
    # Listing the orgs, then four chunks of two orgs (the last of one) against one of seven.
    assert few - 1 == 4 * (len(statements) - 1), statements
    sent_ms = sorted(int(job["sent_ms"]) for job in take_all_jobs(sqs, str(settings.sqs_queue_url)))
    assert len(sent_ms) == 14
    later = sent_ms[7:]
    assert min(later[n + 3] - later[n] for n in range(len(later) - 3)) >= 900, later


async def test_a_single_trigger_and_a_bulk_one_at_once_make_one_batch_and_one_reservation(
    api: httpx.AsyncClient, settings: Settings, sqs: SQSClient
) -> None:
    partner = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner, questions=2)

    single, many = await asyncio.gather(
        api.post(f"/orgs/{setup.org_id}/evaluations", json={}),
        api.post("/evaluations/bulk", json={"org_ids": [setup.org_id]}),
    )

    batch_id = expect(single, 202)["batch_id"]
    [item] = expect(many, 202)["items"]
    assert item["batch_id"] == batch_id
    assert sorted([expect(single, 202)["is_existing"], item["outcome"] == "existing"]) == [
        False,
        True,
    ]
    assert len(expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)["items"]) == 1
    assert await partner_reserved(api, partner) == Decimal("0.05") * setup.runs
    [job] = take_all_jobs(sqs, str(settings.sqs_queue_url))
    assert job["batch_id"] == batch_id
