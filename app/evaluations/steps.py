"""Step bookkeeping: each step's start, end and error is recorded on the batch."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import update

from app.db.models import BatchStep, StepStatus
from app.db.session import SessionFactory
from app.db.types import utcnow
from app.db.upsert import insert_ignoring_conflicts

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def recorded_step(
    sessions: SessionFactory, batch_id: uuid.UUID, name: str
) -> AsyncIterator[None]:
    await _begin(sessions, batch_id, name)
    logger.info("step started", extra={"step": name})
    try:
        yield
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        await _finish(sessions, batch_id, name, StepStatus.FAILED, error[:2000])
        logger.warning("step failed", extra={"step": name, "error": error})
        raise
    await _finish(sessions, batch_id, name, StepStatus.COMPLETED, None)
    logger.info("step completed", extra={"step": name})


async def _begin(sessions: SessionFactory, batch_id: uuid.UUID, name: str) -> None:
    now = utcnow()
    async with sessions() as session:
        # Two workers may start the same step at once: the primary key settles who inserts.
        await session.execute(
            insert_ignoring_conflicts(session, BatchStep, ["batch_id", "name"]).values(
                batch_id=batch_id, name=name, status=StepStatus.RUNNING, attempts=0, started_at=now
            )
        )
        await session.execute(
            update(BatchStep)
            .where(BatchStep.batch_id == batch_id, BatchStep.name == name)
            .values(
                status=StepStatus.RUNNING,
                attempts=BatchStep.attempts + 1,
                started_at=now,
                finished_at=None,
                error=None,
            )
        )
        await session.commit()


async def _finish(
    sessions: SessionFactory,
    batch_id: uuid.UUID,
    name: str,
    status: StepStatus,
    error: str | None,
) -> None:
    async with sessions() as session:
        await session.execute(
            update(BatchStep)
            .where(BatchStep.batch_id == batch_id, BatchStep.name == name)
            .values(status=status, finished_at=utcnow(), error=error)
        )
        await session.commit()
