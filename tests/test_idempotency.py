"""At-least-once delivery: redelivered, duplicated and resumed jobs never repeat finished work."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import func, select, update

from app.context import AppContext
from app.db.models import QuestionRun, RunMention, RunStatus
from app.db.types import utcnow
from app.evaluations.pipeline import complete_batch
from app.queue.messages import EvaluateOrg
from app.settings import Settings
from devtools.embedded import run_worker_task
from tests.db_checks import balance, run_stats
from tests.factories import create_org, create_partner, expect, trigger, wait_for_batch
from worker.runtime import Worker


def _send_copies(sqs: SQSClient, queue_url: str, org_id: str, batch_id: str, copies: int) -> None:
    body = EvaluateOrg(org_id=uuid.UUID(org_id), batch_id=uuid.UUID(batch_id)).model_dump_json()
    for _ in range(copies):
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


async def _assert_charged_once(
    context: AppContext, batch_id: str, partner_id: str, runs: int, start: Decimal
) -> None:
    stats = await run_stats(context, batch_id)
    assert stats["total"] == runs == stats["completed"] == stats["ledger"], stats
    async with context.sessions() as session:
        mentions = await session.scalar(
            select(func.count())
            .select_from(RunMention)
            .join(QuestionRun, QuestionRun.id == RunMention.run_id)
            .where(QuestionRun.batch_id == uuid.UUID(batch_id))
        )
    assert mentions == runs
    assert await balance(context, partner_id) == start - runs * Decimal("0.05")


async def test_one_job_delivered_three_times_runs_once(
    api: httpx.AsyncClient, context: AppContext, sqs: SQSClient, settings: Settings
) -> None:
    partner_id = await create_partner(api, balance="10.00")
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)
    assert settings.sqs_queue_url is not None
    _send_copies(sqs, settings.sqs_queue_url, setup.org_id, batch_id, copies=2)

    async with run_worker_task(context):
        await wait_for_batch(api, batch_id)
        await _wait_until_queue_empty(sqs, settings.sqs_queue_url)

    stats = await run_stats(context, batch_id)
    assert stats["max_attempts"] == 1, "no run was asked twice"
    await _assert_charged_once(context, batch_id, partner_id, setup.runs, Decimal("10.00"))


async def test_duplicates_on_two_worker_loops_at_once_run_once(
    api: httpx.AsyncClient, context: AppContext, sqs: SQSClient, settings: Settings
) -> None:
    # One message per loop at a time, and a matrix slow enough that both loops get a copy.
    slow = settings.model_copy(
        update={"simulated_latency_ms": 60, "run_concurrency": 3, "worker_concurrency": 1}
    )
    partner_id = await create_partner(api, balance="10.00")
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)
    assert settings.sqs_queue_url is not None
    _send_copies(sqs, settings.sqs_queue_url, setup.org_id, batch_id, copies=2)

    async with (
        AppContext.create(slow) as first,
        AppContext.create(slow) as second,
        run_worker_task(first, "loop-a"),
        run_worker_task(second, "loop-b"),
    ):
        batch = await wait_for_batch(api, batch_id)
        await _wait_until_queue_empty(sqs, settings.sqs_queue_url)

    assert batch["status"] == "completed"
    stats = await run_stats(context, batch_id)
    assert stats["max_attempts"] == 1, "no run was asked twice"
    await _assert_charged_once(context, batch_id, partner_id, setup.runs, Decimal("10.00"))
    async with context.sessions() as session:
        workers = set(await session.scalars(select(QuestionRun.claimed_by).distinct()))
    assert workers == {"loop-a", "loop-b"}, "both loops shared the matrix"


async def test_cancelled_worker_is_resumed_by_a_fresh_one(
    api: httpx.AsyncClient, context: AppContext, settings: Settings
) -> None:
    slow = settings.model_copy(update={"simulated_latency_ms": 50, "run_concurrency": 2})
    partner_id = await create_partner(api, balance="10.00")
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)

    async with AppContext.create(slow) as doomed_context:
        doomed = asyncio.create_task(Worker(doomed_context).run())
        await _wait_for_completed_runs(context, batch_id, at_least=4)
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)

    midway = await run_stats(context, batch_id)
    assert 4 <= midway["completed"] < setup.runs
    assert midway.get("running", 0) == 0, "the cancelled worker handed its runs back"

    async with run_worker_task(context):
        batch = await wait_for_batch(api, batch_id)
    assert batch["status"] == "completed"
    await _assert_charged_once(context, batch_id, partner_id, setup.runs, Decimal("10.00"))


async def test_runs_of_a_dead_worker_are_taken_over_after_their_lease(
    api: httpx.AsyncClient, context: AppContext, settings: Settings
) -> None:
    partner_id = await create_partner(api, balance="10.00")
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)
    async with context.sessions() as session:
        stranded = list(
            await session.scalars(
                select(QuestionRun.id).where(QuestionRun.batch_id == uuid.UUID(batch_id)).limit(3)
            )
        )
        await session.execute(
            update(QuestionRun)
            .where(QuestionRun.id.in_(stranded))
            .values(
                status=RunStatus.RUNNING,
                claimed_by="dead-worker",
                attempts=1,
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )
        await session.commit()

    async with run_worker_task(context):
        batch = await wait_for_batch(api, batch_id)

    assert batch["status"] == "completed"
    await _assert_charged_once(context, batch_id, partner_id, setup.runs, Decimal("10.00"))
    async with context.sessions() as session:
        retaken = list(
            await session.scalars(select(QuestionRun.attempts).where(QuestionRun.id.in_(stranded)))
        )
    assert retaken == [2, 2, 2]


async def test_failed_batch_is_resumed_keeping_completed_runs(
    api: httpx.AsyncClient, context: AppContext, settings: Settings
) -> None:
    partner_id = await create_partner(api, balance="10.00")
    setup = await create_org(api, partner_id)
    batch_id = await trigger(api, setup.org_id)
    flaky = settings.model_copy(
        update={"simulated_failure_rate": 0.5, "run_max_attempts": 1, "max_failed_run_ratio": 0.0}
    )
    async with AppContext.create(flaky) as flaky_context, run_worker_task(flaky_context):
        failed = await wait_for_batch(api, batch_id)
    assert failed["status"] == "failed"
    assert failed["error"].startswith("too_many_failed_runs:")
    assert 0 < failed["failed_runs"] < setup.runs
    kept = failed["completed_runs"]
    assert failed["charged_runs"] == kept, "what was delivered is charged even so"

    resumed = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert resumed["batch_id"] == batch_id
    assert resumed["is_existing"] is True
    assert resumed["status"] == "pending"

    async with run_worker_task(context):
        batch = await wait_for_batch(api, batch_id)
    assert batch["status"] == "completed"
    assert batch["error"] is None
    assert batch["completed_runs"] == setup.runs
    stats = await run_stats(context, batch_id)
    assert stats["max_attempts"] <= 2
    await _assert_charged_once(context, batch_id, partner_id, setup.runs, Decimal("10.00"))


async def _wait_for_completed_runs(context: AppContext, batch_id: str, *, at_least: int) -> None:
    async def reached() -> None:
        while True:
            if (await run_stats(context, batch_id))["completed"] >= at_least:
                return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(reached(), 30)


async def _wait_until_queue_empty(sqs: SQSClient, queue_url: str) -> None:
    async def empty() -> None:
        while True:
            attributes = sqs.get_queue_attributes(
                QueueUrl=queue_url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                ],
            )["Attributes"]
            if all(value == "0" for value in attributes.values()):
                return
            await asyncio.sleep(0.1)

    await asyncio.wait_for(empty(), 30)


async def test_a_batch_with_runs_left_to_ask_is_never_completed(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api, balance="10.00")
    setup = await create_org(api, partner_id, questions=1)
    batch_id = await trigger(api, setup.org_id)
    with pytest.raises(RuntimeError, match="6 run\\(s\\) of the batch are still unfinished"):
        await complete_batch(context, uuid.UUID(batch_id))
    assert expect(await api.get(f"/batches/{batch_id}"), 200)["status"] == "pending"
