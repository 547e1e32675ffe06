"""Today's batch of each of many orgs, a statement per step rather than per org.

One org's trigger, `senso enqueue-all` and `POST /evaluations/bulk` all go through here, with
one set of rules: an inactive org, an empty matrix, too many runs or a short balance refuse
that org alone; today's batch is reused as it is, or resumed when it failed; a new batch
reserves the most it may cost against its partner's balance, the orgs of a partner admitted in
the order given while the balance lasts. Rows are taken in the order every writer takes them
(`billing`): the partners' rows, all at once in id order, then batches. The caller commits,
and sends the jobs only after that.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import insert_audits, record_audit
from app.auth import Principal
from app.clock import Clock
from app.db.clock import db_now
from app.db.models import BatchStatus, EvaluationBatch, Org, Partner, QuestionRun, RunStatus
from app.db.upsert import ignoring_conflicts, insert_ignoring_conflicts
from app.errors import ConflictError, DomainError, InsufficientBalanceError, NotFoundError
from app.evaluations.billing import (
    admit,
    lock_batch,
    lock_partners,
    reserve_new,
    uncharged_runs,
)
from app.evaluations.runs import RUN_KEY, SamplePlan
from app.evaluations.schemas import EvaluationTrigger, Outcome
from app.limits import check_batch_size
from app.orgs.service import Matrix, load_matrices


@dataclass(frozen=True, slots=True)
class OrgOutcome:
    """What became of one org: its batch (unless skipped), or why it was skipped."""

    org_id: uuid.UUID
    outcome: Outcome
    batch: EvaluationBatch | None = None
    error: DomainError | None = None

    @property
    def enqueue(self) -> bool:
        """Its job is to be sent once the transaction has committed."""
        return self.outcome in ("created", "resumed")


async def create_today_batches(
    session: AsyncSession,
    clock: Clock,
    orgs: Sequence[Org],
    trigger: EvaluationTrigger,
    *,
    actor: str,
    max_runs: int,
) -> list[OrgOutcome]:
    """Today's batch of each org, in the order given; leaves the transaction open."""
    active = [org for org in orgs if org.active]
    partners = await lock_partners(session, {org.partner_id for org in active})
    # Read once the partners are locked: a batch another trigger created is committed by now.
    today = await todays_batches(session, [org.id for org in active], clock.today())
    return await admit_orgs(
        session, clock, orgs, partners, today, trigger, actor=actor, max_runs=max_runs
    )


# One org with its partner's row locked and its batch of a day (built once: a trigger's CPU
# went more into building it than into running it).
_ONE_ORG = (
    select(Org, Partner, EvaluationBatch)
    .join(Partner, Partner.id == Org.partner_id)
    .outerjoin(
        EvaluationBatch,
        and_(
            EvaluationBatch.org_id == Org.id,
            EvaluationBatch.batch_date == bindparam("batch_date"),
        ),
    )
    .where(Org.id == bindparam("org_id"))
    .with_for_update(of=Partner)
    .execution_options(populate_existing=True)
)
# Another partner's org is never read, let alone its partner's row locked.
_ONE_PARTNERS_ORG = _ONE_ORG.where(Org.partner_id == bindparam("partner_id"))


async def get_or_create_today_batch(
    session: AsyncSession,
    clock: Clock,
    principal: Principal,
    org_id: uuid.UUID,
    trigger: EvaluationTrigger,
    *,
    max_runs: int,
) -> OrgOutcome:
    """One org's trigger: its `DomainError` raised (404, 409, 402) rather than returned.

    The org, its partner's row (locked) and today's batch come in one statement. Today's batch
    is read as it was when the statement began, before it waited for the lock: a batch another
    trigger created meanwhile makes the insert a conflict, and one it resumed is seen once the
    batch's own row is locked, so either way this trigger answers with that batch, sending no
    second job.
    """
    params: dict[str, Any] = {"org_id": org_id, "batch_date": clock.today()}
    query = _ONE_ORG
    if principal.partner_id is not None:
        query, params["partner_id"] = _ONE_PARTNERS_ORG, principal.partner_id
    row = (await session.execute(query, params)).first()
    if row is None:
        raise NotFoundError(f"org {org_id} not found")
    org, partner, batch = row
    [outcome] = await admit_orgs(
        session,
        clock,
        [org],
        {partner.id: partner},
        {} if batch is None else {org.id: batch},
        trigger,
        actor=principal.actor,
        max_runs=max_runs,
    )
    if outcome.error is not None:
        raise outcome.error
    return outcome


async def todays_batches(
    session: AsyncSession, org_ids: Collection[uuid.UUID], batch_date: date
) -> dict[uuid.UUID, EvaluationBatch]:
    if not org_ids:
        return {}
    batches = await session.scalars(
        select(EvaluationBatch)
        .where(EvaluationBatch.org_id.in_(list(org_ids)), EvaluationBatch.batch_date == batch_date)
        .execution_options(populate_existing=True)
    )
    return {batch.org_id: batch for batch in batches}


@dataclass(frozen=True, slots=True)
class _NewBatch:
    """A batch admitted but not yet written: its partner's reservation already holds it."""

    org: Org
    partner: Partner
    matrix: Matrix
    plan: SamplePlan
    reserved: Decimal
    values: dict[str, Any]


async def admit_orgs(
    session: AsyncSession,
    clock: Clock,
    orgs: Sequence[Org],
    partners: Mapping[uuid.UUID, Partner],
    today: Mapping[uuid.UUID, EvaluationBatch],
    trigger: EvaluationTrigger,
    *,
    actor: str,
    max_runs: int,
) -> list[OrgOutcome]:
    """Each org's outcome, in order. `partners` holds the active orgs' partners, their rows
    locked in this transaction; `today` their batches of today."""
    batch_date, now = clock.today(), clock.now()
    matrices = await load_matrices(
        session, [org.id for org in orgs if org.active and org.id not in today]
    )
    outcomes: dict[uuid.UUID, OrgOutcome] = {}
    new: list[_NewBatch] = []
    for org in orgs:
        try:
            if not org.active:
                raise ConflictError(f"org {org.id} is inactive", code="org_inactive")
            partner = partners[org.partner_id]
            batch = today.get(org.id)
            if batch is None:
                new.append(
                    _admit_new(org, partner, matrices[org.id], trigger, batch_date, now, max_runs)
                )
            elif batch.status == BatchStatus.FAILED:
                outcomes[org.id] = await _resume_apart(session, batch, partner, actor)
            else:
                outcomes[org.id] = OrgOutcome(org.id, "existing", batch)
        except DomainError as exc:
            outcomes[org.id] = OrgOutcome(org.id, "skipped", error=exc)
    outcomes.update(await _write_new(session, new, trigger, actor, batch_date, now))
    return [outcomes[org.id] for org in orgs]


def _admit_new(
    org: Org,
    partner: Partner,
    matrix: Matrix,
    trigger: EvaluationTrigger,
    batch_date: date,
    now: datetime,
    max_runs: int,
) -> _NewBatch:
    if matrix.cells == 0:
        raise ConflictError(
            f"org {org.id} has no {' and no '.join(matrix.missing_axes())} to evaluate",
            code="empty_matrix",
        )
    plan = SamplePlan(org.samples, org.max_samples)
    # Every ask counts, adaptive ones included: the most runs the batch may reach, which is
    # also what is reserved.
    most = matrix.cells * plan.most
    check_batch_size(max_runs, most)
    reserved = reserve_new(partner, most)
    values = {
        "id": uuid.uuid4(),
        "org_id": org.id,
        "batch_date": batch_date,
        "status": BatchStatus.PENDING,
        "total_runs": matrix.cells * plan.samples,
        "cells": matrix.cells,
        "samples": plan.samples,
        "max_samples": org.max_samples,
        "max_runs": most,
        "triggered_by": trigger.triggered_by,
        "user_id": trigger.user_id,
        "price_per_run": partner.price_per_run,
        "reserved_amount": reserved,
        "job_attempts": 0,
        "job_failures": 0,
        "job_redrives": 0,
        "created_at": now,
        "updated_at": now,
    }
    return _NewBatch(org, partner, matrix, plan, reserved, values)


async def _write_new(
    session: AsyncSession,
    new: list[_NewBatch],
    trigger: EvaluationTrigger,
    actor: str,
    batch_date: date,
    now: datetime,
) -> dict[uuid.UUID, OrgOutcome]:
    """The admitted batches in one INSERT, their runs in another, their audit events in a
    third."""
    if not new:
        return {}
    # One statement compiled once whatever the number of rows (insertmanyvalues pages them).
    inserted = await session.scalars(
        _batch_insert(session.get_bind().dialect.name), [n.values for n in new]
    )
    created = {batch.org_id: batch for batch in inserted}
    outcomes: dict[uuid.UUID, OrgOutcome] = {}
    lost = [n for n in new if n.org.id not in created]
    for n in lost:
        # A concurrent trigger created today's batch first (and sends its job): this one's
        # reservation is given back.
        n.partner.reserved = n.partner.reserved - n.reserved
    theirs = await todays_batches(session, [n.org.id for n in lost], batch_date)
    for org_id, batch in theirs.items():
        outcomes[org_id] = OrgOutcome(org_id, "existing", batch)
    written = [n for n in new if n.org.id in created]
    runs = [
        row
        for n in written
        for row in _run_rows(created[n.org.id].id, n.matrix, n.plan.samples, now)
    ]
    if runs:
        # On the connection: a plain executemany, without the ORM's bookkeeping for each row.
        connection = await session.connection()
        await connection.execute(insert_ignoring_conflicts(session, QuestionRun, RUN_KEY), runs)
    asked = trigger.model_dump()
    events = []
    for n in written:
        batch = created[n.org.id]
        details = {
            "org_id": str(n.org.id),
            "total_runs": batch.total_runs,
            "cells": n.matrix.cells,
            "samples": n.plan.samples,
            "max_samples": n.org.max_samples,
            "reserved": str(n.reserved),
            **asked,
        }
        events.append(("batch", batch.id, details))
        outcomes[n.org.id] = OrgOutcome(n.org.id, "created", batch)
    await insert_audits(session, actor, "batch.created", events)
    return outcomes


@functools.cache
def _batch_insert(dialect: str) -> Any:
    """New batches, skipping an org's that another trigger created first (built once)."""
    return (
        ignoring_conflicts(dialect, EvaluationBatch, ("org_id", "batch_date"))
        .values(last_enqueued_at=db_now())
        .returning(EvaluationBatch)
    )


def _run_rows(
    batch_id: uuid.UUID, matrix: Matrix, samples: int, now: datetime
) -> list[dict[str, Any]]:
    return [
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


async def _resume_apart(
    session: AsyncSession, batch: EvaluationBatch, partner: Partner, actor: str
) -> OrgOutcome:
    """`_resume` in a savepoint of its own: a resume its balance refuses leaves nothing
    behind, and what the other orgs of the transaction did stands."""
    org_id = batch.org_id
    try:
        async with session.begin_nested():
            return await _resume(session, batch, partner, actor)
    except InsufficientBalanceError as exc:
        return OrgOutcome(org_id, "skipped", error=exc)


async def _resume(
    session: AsyncSession, batch: EvaluationBatch, partner: Partner, actor: str
) -> OrgOutcome:
    """A failed batch runs again: completed runs are kept, failed runs are retried, and what
    is left to run is admitted again (with a fresh failure budget for its job)."""
    batch = await lock_batch(session, batch.id)
    if batch.status != BatchStatus.FAILED:
        # Another trigger resumed it while we waited for the partner's row; it sent the job.
        return OrgOutcome(batch.org_id, "existing", batch)
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
    return OrgOutcome(batch.org_id, "resumed", batch)
