"""`senso enqueue-all`: today's evaluation of every org, for a scheduled task.

Orgs go through the same admission code as `POST /orgs/{id}/evaluations`, a chunk of them at a
time: today's batches are created, reused or resumed set-based and committed, then their jobs
are sent. One org's problem never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select

from app.clock import Clock
from app.context import AppContext
from app.db.models import EvaluationBatch, Org
from app.errors import InsufficientBalanceError
from app.evaluations.admission import OrgOutcome, create_today_batches
from app.evaluations.schemas import EvaluationTrigger
from app.evaluations.service import enqueue_batches
from app.logging import log_context
from app.queue.sqs import SEND_BATCH_MAX, SqsQueue

logger = logging.getLogger(__name__)

SCHEDULER = "scheduler"
Outcome = Literal["enqueued", "existing", "skipped", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("enqueued", "existing", "skipped", "failed")
# Orgs whose batches one transaction creates: a few statements each chunk, whatever its size,
# and a chunk's partners locked no longer than its writes take.
CHUNK = 500


@dataclass(frozen=True, slots=True)
class OrgResult:
    org_id: uuid.UUID
    name: str
    outcome: Outcome
    detail: str

    def line(self) -> str:
        return f"{self.outcome:<8}  {self.org_id}  {self.name}: {self.detail}"


def summary_line(results: list[OrgResult]) -> str:
    counts = Counter(result.outcome for result in results)
    return f"{len(results)} orgs: " + ", ".join(f"{counts[o]} {o}" for o in OUTCOMES)


class Pacer:
    """Spaces calls at least 1/per_second apart, so a schedule never sends a burst."""

    def __init__(self, per_second: float, clock: Clock) -> None:
        self._interval = 1.0 / per_second
        self._clock = clock
        self._next_slot: float | None = None

    async def wait(self) -> None:
        now = self._clock.monotonic()
        if self._next_slot is not None and self._next_slot > now:
            await self._clock.sleep(self._next_slot - now)
            now = self._next_slot
        self._next_slot = now + self._interval

    def done(self) -> None:
        """The call that waited has ended: the next one's interval counts from now, so calls
        that take a while never land closer together than the interval."""
        self._next_slot = self._clock.monotonic() + self._interval


async def enqueue_all(
    context: AppContext,
    *,
    per_second: float,
    on_result: Callable[[OrgResult], None] = lambda _result: None,
    chunk: int = CHUNK,
) -> list[OrgResult]:
    """Evaluate every org today, in creation order; returns one result per org.

    The batches of `chunk` orgs at a time are created set-based in one transaction; once it
    has committed, their jobs go out in SendMessageBatch calls of up to 10 (and no more than
    `per_second`), the calls spaced so that no more than `per_second` jobs are sent in any
    second."""
    queue = context.require_queue()
    group = max(1, min(SEND_BATCH_MAX, math.floor(per_second)))
    pacer = Pacer(per_second / group, context.clock)
    async with context.sessions() as session:
        orgs = (await session.execute(select(Org.id, Org.name).order_by(Org.created_at))).all()
    results: list[OrgResult] = []
    waiting: list[_Ready] = []

    async def send_waiting() -> None:
        await pacer.wait()
        sent = await _send(queue, waiting)
        # A call lands at SQS any time until it answers: counting the next interval from its
        # end keeps any two calls but one a full second apart wherever they land.
        pacer.done()
        for result in sent:
            on_result(result)
            results.append(result)
        waiting.clear()

    chunks = iter([orgs[at : at + chunk] for at in range(0, len(orgs), chunk)])

    def prepare_next() -> asyncio.Task[list[OrgResult | _Ready]] | None:
        ahead = next(chunks, None)
        if ahead is None:
            return None
        return asyncio.create_task(_prepare(context, [(o.id, o.name) for o in ahead]))

    preparing = prepare_next()
    try:
        while preparing is not None:
            prepared = await preparing
            # The next chunk's batches are created while this one's jobs go out.
            preparing = prepare_next()
            for outcome in prepared:
                if isinstance(outcome, _Ready):
                    waiting.append(outcome)
                    if len(waiting) == group:
                        await send_waiting()
                    continue
                on_result(outcome)
                results.append(outcome)
        if waiting:
            await send_waiting()
    finally:
        if preparing is not None:
            preparing.cancel()
    return results


@dataclass(frozen=True, slots=True)
class _Ready:
    """Today's batch of an org, committed, whose job is still to send."""

    org_id: uuid.UUID
    name: str
    batch: EvaluationBatch


async def _prepare(
    context: AppContext, orgs: list[tuple[uuid.UUID, str]]
) -> list[OrgResult | _Ready]:
    """The orgs' batches, created in one transaction. Should it fail as a whole, each org is
    tried again in a transaction of its own: one org's problem never stops the others."""
    try:
        async with context.sessions() as session:
            loaded = await session.scalars(select(Org).where(Org.id.in_([i for i, _ in orgs])))
            by_id = {org.id: org for org in loaded}
            outcomes = await create_today_batches(
                session,
                context.clock,
                [by_id[org_id] for org_id, _ in orgs],
                EvaluationTrigger(triggered_by=SCHEDULER),
                actor=SCHEDULER,
                max_runs=context.settings.max_runs_per_batch,
            )
            await session.commit()
    except Exception as exc:
        if len(orgs) > 1:
            logger.exception("creating a chunk's batches failed; its orgs go one at a time")
            return [result for org in orgs for result in await _prepare(context, [org])]
        [(org_id, name)] = orgs
        with log_context(org_id=org_id):
            logger.exception("scheduled evaluation failed")
        return [OrgResult(org_id, name, "failed", f"{type(exc).__name__}: {exc}")]
    return [
        _result(org_id, name, outcome)
        for (org_id, name), outcome in zip(orgs, outcomes, strict=True)
    ]


def _result(org_id: uuid.UUID, name: str, outcome: OrgOutcome) -> OrgResult | _Ready:
    batch, error = outcome.batch, outcome.error
    if isinstance(error, InsufficientBalanceError):
        detail = f"insufficient_balance: required {error.required}, available {error.available}"
        return OrgResult(org_id, name, "skipped", detail)
    if error is not None:
        return OrgResult(org_id, name, "skipped", f"{error.code}: {error}")
    assert batch is not None  # an org that was not skipped has its batch
    if not outcome.enqueue:
        return OrgResult(
            org_id, name, "existing", f"today's batch {batch.id} is {batch.status.value}"
        )
    return _Ready(org_id, name, batch)


async def _send(queue: SqsQueue, ready: list[_Ready]) -> list[OrgResult]:
    """One SendMessageBatch for the jobs; a job not sent is left to the reconciler."""
    sent = await enqueue_batches(queue, [r.batch for r in ready], reason=SCHEDULER)
    return [
        OrgResult(r.org_id, r.name, "enqueued", f"batch {r.batch.id}, {r.batch.total_runs} runs")
        if was_sent
        else OrgResult(
            r.org_id,
            r.name,
            "failed",
            f"batch {r.batch.id} saved but not sent; the reconciler resends it",
        )
        for r, was_sent in zip(ready, sent, strict=True)
    ]
