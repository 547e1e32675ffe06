"""Queries over a batch's question runs that more than one step or endpoint asks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.clock import db_now
from app.db.models import QuestionRun, RunStatus

# A run's unique key: its cell and its sample index.
RUN_KEY = ["batch_id", "question_id", "engine_id", "location", "sample"]


@dataclass(frozen=True, slots=True)
class SamplePlan:
    """How often each cell is asked: `samples` times, and — when `max_samples` is set — once
    more at a time while its answers disagree, up to `max_samples`."""

    samples: int
    max_samples: int | None

    @property
    def most(self) -> int:
        """The most asks a cell may get: what is reserved and what the 402 estimate counts."""
        return max(self.samples, self.max_samples or 0)


async def status_counts(session: AsyncSession, batch_id: uuid.UUID) -> dict[RunStatus, int]:
    rows = await session.execute(
        select(QuestionRun.status, func.count())
        .where(QuestionRun.batch_id == batch_id)
        .group_by(QuestionRun.status)
    )
    return {status: count for status, count in rows.all()}


def in_flight() -> ColumnElement[bool]:
    """A run some worker holds a live lease on (in the database's time)."""
    return and_(QuestionRun.status == RunStatus.RUNNING, QuestionRun.lease_expires_at >= db_now())
