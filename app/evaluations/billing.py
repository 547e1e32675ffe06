"""What a batch will cost a partner, and charging each completed run exactly once."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.audit import record_audit
from app.db.models import Partner, QuestionRun, RunStatus, UsageLedgerEntry
from app.db.types import utcnow
from app.db.upsert import insert_ignoring_conflicts
from app.errors import InsufficientBalanceError


async def uncharged_runs(session: AsyncSession, batch_id: uuid.UUID) -> int:
    """Runs that may still be charged: not yet charged and not given up on."""
    count = await session.scalar(
        select(func.count())
        .select_from(QuestionRun)
        .where(
            QuestionRun.batch_id == batch_id,
            QuestionRun.charged_at.is_(None),
            QuestionRun.status != RunStatus.FAILED,
        )
    )
    return count or 0


def require_balance(partner: Partner, runs: int) -> None:
    required = partner.price_per_run * runs
    if partner.balance < required:
        raise InsufficientBalanceError(runs=runs, required=required, available=partner.balance)


async def charge_completed_runs(
    session: AsyncSession, batch_id: uuid.UUID, partner_id: uuid.UUID, actor: str
) -> int:
    """Charge every completed, uncharged run of the batch; returns how many were charged.

    The partner row is locked first, so concurrent chargers queue up and each later one sees
    the runs the earlier one marked; the ledger's unique run id is the final guard.
    """
    partner = await session.scalar(
        select(Partner).where(Partner.id == partner_id).with_for_update()
    )
    if partner is None:
        raise RuntimeError(f"partner {partner_id} vanished")
    run_ids = list(
        await session.scalars(
            select(QuestionRun.id).where(
                QuestionRun.batch_id == batch_id,
                QuestionRun.status == RunStatus.COMPLETED,
                QuestionRun.charged_at.is_(None),
            )
        )
    )
    if not run_ids:
        await session.commit()
        return 0
    price = partner.price_per_run
    inserted = await session.execute(
        insert_ignoring_conflicts(session, UsageLedgerEntry, ["question_run_id"])
        .values(
            [
                {
                    "id": uuid.uuid4(),
                    "question_run_id": run_id,
                    "batch_id": batch_id,
                    "partner_id": partner_id,
                    "amount": price,
                    "created_at": utcnow(),
                }
                for run_id in run_ids
            ]
        )
        .returning(UsageLedgerEntry.question_run_id)
    )
    charged = [row[0] for row in inserted]
    await session.execute(
        update(QuestionRun).where(QuestionRun.id.in_(run_ids)).values(charged_at=utcnow())
    )
    amount = price * len(charged)
    partner.balance = partner.balance - amount
    if charged:
        record_audit(
            session,
            actor=actor,
            action="batch.charged",
            resource_type="batch",
            resource_id=batch_id,
            details={"runs": len(charged), "amount": str(amount), "price_per_run": str(price)},
        )
    await session.commit()
    return len(charged)


def money_sum(values: list[Decimal | None]) -> Decimal:
    return sum((v for v in values if v is not None), Decimal(0))
