"""Step bookkeeping: each step's start, end and error is recorded on the batch.

A job's steps are kept in memory and written together, one round trip for several steps: before
the step that takes long (so that it shows as running while it runs), when a step fails, in the
transaction that ends the batch (so that a batch read as ended shows the steps that ended it),
and when the job ends. A statement per start and per end was a third of a small batch's round
trips. A worker that dies between two writes leaves its last steps unrecorded; the job that
takes the batch over records them when it runs them again (every step is idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import Clock
from app.db.models import BatchStep, StepStatus
from app.db.session import SessionFactory
from app.db.upsert import dialect_insert
from app.errors import describe_error

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Step:
    name: str
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None = None
    error: str | None = None
    # 1 until this attempt of the step has been written: an attempt is counted once, however
    # often its row is written.
    new_attempt: int = 1


class StepLog:
    """The steps of one job on one batch."""

    def __init__(self, sessions: SessionFactory, clock: Clock, batch_id: uuid.UUID) -> None:
        self._sessions = sessions
        self._clock = clock
        self._batch_id = batch_id
        self._unwritten: dict[str, _Step] = {}

    @contextlib.asynccontextmanager
    async def step(self, name: str, *, show_running: bool = False) -> AsyncIterator[None]:
        """Record the step around its work; `show_running` writes it (and what came before)
        before the work starts, for a step that takes long."""
        step = _Step(name, StepStatus.RUNNING, self._clock.now())
        self._unwritten[name] = step
        logger.info("step started", extra={"step": name})
        if show_running:
            await self.write()
        try:
            yield
        except BaseException as exc:
            error = describe_error(exc)
            logger.warning("step failed", extra={"step": name, "error": error}, exc_info=exc)
            self._end(step, StepStatus.FAILED, error)
            try:
                await asyncio.shield(self.write())
            except Exception as record_error:
                # The step's own error is what matters; the database may be why it failed.
                logger.warning(
                    "could not record the step's failure",
                    extra={"step": name, "error": describe_error(record_error)},
                )
            raise
        self._end(step, StepStatus.COMPLETED, None)
        logger.info("step completed", extra={"step": name})

    def forget(self) -> None:
        """Nothing of this job is to be recorded (its batch is not there to record it on)."""
        self._unwritten.clear()

    def _end(self, step: _Step, status: StepStatus, error: str | None) -> None:
        # Written when next the log is: `write` leaves a running step to be written again
        # when it ends; `commit_ending` has written it as ended already.
        step.status, step.finished_at, step.error = status, self._clock.now(), error

    async def write(self) -> None:
        """Every step not yet written as it is now, upserted in one round trip of its own: two
        workers running the same step at once both count their attempt, and the primary key
        settles who inserts."""
        if not self._unwritten:
            return
        steps = list(self._unwritten.values())
        async with self._sessions() as session:
            await _upsert(session, [self._row(step) for step in steps])
            await session.commit()
        for step in steps:
            step.new_attempt = 0
            if step.status != StepStatus.RUNNING:
                del self._unwritten[step.name]

    async def commit_ending(self, session: AsyncSession) -> None:
        """Commit the caller's transaction that ends the batch with every step not yet written
        upserted in it, the steps still running (those that end it) as completed: whoever reads
        the batch ended reads the steps that ended it. Should the commit fail, the steps stay
        unwritten, and a step's failure is recorded as usual."""
        steps = list(self._unwritten.values())
        if steps:
            ended_at = self._clock.now()
            await _upsert(session, [self._row(step, ended_at) for step in steps])
        await session.commit()
        # Written as they end: what the steps still running do next changes nothing stored.
        for step in steps:
            del self._unwritten[step.name]

    def _row(self, step: _Step, ended_at: datetime | None = None) -> dict[str, object]:
        """The step's row; with `ended_at`, a running step as completed then."""
        ending = ended_at is not None and step.status == StepStatus.RUNNING
        return {
            "batch_id": self._batch_id,
            "name": step.name,
            "status": StepStatus.COMPLETED if ending else step.status,
            "attempts": step.new_attempt,
            "started_at": step.started_at,
            "finished_at": ended_at if ending else step.finished_at,
            "error": step.error,
        }


async def _upsert(session: AsyncSession, rows: list[dict[str, object]]) -> None:
    # Core's executemany (atomic on both drivers), of a statement built once.
    connection = await session.connection()
    await connection.execute(_upsert_steps(connection.dialect.name), rows)


@functools.cache
def _upsert_steps(dialect: str) -> Any:
    """A step's row inserted, or its existing row updated with the attempt added."""
    insert = dialect_insert(dialect, BatchStep)
    return insert.on_conflict_do_update(
        index_elements=["batch_id", "name"],
        set_={
            "status": insert.excluded.status,
            "attempts": BatchStep.attempts + insert.excluded.attempts,
            "started_at": insert.excluded.started_at,
            "finished_at": insert.excluded.finished_at,
            "error": insert.excluded.error,
        },
    )
