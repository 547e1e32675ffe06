"""Read the database directly to check what the API and worker did."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import func, select

from app.context import AppContext
from app.db.models import AuditEvent, Partner, QuestionRun, RunStatus, UsageLedgerEntry


async def run_stats(context: AppContext, batch_id: str) -> dict[str, int]:
    async with context.sessions() as session:
        rows = (
            await session.execute(
                select(QuestionRun.status, func.count(), func.max(QuestionRun.attempts))
                .where(QuestionRun.batch_id == uuid.UUID(batch_id))
                .group_by(QuestionRun.status)
            )
        ).all()
        ledger = await session.scalar(
            select(func.count())
            .select_from(UsageLedgerEntry)
            .where(UsageLedgerEntry.batch_id == uuid.UUID(batch_id))
        )
    stats = {str(status): count for status, count, _ in rows}
    stats["max_attempts"] = max((attempts for _, _, attempts in rows), default=0)
    stats["ledger"] = ledger or 0
    stats["total"] = sum(count for _, count, _ in rows)
    stats.setdefault(RunStatus.COMPLETED.value, 0)
    return stats


async def balance(context: AppContext, partner_id: str) -> Decimal:
    async with context.sessions() as session:
        partner = await session.get_one(Partner, uuid.UUID(partner_id))
        return partner.balance


async def audit_actions(context: AppContext, resource_id: str) -> list[str]:
    async with context.sessions() as session:
        actions = await session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.resource_id == resource_id)
            .order_by(AuditEvent.occurred_at)
        )
        return list(actions)
