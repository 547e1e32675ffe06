"""The evaluation pipeline of one org's batch (DESIGN §4), run by the worker for each job.

Every step is an idempotent function of the database, so a redelivered or resumed job repeats
nothing that was done: completed runs are never asked again and never charged twice.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy import func, select, update

from app.analysis.merge import other_names
from app.analysis.variations import load_variations
from app.audit import record_audit
from app.context import AppContext
from app.db.models import (
    BatchStatus,
    EvaluationBatch,
    Org,
    Partner,
    RunStatus,
)
from app.db.types import utcnow
from app.db.upsert import rows_affected
from app.engines.base import BrandContext
from app.errors import InsufficientBalanceError
from app.evaluations.billing import charge_completed_runs, require_balance, uncharged_runs
from app.evaluations.matrix import MatrixRunner, Subject
from app.evaluations.runs import status_counts
from app.evaluations.steps import recorded_step
from app.extraction import OrgProfile, registrable_domain
from app.logging import log_context
from app.queue.messages import EvaluateOrg

logger = logging.getLogger(__name__)

WORKER_ACTOR = "worker"


class BatchFailedError(Exception):
    """A permanent failure: the batch is marked failed and the job is not retried."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def evaluate_org(context: AppContext, job: EvaluateOrg, worker_id: str) -> None:
    with log_context(org_id=job.org_id, batch_id=job.batch_id):
        async with context.sessions() as session:
            known = await session.scalar(
                select(EvaluationBatch.id).where(
                    EvaluationBatch.id == job.batch_id, EvaluationBatch.org_id == job.org_id
                )
            )
        if known is None:
            # Nothing to record it on: a job for a batch that is not there is only logged.
            logger.warning("job names no batch of this org; dropped")
            return
        batch_id = job.batch_id
        try:
            async with recorded_step(context.sessions, batch_id, "get_or_create_batch"):
                batch, org = await get_or_create_batch(context, batch_id)
            if batch.status not in (BatchStatus.PENDING, BatchStatus.RUNNING):
                logger.info("batch is %s; nothing to do", batch.status.value)
                return
            async with recorded_step(context.sessions, batch_id, "check_balance"):
                await check_balance(context, batch, org)
            async with recorded_step(context.sessions, batch_id, "start_batch"):
                await start_batch(context, batch)
            async with recorded_step(context.sessions, batch_id, "run_question_matrix"):
                subject = await load_subject(context, org)
                await MatrixRunner(context, batch_id, subject, worker_id).run()
            async with (
                recorded_step(context.sessions, batch_id, "track_usage"),
                context.sessions() as session,
            ):
                await charge_completed_runs(session, batch_id, org.partner_id, WORKER_ACTOR)
            async with recorded_step(context.sessions, batch_id, "complete_batch"):
                await complete_batch(context, batch)
        except BatchFailedError as exc:
            await mark_batch_failed(context, batch_id, exc.reason)


async def get_or_create_batch(
    context: AppContext, batch_id: uuid.UUID
) -> tuple[EvaluationBatch, Org]:
    """The API created the batch and its runs in one transaction; here it is fetched."""
    async with context.sessions() as session:
        batch = await session.get_one(EvaluationBatch, batch_id, with_for_update=True)
        org = await session.get_one(Org, batch.org_id)
        batch.job_attempts += 1
        batch.heartbeat_at = utcnow()
        await session.commit()
        return batch, org


async def check_balance(context: AppContext, batch: EvaluationBatch, org: Org) -> None:
    async with context.sessions() as session:
        partner = await session.get_one(Partner, org.partner_id)
        try:
            require_balance(partner, await uncharged_runs(session, batch.id))
        except InsufficientBalanceError as exc:
            raise BatchFailedError(
                f"insufficient_balance: required {exc.required}, available {exc.available}"
            ) from exc


async def start_batch(context: AppContext, batch: EvaluationBatch) -> None:
    async with context.sessions() as session:
        now = utcnow()
        started = await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == batch.id, EvaluationBatch.status == BatchStatus.PENDING)
            .values(
                status=BatchStatus.RUNNING,
                started_at=func.coalesce(EvaluationBatch.started_at, now),
                heartbeat_at=now,
            )
        )
        if rows_affected(started):
            record_audit(
                session,
                actor=WORKER_ACTOR,
                action="batch.started",
                resource_type="batch",
                resource_id=batch.id,
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


async def complete_batch(context: AppContext, batch: EvaluationBatch) -> None:
    async with context.sessions() as session:
        counts = await status_counts(session, batch.id)
        total = sum(counts.values())
        failed = counts.get(RunStatus.FAILED, 0)
        if total and failed / total > context.settings.max_failed_run_ratio:
            raise BatchFailedError(
                f"too_many_failed_runs: {failed} of {total} runs failed "
                f"(threshold {context.settings.max_failed_run_ratio:.0%})"
            )
        completed = await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == batch.id, EvaluationBatch.status == BatchStatus.RUNNING)
            .values(status=BatchStatus.COMPLETED, completed_at=utcnow(), error=None)
        )
        if rows_affected(completed):
            record_audit(
                session,
                actor=WORKER_ACTOR,
                action="batch.completed",
                resource_type="batch",
                resource_id=batch.id,
                details={"runs": total, "failed_runs": failed},
            )
            logger.info("batch completed", extra={"runs": total, "failed_runs": failed})
        await session.commit()


async def mark_batch_failed(context: AppContext, batch_id: uuid.UUID, reason: str) -> None:
    async with (
        recorded_step(context.sessions, batch_id, "mark_batch_failed"),
        context.sessions() as session,
    ):
        failed = await session.execute(
            update(EvaluationBatch)
            .where(
                EvaluationBatch.id == batch_id,
                EvaluationBatch.status.in_([BatchStatus.PENDING, BatchStatus.RUNNING]),
            )
            .values(status=BatchStatus.FAILED, error=reason[:2000], completed_at=utcnow())
        )
        if rows_affected(failed):
            record_audit(
                session,
                actor=WORKER_ACTOR,
                action="batch.failed",
                resource_type="batch",
                resource_id=batch_id,
                details={"reason": reason},
            )
            logger.warning("batch failed", extra={"reason": reason})
        await session.commit()


async def fail_exhausted_job(context: AppContext, job: EvaluateOrg, error: str) -> None:
    """The job kept failing until its attempts ran out: the batch fails with the last error."""
    with log_context(org_id=job.org_id, batch_id=job.batch_id):
        async with context.sessions() as session:
            exists = await session.get(EvaluationBatch, job.batch_id)
        if exists is not None:
            await mark_batch_failed(context, job.batch_id, f"retries_exhausted: {error}")


async def stalled_batches(context: AppContext) -> list[EvaluationBatch]:
    """Batches nobody works on: the enqueue after commit failed, or their worker died.

    Each is claimed by moving its `last_enqueued_at`, so concurrent reconcilers send it once.
    """
    cutoff = utcnow() - timedelta(seconds=context.settings.stall_after_seconds)
    last_activity = func.coalesce(
        EvaluationBatch.heartbeat_at, EvaluationBatch.last_enqueued_at, EvaluationBatch.created_at
    )
    claimed: list[EvaluationBatch] = []
    async with context.sessions() as session:
        candidates = list(
            await session.scalars(
                select(EvaluationBatch)
                .where(
                    EvaluationBatch.status.in_([BatchStatus.PENDING, BatchStatus.RUNNING]),
                    last_activity < cutoff,
                    func.coalesce(EvaluationBatch.last_enqueued_at, EvaluationBatch.created_at)
                    < cutoff,
                )
                .limit(100)
            )
        )
        for batch in candidates:
            moved = await session.execute(
                update(EvaluationBatch)
                .where(
                    EvaluationBatch.id == batch.id,
                    func.coalesce(EvaluationBatch.last_enqueued_at, EvaluationBatch.created_at)
                    < cutoff,
                )
                .values(last_enqueued_at=utcnow())
            )
            if rows_affected(moved):
                claimed.append(batch)
        await session.commit()
    return claimed
