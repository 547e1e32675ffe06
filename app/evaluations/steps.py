"""Step bookkeeping: each step's start, end and error is recorded on the batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from sqlalchemy import update

from app.clock import Clock
from app.context import AppContext
from app.db.models import BatchStep, StepStatus
from app.db.session import SessionFactory
from app.db.upsert import upsert
from app.errors import describe_error

logger = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def recorded_step(context: AppContext, batch_id: uuid.UUID, name: str) -> AsyncIterator[None]:
    sessions, clock = context.statements, context.clock
    await _begin(sessions, clock, batch_id, name)
    logger.info("step started", extra={"step": name})
    try:
        yield
    except BaseException as exc:
        error = describe_error(exc)
        logger.warning("step failed", extra={"step": name, "error": error}, exc_info=exc)
        try:
            await asyncio.shield(_finish(sessions, clock, batch_id, name, StepStatus.FAILED, error))
        except Exception as record_error:
            # The step's own error is what matters; the database may be why it failed.
            logger.warning(
                "could not record the step's failure",
                extra={"step": name, "error": describe_error(record_error)},
            )
        raise
    await _finish(sessions, clock, batch_id, name, StepStatus.COMPLETED, None)
    logger.info("step completed", extra={"step": name})


async def _begin(sessions: SessionFactory, clock: Clock, batch_id: uuid.UUID, name: str) -> None:
    now = clock.now()
    # One upsert, its own transaction: two workers starting the same step at once both count
    # their attempt, and the primary key settles who inserts.
    insert = upsert(sessions, BatchStep).values(
        batch_id=batch_id, name=name, status=StepStatus.RUNNING, attempts=1, started_at=now
    )
    async with sessions() as session:
        await session.execute(
            insert.on_conflict_do_update(
                index_elements=["batch_id", "name"],
                set_={
                    "status": StepStatus.RUNNING,
                    "attempts": BatchStep.attempts + 1,
                    "started_at": now,
                    "finished_at": None,
                    "error": None,
                },
            )
        )
        await session.commit()


async def _finish(
    sessions: SessionFactory,
    clock: Clock,
    batch_id: uuid.UUID,
    name: str,
    status: StepStatus,
    error: str | None,
) -> None:
    async with sessions() as session:
        await session.execute(
            update(BatchStep)
            .where(BatchStep.batch_id == batch_id, BatchStep.name == name)
            .values(status=status, finished_at=clock.now(), error=error)
        )
        await session.commit()
