"""The evaluation pipeline of one org's batch (DESIGN §4), run by the worker for each job.

Every step is an idempotent function of the database, so a redelivered or resumed job repeats
nothing that was done: completed runs are never asked again and never charged twice.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Insert,
    String,
    Update,
    Uuid,
    bindparam,
    cast,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.analysis.merge import other_names
from app.analysis.variations import load_variations
from app.audit import record_audit
from app.context import AppContext
from app.db.clock import db_now
from app.db.models import AuditEvent, BatchStatus, EvaluationBatch, Org
from app.db.types import UTCDateTime, utcnow
from app.db.upsert import rows_affected
from app.engines.base import BrandContext
from app.errors import InsufficientBalanceError
from app.evaluations.billing import (
    admit,
    lock_batch,
    lock_partner,
    run_counts,
    still_chargeable,
    uncharged_runs,
)
from app.evaluations.lifecycle import LIVE, Ended, finish_batch, finish_locked, partner_of
from app.evaluations.matrix import MatrixRunner, Subject
from app.evaluations.runs import run_totals
from app.evaluations.steps import StepLog
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
        steps = StepLog(context.statements, context.clock, job.batch_id)
        await _evaluate(context, job, steps, control)
        await steps.write()


async def _evaluate(
    context: AppContext, job: EvaluateOrg, steps: StepLog, control: JobControl
) -> None:
    batch_id = job.batch_id
    try:
        async with steps.step("get_or_create_batch"):
            fetched = await get_or_create_batch(context, job)
        if fetched is None:
            # Nothing to record it on: a job for a batch that is not there is only logged.
            steps.forget()
            logger.warning("job names no batch of this org; dropped")
            return
        batch, org = fetched.batch, fetched.org
        if batch.status not in LIVE:
            logger.info("batch is %s; nothing to do", batch.status.value)
            return
        if batch.cancel_requested_at is None:
            async with steps.step("check_balance"):
                await check_balance(context, batch, org.partner_id, fetched.uncharged)
            async with steps.step("start_batch"):
                await start_batch(context, batch_id)
            async with steps.step("run_question_matrix", show_running=True):
                subject = await load_subject(context, org)
                runner = MatrixRunner(
                    context, batch_id, org.partner_id, subject, control, batch.max_samples
                )
                await runner.run()
            cancelled = runner.cancel_requested
        else:
            cancelled = True
        if cancelled:
            await cancel_batch(context, batch_id, org, steps)
            return
        # The completed runs are charged in the transaction that completes the batch: one
        # transaction for the two steps, each recorded.
        async with steps.step("track_usage"), steps.step("complete_batch"):
            await complete_batch(context, batch_id, org, steps=steps)
    except BatchFailedError as exc:
        await mark_batch_failed(context, batch_id, exc.reason, steps=steps)


@dataclass(frozen=True, slots=True)
class Fetched:
    batch: EvaluationBatch
    org: Org
    uncharged: int  # runs that may still be charged (`uncharged_runs`)


async def get_or_create_batch(context: AppContext, job: EvaluateOrg) -> Fetched | None:
    """The API created the batch and its runs in one transaction; here it is fetched, its
    attempt counted by the same statement (None when the job's org has no such batch)."""
    ids = {"f_batch_id": job.batch_id, "f_org_id": job.org_id}
    found: Sequence[Any] | None
    async with context.statements() as session:
        if session.get_bind().dialect.name == "postgresql":
            found = (await session.execute(_FETCH_WITH_ORG, ids)).first()
        else:
            alone = (await session.execute(_FETCH, ids)).first()
            # Read apart: SQLite's RETURNING names only the updated table's columns.
            found = None if alone is None else (*alone, await session.get_one(Org, job.org_id))
        await session.commit()
    if found is None:
        return None
    batch, uncharged_count, created_count, org = found
    return Fetched(batch, org, still_chargeable(batch, uncharged_count, created_count))


def _fetch() -> Update:
    """`get_or_create_batch`'s statement, built once: a statement built per job cost more CPU
    than its round trip. Nothing of the session is synchronised with it (the session is new)."""
    batch_id = bindparam("f_batch_id", type_=Uuid)
    return (
        update(EvaluationBatch)
        .where(EvaluationBatch.id == batch_id, EvaluationBatch.org_id == bindparam("f_org_id"))
        .values(job_attempts=EvaluationBatch.job_attempts + 1, heartbeat_at=db_now())
        .returning(EvaluationBatch, *run_counts(batch_id))
        .execution_options(synchronize_session=False)
    )


_FETCH = _fetch()
# The org comes back with the batch: UPDATE … FROM, without locking its row.
_FETCH_WITH_ORG = _fetch().where(Org.id == EvaluationBatch.org_id).returning(Org)


async def check_balance(
    context: AppContext, batch: EvaluationBatch, partner_id: uuid.UUID, uncharged: int
) -> None:
    """The batch's uncharged runs are covered by its reservation, or reserved now (a batch
    admitted before reservations, a price change): 402's counterpart, a permanent failure.

    Covered is read with the batch, without locks (reservations only shrink with the runs they
    cover), so the usual batch costs no statement here."""
    if batch.reserved_amount >= batch.price_per_run * uncharged:
        return
    async with context.sessions() as session:
        partner = await lock_partner(session, partner_id)
        batch = await lock_batch(session, batch.id)
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
    # The audit trail's and the rows' own times are the wall clock's, as everywhere they are
    # written (`record_audit`, `updated_at`); when the batch started is the injected clock's.
    started_at, written_at = context.clock.now(), utcnow()
    async with context.statements() as session:
        connection = await session.connection()
        if connection.dialect.name == "postgresql":
            # One statement, its own transaction: the batch starts and its audit event is
            # written together, or neither.
            await connection.execute(
                _START_AND_AUDIT,
                {
                    "s_batch_id": batch_id,
                    "s_started_at": started_at,
                    "s_written_at": written_at,
                    "s_event_id": uuid.uuid4(),
                },
            )
            return
        started = await session.execute(_start(batch_id, started_at, written_at))
        if rows_affected(started):
            record_audit(
                session,
                actor=WORKER_ACTOR,
                action="batch.started",
                resource_type="batch",
                resource_id=batch_id,
            )
        await session.commit()


def _start(batch_id: object, started_at: object, written_at: object) -> Update:
    """A pending batch moves to running (its first start is kept across resumes)."""
    return (
        update(EvaluationBatch)
        .where(EvaluationBatch.id == batch_id, EvaluationBatch.status == BatchStatus.PENDING)
        .values(
            status=BatchStatus.RUNNING,
            started_at=func.coalesce(EvaluationBatch.started_at, started_at),
            heartbeat_at=db_now(),
            updated_at=written_at,
        )
    )


def _start_and_audit() -> Insert:
    """`start_batch` on Postgres: the UPDATE as a CTE whose row, if any, the audit event's
    INSERT selects from."""
    written_at = bindparam("s_written_at", type_=UTCDateTime)
    started = (
        _start(
            bindparam("s_batch_id", type_=Uuid),
            bindparam("s_started_at", type_=UTCDateTime),
            written_at,
        )
        .returning(EvaluationBatch.id)
        .cte("started")
    )
    # `source` is left to the column's server default, as `record_audit` leaves it to its own.
    event = select(
        bindparam("s_event_id", type_=Uuid),
        written_at,
        literal(WORKER_ACTOR),
        literal("batch.started"),
        literal("batch"),
        cast(started.c.id, String),
        literal({}, JSON),
    )
    return (
        insert(AuditEvent)
        .from_select(
            [
                "id",
                "occurred_at",
                "actor",
                "action",
                "resource_type",
                "resource_id",
                "details",
            ],
            event,
            include_defaults=False,
        )
        .add_cte(started)
    )


_START_AND_AUDIT = _start_and_audit()


async def load_subject(context: AppContext, org: Org) -> Subject:
    """What the runs are analysed against, name variations included (cached per org)."""
    variations = await load_variations(
        context.sessions, context.analyst, org, reads=context.statements
    )
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


async def complete_batch(
    context: AppContext,
    batch_id: uuid.UUID,
    org: Org | None = None,
    *,
    steps: StepLog | None = None,
) -> None:
    """Charge the completed runs and complete the batch, in one transaction: never with runs
    still to ask, and failed instead when too many runs failed. `org`, the batch's, when the
    caller has it at hand; `steps`, the job's, are written in that transaction."""
    async with context.sessions() as session:
        partner_id = org.partner_id if org is not None else await partner_of(session, batch_id)
        partner = await lock_partner(session, partner_id)
        batch = await lock_batch(session, batch_id)
        if batch.status not in LIVE:
            return
        totals = await run_totals(session, batch_id)
        if totals.unfinished:
            # The job fails and is tried again.
            raise RuntimeError(f"{totals.unfinished} run(s) of the batch are still unfinished")
        total, failed = totals.runs, totals.failed
        if total and failed / total > context.settings.max_failed_run_ratio:
            raise BatchFailedError(
                f"too_many_failed_runs: {failed} of {total} runs failed "
                f"(threshold {context.settings.max_failed_run_ratio:.0%})"
            )
        details: dict[str, object] = {"runs": total, "failed_runs": failed}
        ended = await finish_locked(
            session,
            partner,
            batch,
            BatchStatus.COMPLETED,
            error=None,
            actor=WORKER_ACTOR,
            now=context.clock.now(),
            details=details,
            org=org,
            totals=totals,
        )
        await _commit_ending(session, steps)
    logger.info("batch completed", extra=details)
    await _tell(context, ended)


async def mark_batch_failed(
    context: AppContext, batch_id: uuid.UUID, reason: str, *, steps: StepLog | None = None
) -> None:
    """The batch fails for good: what completed is charged, the rest of its reservation is
    given back. `steps`, the job's, when a job's step failed it."""
    log = steps or StepLog(context.statements, context.clock, batch_id)
    async with log.step("mark_batch_failed"):
        details: dict[str, object] = {"reason": reason}
        if await _end(context, batch_id, BatchStatus.FAILED, reason, details, steps=log):
            logger.warning("batch failed", extra={"reason": reason})


async def cancel_batch(context: AppContext, batch_id: uuid.UUID, org: Org, steps: StepLog) -> None:
    """Cancelled while it ran (an operator, a deactivated org): nothing is in flight any more;
    what completed is charged, what was never asked is cancelled. The job's `steps` are
    written with the batch's end."""
    async with context.statements() as session:
        reason = await session.scalar(
            select(EvaluationBatch.error).where(EvaluationBatch.id == batch_id)
        )
    details: dict[str, object] = {"reason": reason}
    if await _end(context, batch_id, BatchStatus.CANCELLED, reason, details, org, steps=steps):
        logger.info("batch cancelled", extra={"reason": reason})


async def _end(
    context: AppContext,
    batch_id: uuid.UUID,
    status: BatchStatus,
    error: str | None,
    details: dict[str, object],
    org: Org | None = None,
    *,
    steps: StepLog | None = None,
) -> bool:
    """`steps`, when given, are written in the transaction that ends the batch."""
    async with context.sessions() as session:
        ended = await finish_batch(
            session,
            batch_id,
            status,
            error=error,
            actor=WORKER_ACTOR,
            now=context.clock.now(),
            details=details,
            org=org,
        )
        await _commit_ending(session, steps)
    await _tell(context, ended)
    return ended is not None


async def _commit_ending(session: AsyncSession, steps: StepLog | None) -> None:
    """Commit the transaction that ends a batch, the job's `steps` written in it when given."""
    if steps is None:
        await session.commit()
    else:
        await steps.commit_ending(session)


async def _tell(context: AppContext, ended: Ended | None) -> None:
    if ended is not None and ended.deliveries:
        # The batch's webhook events were written with its end; sent now it is committed.
        await dispatch_outbox(context)
