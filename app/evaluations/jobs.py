"""The `evaluate_org` job kind: its handler, timeout, failure budget and recovery.

Its failures are counted on the batch (`job_failures`), so only the job's own errors use up its
JOB_MAX_ATTEMPTS; a graceful restart, a drain or a redelivery costs nothing.
"""

from __future__ import annotations

import logging

from sqlalchemy import and_, func, not_, or_, update

from app.context import AppContext
from app.db.clock import db_now
from app.db.models import BatchStatus, EvaluationBatch
from app.db.upsert import claim_each
from app.evaluations.lifecycle import LIVE
from app.evaluations.pipeline import evaluate_org, mark_batch_failed
from app.evaluations.service import enqueue_batch
from app.jobs import JobKind
from app.logging import log_context
from app.queue.messages import EvaluateOrg
from app.settings import Settings

logger = logging.getLogger(__name__)

# Stalled batches re-sent per reconciler pass (the next pass takes the rest).
RECONCILE_BATCH_LIMIT = 100


def evaluate_org_kind(settings: Settings) -> JobKind[EvaluateOrg]:
    return JobKind(
        type="evaluate_org",
        handle=evaluate_org,
        timeout=settings.job_timeout_seconds,
        max_attempts=settings.job_max_attempts,
        record_failure=record_failure,
        on_exhausted=fail_exhausted_job,
        on_dead_letter=redrive_dead_letter,
        reconcile=resend_stalled_batches,
    )


async def record_failure(context: AppContext, job: EvaluateOrg, error: str) -> int:
    """One more failed attempt of the batch's job; returns how many there have been."""
    async with context.sessions() as session:
        failures = await session.scalar(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == job.batch_id)
            .values(job_failures=EvaluationBatch.job_failures + 1)
            .returning(EvaluationBatch.job_failures)
        )
        await session.commit()
    # A job for a batch that is not there has nothing left to retry.
    return failures if failures is not None else context.settings.job_max_attempts


async def fail_exhausted_job(context: AppContext, job: EvaluateOrg, error: str) -> None:
    """The job kept failing until its attempts ran out: the batch fails with the last error."""
    with log_context(org_id=job.org_id, batch_id=job.batch_id):
        async with context.sessions() as session:
            exists = await session.get(EvaluationBatch, job.batch_id)
        if exists is not None:
            await mark_batch_failed(context, job.batch_id, f"retries_exhausted: {error}")


async def redrive_dead_letter(context: AppContext, job: EvaluateOrg) -> bool:
    """A crash (or restarts beyond the queue's maxReceiveCount) sent the job to the DLQ: send
    it again while its batch is unfinished, up to JOB_MAX_REDRIVES times."""
    with log_context(org_id=job.org_id, batch_id=job.batch_id):
        async with context.sessions() as session:
            redrives = await session.scalar(
                update(EvaluationBatch)
                .where(EvaluationBatch.id == job.batch_id, EvaluationBatch.status.in_(LIVE))
                .values(job_redrives=EvaluationBatch.job_redrives + 1, last_enqueued_at=db_now())
                .returning(EvaluationBatch.job_redrives)
            )
            await session.commit()
        if redrives is None:
            return False  # finished (or gone): the dead letter has nothing left to do
        limit = context.settings.job_max_redrives
        if redrives > limit:
            await mark_batch_failed(
                context,
                job.batch_id,
                f"redrive_limit: the job reached the dead-letter queue {redrives} times",
            )
            return False
        logger.warning("job redriven from the dead-letter queue", extra={"redrives": redrives})
        return True


async def resend_stalled_batches(context: AppContext) -> None:
    """Batches nobody works on — the enqueue after commit failed, or their worker died — are
    sent again. Activity and the stall window are measured on the database's clock.

    A backlog is not a stall: while jobs wait in the queue, a batch that no worker has taken up
    since it was last sent may be one of them, so it is left alone until the queue has none
    waiting (its job then is lost, not late). Each is claimed by moving its
    `last_enqueued_at`, so concurrent reconcilers send it once.
    """
    queue = context.require_queue()
    cutoff = db_now(-context.settings.stall_after_seconds)
    quiet = [
        EvaluationBatch.status.in_(LIVE),
        func.coalesce(EvaluationBatch.heartbeat_at, EvaluationBatch.last_enqueued_at) < cutoff,
        EvaluationBatch.last_enqueued_at < cutoff,
    ]
    depth = await queue.depth()
    if depth["visible"] + depth["delayed"] > 0:
        quiet.append(
            not_(
                and_(
                    EvaluationBatch.status == BatchStatus.PENDING,
                    or_(
                        EvaluationBatch.heartbeat_at.is_(None),
                        EvaluationBatch.heartbeat_at < EvaluationBatch.last_enqueued_at,
                    ),
                )
            )
        )
    async with context.sessions() as session:
        claimed = await claim_each(
            session,
            EvaluationBatch,
            quiet,
            {"last_enqueued_at": db_now()},
            limit=RECONCILE_BATCH_LIMIT,
        )
        await session.commit()
    for batch in claimed:
        await enqueue_batch(queue, batch, reason="reconciler")
