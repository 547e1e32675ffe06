"""The evaluation pipeline of one org's batch (DESIGN §4), run by the worker for each job.

Every step is an idempotent function of the database, so a redelivered or resumed job repeats
nothing that was done: completed runs are never asked again and never charged twice.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import func, select, update

from app.analysis.merge import other_names
from app.analysis.variations import load_variations
from app.audit import record_audit
from app.context import AppContext
from app.db.clock import db_now
from app.db.models import BatchStatus, EvaluationBatch, Org, RunStatus
from app.db.upsert import rows_affected
from app.engines.base import BrandContext
from app.errors import InsufficientBalanceError
from app.evaluations.billing import (
    admit,
    charge_completed_runs,
    lock_batch,
    lock_partner,
    uncharged_runs,
)
from app.evaluations.lifecycle import LIVE, finish_batch
from app.evaluations.matrix import MatrixRunner, Subject
from app.evaluations.runs import status_counts
from app.evaluations.steps import recorded_step
from app.extraction import OrgProfile, registrable_domain
from app.jobs import JobControl
from app.logging import log_context
from app.queue.messages import EvaluateOrg
from app.webhooks.outbox import dispatch_outbox

logger = logging.getLogger(__name__)

WORKER_ACTOR = "worker"


class BatchFailedError(Exception):
    """A permanent failure: the batch is marked failed and the job is not retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def evaluate_org(context: AppContext, job: EvaluateOrg, control: JobControl) -> None:
    with log_context(org_id=job.org_id, batch_id=job.batch_id):
        async with context.statements() as session:
            known = await session.scalar(
                select(EvaluationBatch.id).where(
                    EvaluationBatch.id == job.batch_id, EvaluationBatch.org_id == job.org_id
                )
            )
        if known is None:
            # Nothing to record it on: a job for a batch that is not there is only logged.
            logger.warning("job names no batch of this org; dropped")
            return
        await _evaluate(context, job.batch_id, control)


async def _evaluate(context: AppContext, batch_id: uuid.UUID, control: JobControl) -> None:
    try:
        async with recorded_step(context, batch_id, "get_or_create_batch"):
            batch, org = await get_or_create_batch(context, batch_id)
        if batch.status not in LIVE:
            logger.info("batch is %s; nothing to do", batch.status.value)
            return
        if batch.cancel_requested_at is None:
            async with recorded_step(context, batch_id, "check_balance"):
                await check_balance(context, batch_id, org.partner_id)
            async with recorded_step(context, batch_id, "start_batch"):
                await start_batch(context, batch_id)
            async with recorded_step(context, batch_id, "run_question_matrix"):
                subject = await load_subject(context, org)
                runner = MatrixRunner(
                    context, batch_id, org.partner_id, subject, control, batch.max_samples
                )
                await runner.run()
        if await _cancel_requested(context, batch_id):
            await cancel_batch(context, batch_id)
            return
        async with recorded_step(context, batch_id, "track_usage"):
            await track_usage(context, batch_id, org.partner_id)
        async with recorded_step(context, batch_id, "complete_batch"):
            await complete_batch(context, batch_id)
    except BatchFailedError as exc:
        await mark_batch_failed(context, batch_id, exc.reason)


async def get_or_create_batch(
    context: AppContext, batch_id: uuid.UUID
) -> tuple[EvaluationBatch, Org]:
    """The API created the batch and its runs in one transaction; here it is fetched, its
    attempt counted by the same statement."""
    async with context.statements() as session:
        batch = await session.scalar(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == batch_id)
            .values(job_attempts=EvaluationBatch.job_attempts + 1, heartbeat_at=db_now())
            .returning(EvaluationBatch)
        )
        if batch is None:
            raise RuntimeError(f"batch {batch_id} vanished")
        org = await session.get_one(Org, batch.org_id)
        await session.commit()
        return batch, org


async def check_balance(context: AppContext, batch_id: uuid.UUID, partner_id: uuid.UUID) -> None:
    """The batch's uncharged runs are covered by its reservation, or reserved now (a batch
    admitted before reservations, a price change): 402's counterpart, a permanent failure.

    Covered is read without locks first (reservations only shrink with the runs they cover),
    so the usual batch costs two reads, not a locked transaction."""
    async with context.statements() as session:
        batch = await session.get_one(EvaluationBatch, batch_id)
        if batch.reserved_amount >= batch.price_per_run * await uncharged_runs(session, batch):
            return
    async with context.sessions() as session:
        partner = await lock_partner(session, partner_id)
        batch = await lock_batch(session, batch_id)
        runs = await uncharged_runs(session, batch)
        if batch.reserved_amount >= batch.price_per_run * runs:
            await session.rollback()
            return
        try:
            await admit(session, partner, batch, runs)
        except InsufficientBalanceError as exc:
            raise BatchFailedError(
                f"insufficient_balance: required {exc.required}, available {exc.available}"
            ) from exc
        await session.commit()


async def start_batch(context: AppContext, batch_id: uuid.UUID) -> None:
    async with context.sessions() as session:
        started = await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == batch_id, EvaluationBatch.status == BatchStatus.PENDING)
            .values(
                status=BatchStatus.RUNNING,
                started_at=func.coalesce(EvaluationBatch.started_at, context.clock.now()),
                heartbeat_at=db_now(),
            )
        )
        if rows_affected(started):
            record_audit(
                session,
                actor=WORKER_ACTOR,
                action="batch.started",
                resource_type="batch",
                resource_id=batch_id,
            )
        await session.commit()


async def load_subject(context: AppContext, org: Org) -> Subject:
    """What the runs are analysed against, name variations included (cached per org)."""
    variations = await load_variations(context.sessions, context.analyst, org)
    brand = BrandContext(
        name=org.name,
        aliases=tuple(org.aliases),
        domains=tuple(org.domains),
        competitors=tuple(org.competitors),
    )
    return Subject(
        brand=brand,
        profile=OrgProfile(name=org.name, aliases=tuple(org.aliases), domains=tuple(org.domains)),
        variations=variations,
        other_names=other_names(brand, variations),
        own_domains=frozenset(
            d for d in (registrable_domain(domain) for domain in org.domains) if d
        ),
    )


async def track_usage(context: AppContext, batch_id: uuid.UUID, partner_id: uuid.UUID) -> None:
    async with context.sessions() as session:
        partner = await lock_partner(session, partner_id)
        batch = await lock_batch(session, batch_id)
        await charge_completed_runs(session, partner, batch, WORKER_ACTOR, context.clock.now())
        await session.commit()


async def complete_batch(context: AppContext, batch_id: uuid.UUID) -> None:
    async with context.statements() as session:
        counts = await status_counts(session, batch_id)
    unfinished = counts.get(RunStatus.PENDING, 0) + counts.get(RunStatus.RUNNING, 0)
    if unfinished:
        # Never completed with runs still to ask: the job fails and is tried again.
        raise RuntimeError(f"{unfinished} run(s) of the batch are still unfinished")
    total = sum(counts.values())
    failed = counts.get(RunStatus.FAILED, 0)
    if total and failed / total > context.settings.max_failed_run_ratio:
        raise BatchFailedError(
            f"too_many_failed_runs: {failed} of {total} runs failed "
            f"(threshold {context.settings.max_failed_run_ratio:.0%})"
        )
    details: dict[str, object] = {"runs": total, "failed_runs": failed}
    if await _end(context, batch_id, BatchStatus.COMPLETED, None, details):
        logger.info("batch completed", extra=details)


async def mark_batch_failed(context: AppContext, batch_id: uuid.UUID, reason: str) -> None:
    """The batch fails for good: what completed is charged, the rest of its reservation is
    given back."""
    async with recorded_step(context, batch_id, "mark_batch_failed"):
        if await _end(context, batch_id, BatchStatus.FAILED, reason, {"reason": reason}):
            logger.warning("batch failed", extra={"reason": reason})


async def cancel_batch(context: AppContext, batch_id: uuid.UUID) -> None:
    """Cancelled while it ran (an operator, a deactivated org): nothing is in flight any more;
    what completed is charged, what was never asked is cancelled."""
    async with context.statements() as session:
        reason = await session.scalar(
            select(EvaluationBatch.error).where(EvaluationBatch.id == batch_id)
        )
    if await _end(context, batch_id, BatchStatus.CANCELLED, reason, {"reason": reason}):
        logger.info("batch cancelled", extra={"reason": reason})


async def _end(
    context: AppContext,
    batch_id: uuid.UUID,
    status: BatchStatus,
    error: str | None,
    details: dict[str, object],
) -> bool:
    async with context.sessions() as session:
        ended = await finish_batch(
            session,
            batch_id,
            status,
            error=error,
            actor=WORKER_ACTOR,
            now=context.clock.now(),
            details=details,
        )
        await session.commit()
    if ended:
        # The batch's webhook events were written with its end; sent now it is committed.
        await dispatch_outbox(context)
    return ended


async def _cancel_requested(context: AppContext, batch_id: uuid.UUID) -> bool:
    async with context.statements() as session:
        requested = await session.scalar(
            select(EvaluationBatch.cancel_requested_at).where(EvaluationBatch.id == batch_id)
        )
    return requested is not None
