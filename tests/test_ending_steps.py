"""The steps that end a batch are committed with its end: whoever reads the batch completed,
cancelled or failed reads the steps that ended it as completed, not a step still shown running
or none."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from sqlalchemy import update

from app.context import AppContext
from app.db.models import Org, QuestionRun, RunStatus
from app.evaluations.pipeline import cancel_batch, complete_batch, mark_batch_failed
from app.evaluations.steps import StepLog
from tests.factories import create_org, create_partner, expect, trigger

Steps = dict[str, dict[str, Any]]


async def _pending_batch(api: httpx.AsyncClient) -> tuple[uuid.UUID, uuid.UUID]:
    """A pending batch of one run, and its org."""
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, questions=1, locations=("US",))
    return uuid.UUID(await trigger(api, setup.org_id)), uuid.UUID(setup.org_id)


async def _steps(api: httpx.AsyncClient, batch_id: uuid.UUID) -> tuple[str, Steps]:
    read = expect(await api.get(f"/batches/{batch_id}"), 200)
    return read["status"], {step["name"]: step for step in read["steps"]}


async def test_a_failed_batch_shows_its_failing_step_the_moment_it_reads_failed(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    batch_id, _ = await _pending_batch(api)
    steps = StepLog(context.statements, context.clock, batch_id)

    # The job's own log: before, its steps were written only when the job ended, after the
    # batch had been committed failed.
    await mark_batch_failed(context, batch_id, "redrive_limit: for the test", steps=steps)
    status, read = await _steps(api, batch_id)
    assert status == "failed"
    assert read["mark_batch_failed"]["status"] == "completed"
    assert read["mark_batch_failed"]["finished_at"] is not None

    # The job's last write finds nothing left: the attempt is counted once.
    await steps.write()
    _, again = await _steps(api, batch_id)
    assert again["mark_batch_failed"]["attempts"] == 1


async def test_a_completed_batch_shows_its_completing_steps_the_moment_it_reads_completed(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    batch_id, _ = await _pending_batch(api)
    async with context.sessions() as session:
        await session.execute(
            update(QuestionRun)
            .where(QuestionRun.batch_id == batch_id)
            .values(status=RunStatus.CANCELLED)
        )
        await session.commit()
    steps = StepLog(context.statements, context.clock, batch_id)

    async with steps.step("track_usage"), steps.step("complete_batch"):
        await complete_batch(context, batch_id, steps=steps)
        # Still inside the steps, as the job is between the commit and their end.
        status, read = await _steps(api, batch_id)
        assert status == "completed"
        assert [read[name]["status"] for name in ("track_usage", "complete_batch")] == [
            "completed",
            "completed",
        ]
    await steps.write()
    _, again = await _steps(api, batch_id)
    assert [again[name]["attempts"] for name in ("track_usage", "complete_batch")] == [1, 1]


async def test_a_cancelled_batch_shows_the_job_s_steps_the_moment_it_reads_cancelled(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    batch_id, org_id = await _pending_batch(api)
    async with context.sessions() as session:
        org = await session.get_one(Org, org_id)
    steps = StepLog(context.statements, context.clock, batch_id)
    async with steps.step("get_or_create_batch"):
        pass

    await cancel_batch(context, batch_id, org, steps)
    status, read = await _steps(api, batch_id)
    assert status == "cancelled"
    assert read["get_or_create_batch"]["status"] == "completed"
