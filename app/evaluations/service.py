"""Evaluation batches: trigger (create, reuse or resume today's batch) and read them back."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.clock import Clock
from app.db.models import (
    BatchStep,
    EvaluationBatch,
    Org,
)
from app.errors import ConflictError, NotFoundError
from app.evaluations.admission import OrgOutcome, create_today_batches, get_or_create_today_batch
from app.evaluations.lifecycle import request_cancel
from app.evaluations.runs import RunTotals, run_totals, stored_totals
from app.evaluations.schemas import (
    BatchListItem,
    BatchRead,
    BulkAccepted,
    BulkEvaluationTrigger,
    BulkItem,
    BulkItemError,
    EvaluationAccepted,
    EvaluationTrigger,
    StepRead,
)
from app.logging import log_context
from app.orgs.service import get_org, get_orgs
from app.pagination import Page, PageParams, paginate
from app.queue.messages import EvaluateOrg
from app.queue.sqs import SEND_BATCH_MAX, SqsQueue

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
    queue = require_queue(queue)
    outcome = await get_or_create_today_batch(
        session, clock, principal, org_id, trigger, max_runs=max_runs
    )
    await session.commit()
    batch = outcome.batch
    assert batch is not None  # only a skipped org has none, and that one was raised
    if outcome.enqueue:
        await enqueue_batch(queue, batch, reason=trigger.triggered_by)
    return EvaluationAccepted(
        batch_id=batch.id,
        status=batch.status,
        is_existing=outcome.outcome != "created",
        total_runs=batch.total_runs,
    )


async def trigger_bulk(
    session: AsyncSession,
    queue: SqsQueue | None,
    clock: Clock,
    principal: Principal,
    request: BulkEvaluationTrigger,
    *,
    max_runs: int,
) -> BulkAccepted:
    """Today's batch of each org, created set-based in one transaction; once it commits, the
    jobs go out in SendMessageBatch calls. An org the caller may not see is `not_found`."""
    queue = require_queue(queue)
    trigger = request.trigger()
    orgs = await get_orgs(session, principal, request.org_ids)
    outcomes = await create_today_batches(
        session,
        clock,
        [orgs[org_id] for org_id in request.org_ids if org_id in orgs],
        trigger,
        actor=principal.actor,
        max_runs=max_runs,
    )
    await session.commit()
    to_send = [o.batch for o in outcomes if o.enqueue and o.batch is not None]
    for start in range(0, len(to_send), SEND_BATCH_MAX):
        await enqueue_batches(
            queue, to_send[start : start + SEND_BATCH_MAX], reason=trigger.triggered_by
        )
    by_org = {o.org_id: o for o in outcomes}
    items = [
        _bulk_item(by_org[org_id])
        if org_id in by_org
        else BulkItem(
            org_id=org_id,
            outcome="skipped",
            error=BulkItemError.of(NotFoundError(f"org {org_id} not found")),
        )
        for org_id in request.org_ids
    ]
    return BulkAccepted.of(items)


def _bulk_item(outcome: OrgOutcome) -> BulkItem:
    if outcome.batch is None:
        assert outcome.error is not None  # a skipped org says why
        return BulkItem(
            org_id=outcome.org_id, outcome="skipped", error=BulkItemError.of(outcome.error)
        )
    return BulkItem(
        org_id=outcome.org_id,
        outcome=outcome.outcome,
        batch_id=outcome.batch.id,
        status=outcome.batch.status,
        total_runs=outcome.batch.total_runs,
    )


def require_queue(queue: SqsQueue | None) -> SqsQueue:
    """Jobs need the queue: without one configured a request that would send one is a 503."""
    if queue is None:
        raise ConflictError(
            "no job queue is configured (SQS_QUEUE_URL)", code="queue_unavailable", status_code=503
        )
    return queue


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


async def enqueue_batches(
    queue: SqsQueue, batches: Sequence[EvaluationBatch], *, reason: str
) -> list[bool]:
    """The batches' jobs in one SendMessageBatch call (SEND_BATCH_MAX at most): whether each
    was sent. A job not sent is logged and left to the reconciler, never raised."""
    messages = [EvaluateOrg(org_id=b.org_id, batch_id=b.id, reason=reason) for b in batches]
    try:
        sent = await queue.send_batch(messages)
    except Exception:
        logger.exception("enqueue failed; the reconciler will send the jobs again")
        sent = [False] * len(batches)
    for batch, was_sent in zip(batches, sent, strict=True):
        with log_context(org_id=batch.org_id, batch_id=batch.id):
            if was_sent:
                logger.info("job enqueued", extra={"reason": reason})
            else:
                logger.warning("job not sent; the reconciler will send it again")
    return sent


async def get_batch(
    session: AsyncSession, principal: Principal, batch_id: uuid.UUID
) -> EvaluationBatch:
    return _visible(principal, batch_id, (await session.execute(_with_owner(batch_id))).first())


async def read_batch(session: AsyncSession, principal: Principal, batch_id: uuid.UUID) -> BatchRead:
    """The batch as `GET /batches/{id}` shows it, read afresh: the batch, its org's partner and
    its steps in one statement (a row per step); the totals of a live batch in a second, an
    ended one keeps its own."""
    rows = (
        await session.execute(
            _with_owner(batch_id, BatchStep)
            .outerjoin(BatchStep, BatchStep.batch_id == EvaluationBatch.id)
            .execution_options(populate_existing=True)
        )
    ).all()
    batch = _visible(principal, batch_id, rows[0] if rows else None)
    steps = [step for _batch, _partner, step in rows if step is not None]
    return _batch_read(batch, stored_totals(batch) or await run_totals(session, batch.id), steps)


def _with_owner(batch_id: uuid.UUID, *columns: Any) -> Select[Any]:
    """The batch with its org's partner, which says who may see it, and `columns`."""
    return (
        select(EvaluationBatch, Org.partner_id, *columns)
        .join(Org, Org.id == EvaluationBatch.org_id)
        .where(EvaluationBatch.id == batch_id)
    )


def _visible(
    principal: Principal, batch_id: uuid.UUID, row: Sequence[Any] | None
) -> EvaluationBatch:
    """The batch of a `_with_owner` row; one the caller may not see is as unknown as one that
    does not exist."""
    if row is None or not principal.can_access(row[1]):
        raise NotFoundError(f"batch {batch_id} not found")
    batch: EvaluationBatch = row[0]
    return batch


def _batch_read(batch: EvaluationBatch, totals: RunTotals, steps: list[BatchStep]) -> BatchRead:
    by_name = {step.name: step for step in steps}
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
        steps=[StepRead.model_validate(by_name[name]) for name in STEP_ORDER if name in by_name],
    )


async def cancel(
    session: AsyncSession, clock: Clock, principal: Principal, batch_id: uuid.UUID
) -> BatchRead:
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
    return await read_batch(session, principal, batch_id)


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
