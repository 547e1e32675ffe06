"""Re-scoring: the deterministic facts of stored answers found again with the org's current
names, aliases, domains and competitors — no engine call, no charge — as a `rescore_org` job.

What only the answer analysis could judge (sentiment, a negated mention, competitors only the
analyst named) is kept as judged; matching, list positions and citations are found anew. Each
run records the extraction version it was scored with; each ended batch gets its summary and
cell rows again, so trends follow.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.analysis.base import AnswerAnalysis, Sentiment
from app.analysis.merge import AnalysisOutcome
from app.audit import record_audit
from app.auth import Principal
from app.clock import Clock
from app.context import AppContext
from app.db.clock import db_now
from app.db.models import (
    BatchStatus,
    EvaluationBatch,
    Org,
    QuestionRun,
    RescoreRequest,
    RescoreStatus,
    RunCitation,
    RunCompetitor,
    RunMention,
    RunStatus,
)
from app.db.upsert import claim_each, rows_affected
from app.errors import InvalidInputError, NotFoundError
from app.evaluations.billing import lock_batch
from app.evaluations.matrix import ResultRows, Subject, insert_result_rows, result_rows
from app.evaluations.pipeline import load_subject
from app.evaluations.schemas import RescoreCreate
from app.evaluations.service import require_queue
from app.evaluations.summaries import store_summary
from app.extraction import EXTRACTION_VERSION, extract
from app.jobs import JobControl, JobInterruptedError, JobKind
from app.logging import log_context
from app.offload import read_off_loop
from app.orgs.service import get_org
from app.queue.messages import RescoreOrg
from app.queue.sqs import SqsQueue
from app.settings import Settings

logger = logging.getLogger(__name__)

MAX_RESCORE_DAYS = 366
ENDED = (BatchStatus.COMPLETED, BatchStatus.FAILED, BatchStatus.CANCELLED)
OPEN = (RescoreStatus.PENDING, RescoreStatus.RUNNING)
RECONCILE_LIMIT = 100
_SENTIMENTS: dict[str, Sentiment] = {
    "positive": "positive",
    "neutral": "neutral",
    "negative": "negative",
}


async def request_rescore(
    session: AsyncSession,
    queue: SqsQueue | None,
    clock: Clock,
    principal: Principal,
    org_id: uuid.UUID,
    data: RescoreCreate,
) -> RescoreRequest:
    org = await get_org(session, principal, org_id)
    queue = require_queue(queue)
    if data.date_from > data.date_to:
        raise InvalidInputError(
            f"from ({data.date_from}) is after to ({data.date_to})", code="invalid_range"
        )
    if data.date_to - data.date_from >= timedelta(days=MAX_RESCORE_DAYS):
        raise InvalidInputError(
            f"a re-scoring spans at most {MAX_RESCORE_DAYS} days", code="invalid_range"
        )
    request = RescoreRequest(
        org_id=org.id,
        date_from=data.date_from,
        date_to=data.date_to,
        status=RescoreStatus.PENDING,
        requested_by=principal.actor,
        created_at=clock.now(),
        last_enqueued_at=clock.now(),
    )
    session.add(request)
    await session.flush()
    record_audit(
        session,
        actor=principal.actor,
        action="org.rescore_requested",
        resource_type="org",
        resource_id=org.id,
        details={
            "rescore_id": str(request.id),
            "from": str(data.date_from),
            "to": str(data.date_to),
        },
    )
    await session.commit()
    await _enqueue(queue, request)
    return request


async def get_rescore(
    session: AsyncSession, principal: Principal, org_id: uuid.UUID, rescore_id: uuid.UUID
) -> RescoreRequest:
    org = await get_org(session, principal, org_id)
    request = await session.get(RescoreRequest, rescore_id)
    if request is None or request.org_id != org.id:
        raise NotFoundError(f"re-scoring {rescore_id} not found")
    return request


async def _enqueue(queue: SqsQueue, request: RescoreRequest) -> None:
    """A failure is logged and left to the reconciler, never raised."""
    with log_context(org_id=request.org_id, rescore_id=request.id):
        try:
            await queue.send(RescoreOrg(org_id=request.org_id, rescore_id=request.id))
        except Exception:
            logger.exception("enqueue failed; the reconciler will send the job again")


def rescore_org_kind(settings: Settings) -> JobKind[RescoreOrg]:
    return JobKind(
        type="rescore_org",
        handle=rescore_org,
        timeout=settings.job_timeout_seconds,
        max_attempts=settings.job_max_attempts,
        record_failure=_record_failure,
        on_exhausted=_fail,
        on_dead_letter=_redrive,
        reconcile=_resend_stalled,
    )


async def rescore_org(context: AppContext, job: RescoreOrg, control: JobControl) -> None:
    async with context.sessions() as session:
        started = await session.execute(
            update(RescoreRequest)
            .where(RescoreRequest.id == job.rescore_id, RescoreRequest.status.in_(OPEN))
            .values(
                status=RescoreStatus.RUNNING,
                started_at=context.clock.now(),
                batches=0,
                runs=0,
                error=None,
            )
        )
        request = await session.get(RescoreRequest, job.rescore_id)
        org = await session.get(Org, job.org_id)
        await session.commit()
    if not rows_affected(started) or request is None or org is None:
        return  # already done, or gone
    subject = await load_subject(context, org)
    async with context.sessions() as session:
        batch_ids = list(
            await session.scalars(
                select(EvaluationBatch.id)
                .where(
                    EvaluationBatch.org_id == org.id,
                    EvaluationBatch.batch_date >= request.date_from,
                    EvaluationBatch.batch_date <= request.date_to,
                    EvaluationBatch.status.in_(ENDED),
                )
                .order_by(EvaluationBatch.batch_date)
            )
        )
    for batch_id in batch_ids:
        if control.stopping.is_set():
            # Draining: the message goes back; the batches done so far stay done.
            raise JobInterruptedError("the worker is draining")
        async with context.sessions() as session:
            runs = await rescore_batch(session, batch_id, subject, context.clock.now())
            await session.execute(
                update(RescoreRequest)
                .where(RescoreRequest.id == request.id)
                .values(
                    batches=RescoreRequest.batches + 1,
                    runs=RescoreRequest.runs + runs,
                    last_enqueued_at=db_now(),  # a heartbeat: the reconciler leaves it be
                )
            )
            await session.commit()
    async with context.sessions() as session:
        await session.execute(
            update(RescoreRequest)
            .where(RescoreRequest.id == request.id)
            .values(status=RescoreStatus.COMPLETED, completed_at=context.clock.now())
        )
        await session.commit()
    logger.info("re-scoring done", extra={"batches": len(batch_ids)})


async def rescore_batch(
    session: AsyncSession, batch_id: uuid.UUID, subject: Subject, now: datetime
) -> int:
    """Re-score one ended batch's completed answers and its summary; returns the answers."""
    batch = await lock_batch(session, batch_id)
    runs = list(
        await session.scalars(
            select(QuestionRun).where(
                QuestionRun.batch_id == batch_id,
                QuestionRun.status == RunStatus.COMPLETED,
                QuestionRun.answer_text.is_not(None),
                # A results page without the AI surface has no facts to find again.
                QuestionRun.surface_present.is_(True),
            )
        )
    )
    ids = [run.id for run in runs]
    judged = {
        m.run_id: m
        for m in await session.scalars(select(RunMention).where(RunMention.run_id.in_(ids)))
    }
    named_by_analyst: dict[uuid.UUID, list[str]] = {}
    for run_id, name in await session.execute(
        select(RunCompetitor.run_id, RunCompetitor.name).where(
            RunCompetitor.run_id.in_(ids), RunCompetitor.source == "analysis"
        )
    ):
        named_by_analyst.setdefault(run_id, []).append(name)
    for table in (RunMention, RunCompetitor, RunCitation):
        await session.execute(delete(table).where(table.run_id.in_(ids)))
    rescored: list[ResultRows] = []
    for run in runs:
        stored = run.raw_response or {}
        citations = [
            (str(c.get("url", "")), c.get("title"))
            for c in stored.get("citations", [])
            if isinstance(c, dict) and c.get("url")
        ]
        answer = run.answer_text or ""
        extraction = await read_off_loop(
            answer,
            extract,
            subject.profile,
            answer,
            citations,
            subject.variations,
            subject.brand.competitors,
        )
        outcome = (
            _as_judged(judged.get(run.id), named_by_analyst.get(run.id, []))
            if run.analysed
            else None
        )
        rescored.append(result_rows(run.id, extraction, outcome, subject))
        run.extraction_version = EXTRACTION_VERSION
    await insert_result_rows(session, rescored)
    await session.flush()
    if batch.summary is not None or batch.status == BatchStatus.COMPLETED:
        await store_summary(session, batch, now)
    return len(runs)


def _as_judged(mention: RunMention | None, competitors: list[str]) -> AnalysisOutcome:
    """What the analysis judged of the answer, as stored: it is not asked again."""
    sentiment = _SENTIMENTS.get(mention.sentiment or "") if mention is not None else None
    return AnalysisOutcome(
        AnswerAnalysis(
            competitors=tuple(competitors),
            sentiment=sentiment,
            negated=mention.negated if mention is not None else False,
            model="stored",
            input_tokens=0,
            output_tokens=0,
            cost=Decimal(0),
        )
    )


async def _record_failure(context: AppContext, job: RescoreOrg, error: str) -> int:
    async with context.sessions() as session:
        attempts = await session.scalar(
            update(RescoreRequest)
            .where(RescoreRequest.id == job.rescore_id)
            .values(attempts=RescoreRequest.attempts + 1, error=error[:500])
            .returning(RescoreRequest.attempts)
        )
        await session.commit()
    return attempts if attempts is not None else context.settings.job_max_attempts


async def _fail(context: AppContext, job: RescoreOrg, error: str) -> None:
    async with context.sessions() as session:
        await session.execute(
            update(RescoreRequest)
            .where(RescoreRequest.id == job.rescore_id, RescoreRequest.status.in_(OPEN))
            .values(
                status=RescoreStatus.FAILED,
                error=f"retries_exhausted: {error}"[:500],
                completed_at=context.clock.now(),
            )
        )
        await session.commit()


async def _redrive(context: AppContext, job: RescoreOrg) -> bool:
    async with context.sessions() as session:
        status = await session.scalar(
            select(RescoreRequest.status).where(RescoreRequest.id == job.rescore_id)
        )
    return status in OPEN


async def _resend_stalled(context: AppContext) -> None:
    """Open re-scorings not sent (or not worked on) for STALL_AFTER_SECONDS are sent again."""
    queue = context.require_queue()
    cutoff = db_now(-context.settings.stall_after_seconds)
    stalled = (RescoreRequest.status.in_(OPEN), RescoreRequest.last_enqueued_at < cutoff)
    async with context.sessions() as session:
        claimed = await claim_each(
            session,
            RescoreRequest,
            stalled,
            {"last_enqueued_at": db_now(), "status": RescoreStatus.PENDING},
            limit=RECONCILE_LIMIT,
        )
        await session.commit()
    for request in claimed:
        await _enqueue(queue, request)
