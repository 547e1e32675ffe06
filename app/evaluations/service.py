"""Evaluation batches: trigger (create, reuse or resume today's batch) and read them back."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record_audit
from app.auth import Principal
from app.clock import Clock
from app.db.clock import db_now
from app.db.models import (
    BatchStatus,
    BatchStep,
    EvaluationBatch,
    Org,
    Partner,
    QuestionRun,
    RunStatus,
    UsageLedgerEntry,
)
from app.db.upsert import insert_ignoring_conflicts
from app.errors import ConflictError, NotFoundError
from app.evaluations.billing import admit, lock_batch, lock_partner, money_sum, uncharged_runs
from app.evaluations.lifecycle import request_cancel
from app.evaluations.runs import RUN_KEY, SamplePlan, status_counts
from app.evaluations.schemas import (
    BatchListItem,
    BatchRead,
    EvaluationAccepted,
    EvaluationTrigger,
    StepRead,
)
from app.limits import check_batch_size
from app.logging import log_context
from app.orgs.service import Matrix, get_org, load_matrix
from app.pagination import Page, PageParams, paginate
from app.queue.messages import EvaluateOrg
from app.queue.sqs import SqsQueue

logger = logging.getLogger(__name__)

STEP_ORDER = (
    "get_or_create_batch",
    "check_balance",
    "start_batch",
    "run_question_matrix",
    "track_usage",
    "complete_batch",
    "mark_batch_failed",
)
CANCELLED_BY_OPERATOR = "cancelled_by_operator"


@dataclass(frozen=True, slots=True)
class TriggerOutcome:
    batch: EvaluationBatch
    is_existing: bool
    enqueue: bool


async def trigger_evaluation(
    session: AsyncSession,
    queue: SqsQueue | None,
    clock: Clock,
    principal: Principal,
    org_id: uuid.UUID,
    trigger: EvaluationTrigger,
    *,
    max_runs: int,
) -> EvaluationAccepted:
    org = await get_org(session, principal, org_id)
    queue = require_queue(queue)
    outcome = await get_or_create_today_batch(
        session, clock, org, trigger, actor=principal.actor, max_runs=max_runs
    )
    await session.commit()
    if outcome.enqueue:
        await enqueue_batch(queue, outcome.batch, reason=trigger.triggered_by)
    return EvaluationAccepted(
        batch_id=outcome.batch.id,
        status=outcome.batch.status,
        is_existing=outcome.is_existing,
        total_runs=outcome.batch.total_runs,
    )


def require_queue(queue: SqsQueue | None) -> SqsQueue:
    """Jobs need the queue: without one configured a request that would send one is a 503."""
    if queue is None:
        raise ConflictError(
            "no job queue is configured (SQS_QUEUE_URL)", code="queue_unavailable", status_code=503
        )
    return queue


async def get_or_create_today_batch(
    session: AsyncSession,
    clock: Clock,
    org: Org,
    trigger: EvaluationTrigger,
    *,
    actor: str,
    max_runs: int,
) -> TriggerOutcome:
    """Today's batch for the org: reused as is, resumed when failed, or created with its runs
    and admitted: its estimated cost reserved against the partner's balance (402 when it
    cannot be), with the partner's row locked so concurrent admissions queue up.

    A new batch of more than `max_runs` runs is refused (409). Leaves the transaction open
    for the caller to commit; the job is sent only after that.
    """
    if not org.active:
        raise ConflictError(f"org {org.id} is inactive", code="org_inactive")
    partner = await lock_partner(session, org.partner_id)
    batch_date = clock.today()
    batch = await _batch_for_day(session, org.id, batch_date)
    if batch is not None:
        if batch.status != BatchStatus.FAILED:
            return TriggerOutcome(batch, is_existing=True, enqueue=False)
        return await _resume(session, batch, partner, actor)

    matrix = await load_matrix(session, org.id)
    if matrix.cells == 0:
        raise ConflictError(
            f"org {org.id} has no {' and no '.join(matrix.missing_axes())} to evaluate",
            code="empty_matrix",
        )
    plan = SamplePlan(org.samples, org.max_samples)
    # Every ask counts, adaptive ones included: the most runs the batch may reach.
    check_batch_size(max_runs, matrix.cells * plan.most)
    batch_id = uuid.uuid4()
    now = clock.now()
    created = await session.execute(
        insert_ignoring_conflicts(session, EvaluationBatch, ["org_id", "batch_date"])
        .values(
            id=batch_id,
            org_id=org.id,
            batch_date=batch_date,
            status=BatchStatus.PENDING,
            total_runs=matrix.cells * plan.samples,
            cells=matrix.cells,
            samples=plan.samples,
            max_samples=org.max_samples,
            max_runs=matrix.cells * plan.most,
            triggered_by=trigger.triggered_by,
            user_id=trigger.user_id,
            price_per_run=partner.price_per_run,
            reserved_amount=0,
            job_attempts=0,
            job_failures=0,
            job_redrives=0,
            created_at=now,
            updated_at=now,
            last_enqueued_at=db_now(),
        )
        .returning(EvaluationBatch.id)
    )
    if created.first() is None:
        # A concurrent trigger created today's batch first; it also sent the job.
        existing = await _batch_for_day(session, org.id, batch_date)
        if existing is None:
            raise RuntimeError("today's batch vanished after a conflicting insert")
        return TriggerOutcome(existing, is_existing=True, enqueue=False)
    batch = await lock_batch(session, batch_id)
    # Reserved for the most runs the batch may reach: adaptive asks included.
    await admit(session, partner, batch, batch.max_runs)
    await _insert_runs(session, batch_id, matrix, plan.samples, now)
    record_audit(
        session,
        actor=actor,
        action="batch.created",
        resource_type="batch",
        resource_id=batch_id,
        details={
            "org_id": str(org.id),
            "total_runs": batch.total_runs,
            "cells": matrix.cells,
            "samples": plan.samples,
            "max_samples": org.max_samples,
            "reserved": str(batch.reserved_amount),
            **trigger.model_dump(),
        },
    )
    return TriggerOutcome(batch, is_existing=False, enqueue=True)


async def _batch_for_day(
    session: AsyncSession, org_id: uuid.UUID, batch_date: date
) -> EvaluationBatch | None:
    return await session.scalar(
        select(EvaluationBatch)
        .where(EvaluationBatch.org_id == org_id, EvaluationBatch.batch_date == batch_date)
        .execution_options(populate_existing=True)
    )


async def _insert_runs(
    session: AsyncSession, batch_id: uuid.UUID, matrix: Matrix, samples: int, now: datetime
) -> None:
    rows = [
        {
            "id": uuid.uuid4(),
            "batch_id": batch_id,
            "question_id": question.id,
            "question_text": question.text,
            "engine_id": engine_id,
            "location": location,
            "sample": sample,
            "status": RunStatus.PENDING,
            "attempts": 0,
            "simulated": False,
            "created_at": now,
        }
        for question in matrix.questions
        for engine_id in matrix.engines
        for location in matrix.locations
        for sample in range(1, samples + 1)
    ]
    await session.execute(insert_ignoring_conflicts(session, QuestionRun, RUN_KEY), rows)


async def _resume(
    session: AsyncSession, batch: EvaluationBatch, partner: Partner, actor: str
) -> TriggerOutcome:
    """A failed batch runs again: completed runs are kept, failed runs are retried, and what
    is left to run is admitted again (with a fresh failure budget for its job)."""
    batch = await lock_batch(session, batch.id)
    if batch.status != BatchStatus.FAILED:
        # Another trigger resumed it while we waited for the partner's row; it sent the job.
        return TriggerOutcome(batch, is_existing=True, enqueue=False)
    previous_error = batch.error
    await session.execute(
        update(QuestionRun)
        .where(QuestionRun.batch_id == batch.id, QuestionRun.status == RunStatus.FAILED)
        .values(status=RunStatus.PENDING, error=None, claimed_by=None, lease_expires_at=None)
    )
    await admit(session, partner, batch, await uncharged_runs(session, batch))
    await session.execute(
        update(EvaluationBatch)
        .where(EvaluationBatch.id == batch.id)
        .values(
            status=BatchStatus.PENDING,
            error=None,
            completed_at=None,
            job_failures=0,
            job_redrives=0,
            last_enqueued_at=db_now(),
        )
    )
    record_audit(
        session,
        actor=actor,
        action="batch.resumed",
        resource_type="batch",
        resource_id=batch.id,
        details={"previous_error": previous_error, "reserved": str(batch.reserved_amount)},
    )
    await session.refresh(batch)
    return TriggerOutcome(batch, is_existing=True, enqueue=True)


async def enqueue_batch(queue: SqsQueue, batch: EvaluationBatch, *, reason: str) -> bool:
    """Send the batch's job; a failure is logged and left to the reconciler, never raised."""
    message = EvaluateOrg(org_id=batch.org_id, batch_id=batch.id, reason=reason)
    with log_context(org_id=batch.org_id, batch_id=batch.id):
        try:
            sqs_id = await queue.send(message)
        except Exception:
            logger.exception("enqueue failed; the reconciler will send the job again")
            return False
        logger.info("job enqueued", extra={"sqs_message_id": sqs_id, "reason": reason})
    return True


async def get_batch(
    session: AsyncSession, principal: Principal, batch_id: uuid.UUID
) -> EvaluationBatch:
    row = (
        await session.execute(
            select(EvaluationBatch, Org.partner_id)
            .join(Org, Org.id == EvaluationBatch.org_id)
            .where(EvaluationBatch.id == batch_id)
        )
    ).first()
    if row is None or not principal.can_access(row[1]):
        raise NotFoundError(f"batch {batch_id} not found")
    batch: EvaluationBatch = row[0]
    return batch


@dataclass(frozen=True, slots=True)
class RunTotals:
    completed: int
    failed: int
    cancelled: int
    cost: Decimal
    simulated: bool
    charged_runs: int
    charged_amount: Decimal


async def run_totals(session: AsyncSession, batch_id: uuid.UUID) -> RunTotals:
    """A batch's run counts, cost and charges. On Postgres one aggregate statement, whatever
    the batch's size (NUMERIC sums are exact); SQLite keeps money as text, which SUM() would
    turn into a float, so there the embedded database's few rows are summed here."""
    of_batch = QuestionRun.batch_id == batch_id
    charged = UsageLedgerEntry.batch_id == batch_id
    if session.get_bind().dialect.name == "postgresql":
        row = (
            await session.execute(
                select(
                    func.count().filter(QuestionRun.status == RunStatus.COMPLETED),
                    func.count().filter(QuestionRun.status == RunStatus.FAILED),
                    func.count().filter(QuestionRun.status == RunStatus.CANCELLED),
                    func.sum(QuestionRun.cost),
                    func.bool_or(QuestionRun.simulated),
                    select(func.count()).where(charged).scalar_subquery(),
                    select(func.sum(UsageLedgerEntry.amount)).where(charged).scalar_subquery(),
                ).where(of_batch)
            )
        ).one()
        completed, failed, cancelled, cost, simulated, charged_runs, charged_amount = row
        return RunTotals(
            completed,
            failed,
            cancelled,
            cost or Decimal(0),
            bool(simulated),
            charged_runs,
            charged_amount or Decimal(0),
        )
    counts = await status_counts(session, batch_id)
    cost_and_simulated = (
        await session.execute(select(QuestionRun.cost, QuestionRun.simulated).where(of_batch))
    ).all()
    charges = list(await session.scalars(select(UsageLedgerEntry.amount).where(charged)))
    return RunTotals(
        counts.get(RunStatus.COMPLETED, 0),
        counts.get(RunStatus.FAILED, 0),
        counts.get(RunStatus.CANCELLED, 0),
        money_sum([cost for cost, _ in cost_and_simulated]),
        any(simulated for _, simulated in cost_and_simulated),
        len(charges),
        money_sum(list(charges)),
    )


async def batch_read(session: AsyncSession, batch: EvaluationBatch) -> BatchRead:
    totals = await run_totals(session, batch.id)
    steps = {
        step.name: step
        for step in await session.scalars(select(BatchStep).where(BatchStep.batch_id == batch.id))
    }
    return BatchRead(
        batch_id=batch.id,
        org_id=batch.org_id,
        batch_date=batch.batch_date,
        status=batch.status,
        total_runs=batch.total_runs,
        cells=batch.cells,
        samples=batch.samples,
        max_samples=batch.max_samples,
        max_runs=batch.max_runs,
        completed_runs=totals.completed,
        failed_runs=totals.failed,
        cancelled_runs=totals.cancelled,
        charged_runs=totals.charged_runs,
        cost=totals.cost,
        charged_amount=totals.charged_amount,
        price_per_run=batch.price_per_run,
        reserved=batch.reserved_amount,
        job_failures=batch.job_failures,
        cancel_requested_at=batch.cancel_requested_at,
        simulated=totals.simulated,
        triggered_by=batch.triggered_by,
        user_id=batch.user_id,
        created_at=batch.created_at,
        started_at=batch.started_at,
        completed_at=batch.completed_at,
        error=batch.error,
        steps=[StepRead.model_validate(steps[name]) for name in STEP_ORDER if name in steps],
    )


async def cancel(
    session: AsyncSession, clock: Clock, principal: Principal, batch_id: uuid.UUID
) -> EvaluationBatch:
    """An operator stops a batch: it claims no new run, the runs in flight finish, what
    completed is charged and the rest of its reservation is given back."""
    principal.require_admin()
    batch = await get_batch(session, principal, batch_id)
    await request_cancel(
        session,
        batch,
        f"{CANCELLED_BY_OPERATOR}: cancelled by the operator",
        actor=principal.actor,
        now=clock.now(),
    )
    await session.commit()
    return await session.get_one(EvaluationBatch, batch_id, populate_existing=True)


async def list_batches(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, page: PageParams
) -> Page[BatchListItem]:
    org = await get_org(session, principal, org_id)
    query = select(EvaluationBatch).where(EvaluationBatch.org_id == org.id)
    order = (EvaluationBatch.batch_date.desc(), EvaluationBatch.created_at.desc())
    return await paginate(session, query, order, page, _list_item)


def _list_item(b: EvaluationBatch) -> BatchListItem:
    return BatchListItem(
        batch_id=b.id,
        batch_date=b.batch_date,
        status=b.status,
        total_runs=b.total_runs,
        triggered_by=b.triggered_by,
        created_at=b.created_at,
        started_at=b.started_at,
        completed_at=b.completed_at,
        error=b.error,
    )
