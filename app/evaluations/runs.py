"""Queries over a batch's question runs that more than one step or endpoint asks."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import QuestionRun, RunStatus


async def status_counts(session: AsyncSession, batch_id: uuid.UUID) -> dict[RunStatus, int]:
    rows = await session.execute(
        select(QuestionRun.status, func.count())
        .where(QuestionRun.batch_id == batch_id)
        .group_by(QuestionRun.status)
    )
    return {status: count for status, count in rows.all()}
