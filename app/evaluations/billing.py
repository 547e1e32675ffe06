"""Money: a batch reserves what it may cost before it runs, and charging spends the reservation.

Every change here happens with the partner's row locked (`lock_partner`), then the batch's,
then its runs' — the one order every writer of these rows takes them in, so two writers never
wait on each other in opposite orders:
- admission reserves the batch's uncharged runs × its price against the available amount
  (balance − reserved), or refuses with 402;
- charging writes one ledger row per completed run (unique per run) and moves that much out of
  both the balance and the reservation;
- a run that fails gives its share back; a batch that ends gives back whatever it still holds.
The database's CHECK constraints keep the balance and the available amount from going below
zero whatever the code does.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    ColumnElement,
    Numeric,
    ScalarSelect,
    Select,
    Uuid,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record_audit
from app.db.models import EvaluationBatch, Partner, QuestionRun, RunStatus, UsageLedgerEntry
from app.db.types import UTCDateTime
from app.db.upsert import insert_ignoring_conflicts
from app.errors import InsufficientBalanceError

# The row locks every batch's start, charge and end takes, built once: a statement built per
# call cost more CPU than its round trip.
_LOCK_PARTNER = (
    select(Partner)
    .where(Partner.id == bindparam("l_partner_id", type_=Uuid))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_LOCK_BATCH = (
    select(EvaluationBatch)
    .where(EvaluationBatch.id == bindparam("l_batch_id", type_=Uuid))
    .with_for_update()
    .execution_options(populate_existing=True)
)


async def lock_partner(session: AsyncSession, partner_id: uuid.UUID) -> Partner:
    partner = await session.scalar(_LOCK_PARTNER, {"l_partner_id": partner_id})
    if partner is None:
        raise RuntimeError(f"partner {partner_id} vanished")
    return partner


async def lock_partners(
    session: AsyncSession, partner_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, Partner]:
    """Many partners' rows locked in one statement, in id order: two callers locking
    overlapping sets take the rows in the same order, so neither waits on the other's."""
    if not partner_ids:
        return {}
    partners = await session.scalars(
        select(Partner)
        .where(Partner.id.in_(sorted(partner_ids)))
        .order_by(Partner.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    locked = {partner.id: partner for partner in partners}
    if missing := set(partner_ids) - locked.keys():
        raise RuntimeError(f"partners {sorted(missing)} vanished")
    return locked


async def lock_batch(session: AsyncSession, batch_id: uuid.UUID) -> EvaluationBatch:
    return (await session.scalars(_LOCK_BATCH, {"l_batch_id": batch_id})).one()


async def uncharged_runs(session: AsyncSession, batch: EvaluationBatch) -> int:
    """Runs that may still be charged: not yet charged, neither failed nor cancelled — and the
    adaptive asks the batch may still add (up to `max_runs`)."""
    uncharged, created = (await session.execute(select(*run_counts(batch.id)))).one()
    return still_chargeable(batch, uncharged, created)


def run_counts(
    batch_id: uuid.UUID | ColumnElement[uuid.UUID],
) -> tuple[ScalarSelect[int], ScalarSelect[int]]:
    """The batch's uncharged chargeable runs and all its runs, as two scalar subqueries: read
    beside another statement's columns, they cost no round trip of their own."""
    chargeable = QuestionRun.status.in_([RunStatus.PENDING, RunStatus.RUNNING, RunStatus.COMPLETED])
    runs = select(func.count()).where(QuestionRun.batch_id == batch_id)
    return (
        runs.where(chargeable, QuestionRun.charged_at.is_(None)).scalar_subquery(),
        runs.scalar_subquery(),
    )


def still_chargeable(batch: EvaluationBatch, uncharged: int, created: int) -> int:
    """`uncharged_runs` from the two `run_counts`."""
    return int(uncharged) + max(0, batch.max_runs - int(created))


def require_available(partner: Partner, runs: int, price: Decimal, held: Decimal) -> Decimal:
    """What `runs` at `price` need beyond `held` (already reserved for them); 402 when the
    partner's available amount cannot cover it."""
    required, covered = price * runs, partner.available + held
    if covered < required:
        raise InsufficientBalanceError(runs=runs, required=required, available=covered)
    return required - held


def reserve(partner: Partner, batch: EvaluationBatch, amount: Decimal) -> None:
    """Move `amount` (may be negative: an excess given back) into the batch's reservation."""
    partner.reserved = partner.reserved + amount
    batch.reserved_amount = batch.reserved_amount + amount


def reserve_new(partner: Partner, runs: int) -> Decimal:
    """Admit a batch not yet written: `runs` at the partner's current price move into the
    partner's reservation at once (402 when what is available cannot cover them). Returns
    the amount, which the batch is written with as its `reserved_amount`."""
    amount = require_available(partner, runs, partner.price_per_run, Decimal(0))
    partner.reserved = partner.reserved + amount
    return amount


async def admit(session: AsyncSession, partner: Partner, batch: EvaluationBatch, runs: int) -> None:
    """Reserve what `runs` uncharged runs of the batch may cost, at the partner's current price.

    The partner's row must be locked by the caller (`lock_partner`), in this transaction.
    """
    batch.price_per_run = partner.price_per_run
    held = batch.reserved_amount
    reserve(partner, batch, require_available(partner, runs, batch.price_per_run, held))
    await session.flush()


def release_run_share(partner: Partner, batch: EvaluationBatch) -> None:
    """A run that will not be charged gives its share of the reservation back."""
    reserve(partner, batch, -min(batch.price_per_run, batch.reserved_amount))


def release_all(partner: Partner, batch: EvaluationBatch) -> None:
    """A batch that ended gives back all it still holds."""
    reserve(partner, batch, -batch.reserved_amount)


async def charge_completed_runs(
    session: AsyncSession,
    partner: Partner,
    batch: EvaluationBatch,
    actor: str,
    now: datetime,
) -> int:
    """Charge every completed, uncharged run of the batch at its admitted price; returns how
    many were charged. Partner and batch rows must be locked by the caller; what changed of
    them is written with the caller's next flush or commit.

    The ledger's unique run id is the final guard against charging a run twice.
    """
    price = batch.price_per_run
    if session.get_bind().dialect.name == "postgresql":
        charging = {
            "c_batch_id": batch.id,
            "c_partner_id": partner.id,
            "c_price": price,
            "c_now": now,
        }
        charged = int(await session.scalar(_CHARGE, charging) or 0)
    else:
        charged = await _charge_each(session, batch, partner.id, now)
    amount = price * charged
    # The reservation covered these runs: the money leaves the balance and the reservation
    # together, so what is available does not change.
    reserve(partner, batch, -min(amount, batch.reserved_amount))
    partner.balance = partner.balance - amount
    if charged:
        record_audit(
            session,
            actor=actor,
            action="batch.charged",
            resource_type="batch",
            resource_id=batch.id,
            details={"runs": charged, "amount": str(amount), "price_per_run": str(price)},
        )
    return charged


def _due(batch_id: object) -> Select[uuid.UUID]:
    """The batch's completed runs not yet charged."""
    return select(QuestionRun.id).where(
        QuestionRun.batch_id == batch_id,
        QuestionRun.status == RunStatus.COMPLETED,
        QuestionRun.charged_at.is_(None),
    )


def _charge_statement() -> Select[int]:
    """Postgres charges in one statement: a ledger row for each due run (the unique run id
    skips one already there), every due run marked charged, and the count of rows written."""
    now = bindparam("c_now", type_=UTCDateTime)
    due = _due(bindparam("c_batch_id", type_=Uuid)).cte("due")
    ledger = (
        postgresql.insert(UsageLedgerEntry)
        .from_select(
            ["id", "question_run_id", "batch_id", "partner_id", "amount", "created_at"],
            select(
                func.gen_random_uuid(),
                due.c.id,
                bindparam("c_batch_id", type_=Uuid),
                bindparam("c_partner_id", type_=Uuid),
                bindparam("c_price", type_=Numeric(18, 6)),
                now,
            ),
            include_defaults=False,
        )
        .on_conflict_do_nothing(index_elements=["question_run_id"])
        .returning(UsageLedgerEntry.question_run_id)
        .cte("charged")
    )
    marked = (
        update(QuestionRun)
        .where(QuestionRun.id.in_(select(due.c.id)))
        .values(charged_at=now)
        .cte("marked")
    )
    return select(func.count()).select_from(ledger).add_cte(marked)


_CHARGE = _charge_statement()


async def _charge_each(
    session: AsyncSession, batch: EvaluationBatch, partner_id: uuid.UUID, now: datetime
) -> int:
    """`charge_completed_runs`'s writes as three statements, for SQLite."""
    run_ids = list(await session.scalars(_due(batch.id)))
    if not run_ids:
        return 0
    inserted = await session.execute(
        insert_ignoring_conflicts(session, UsageLedgerEntry, ["question_run_id"])
        .values(
            [
                {
                    "id": uuid.uuid4(),
                    "question_run_id": run_id,
                    "batch_id": batch.id,
                    "partner_id": partner_id,
                    "amount": batch.price_per_run,
                    "created_at": now,
                }
                for run_id in run_ids
            ]
        )
        .returning(UsageLedgerEntry.question_run_id)
    )
    charged = len(inserted.all())
    await session.execute(
        update(QuestionRun).where(QuestionRun.id.in_(run_ids)).values(charged_at=now)
    )
    return charged


def money_sum(values: list[Decimal | None]) -> Decimal:
    return sum((v for v in values if v is not None), Decimal(0))
