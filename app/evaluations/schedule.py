"""`senso enqueue-all`: today's evaluation of every org, for a scheduled task.

Each org goes through the same service code as `POST /orgs/{id}/evaluations`: today's batch is
created, reused or resumed and committed, then its job is sent. One org's problem never stops
the others.
"""

from __future__ import annotations

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
from app.errors import DomainError, InsufficientBalanceError
from app.evaluations.schemas import EvaluationTrigger
from app.evaluations.service import get_or_create_today_batch
from app.logging import log_context
from app.queue.messages import EvaluateOrg
from app.queue.sqs import SEND_BATCH_MAX, SqsQueue

logger = logging.getLogger(__name__)

SCHEDULER = "scheduler"
Outcome = Literal["enqueued", "existing", "skipped", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("enqueued", "existing", "skipped", "failed")


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
) -> list[OrgResult]:
    """Evaluate every org today, in creation order; returns one result per org.

    Jobs go out in SendMessageBatch calls of up to 10 (and no more than `per_second`), the
    calls spaced so that no more than `per_second` jobs are sent in any second."""
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

    for org_id, name in orgs:
        with log_context(org_id=org_id):
            outcome = await _prepare(context, org_id, name)
        if isinstance(outcome, _Ready):
            waiting.append(outcome)
            if len(waiting) == group:
                await send_waiting()
            continue
        on_result(outcome)
        results.append(outcome)
    if waiting:
        await send_waiting()
    return results


@dataclass(frozen=True, slots=True)
class _Ready:
    """Today's batch of an org, committed, whose job is still to send."""

    org_id: uuid.UUID
    name: str
    batch: EvaluationBatch


async def _prepare(context: AppContext, org_id: uuid.UUID, name: str) -> OrgResult | _Ready:
    def result(outcome: Outcome, detail: str) -> OrgResult:
        return OrgResult(org_id, name, outcome, detail)

    try:
        async with context.sessions() as session:
            org = await session.get_one(Org, org_id)
            triggered = await get_or_create_today_batch(
                session,
                context.clock,
                org,
                EvaluationTrigger(triggered_by=SCHEDULER),
                actor=SCHEDULER,
                max_runs=context.settings.max_runs_per_batch,
            )
            await session.commit()
    except InsufficientBalanceError as exc:
        return result(
            "skipped", f"insufficient_balance: required {exc.required}, available {exc.available}"
        )
    except DomainError as exc:
        return result("skipped", f"{exc.code}: {exc}")
    except Exception as exc:
        logger.exception("scheduled evaluation failed")
        return result("failed", f"{type(exc).__name__}: {exc}")

    batch = triggered.batch
    if not triggered.enqueue:
        return result("existing", f"today's batch {batch.id} is {batch.status.value}")
    return _Ready(org_id, name, batch)


async def _send(queue: SqsQueue, ready: list[_Ready]) -> list[OrgResult]:
    """One SendMessageBatch for the jobs; a job not sent is left to the reconciler."""
    messages = [
        EvaluateOrg(org_id=r.batch.org_id, batch_id=r.batch.id, reason=SCHEDULER) for r in ready
    ]
    try:
        sent = await queue.send_batch(messages)
    except Exception:
        logger.exception("enqueue failed; the reconciler will send the jobs again")
        sent = [False] * len(ready)
    results = []
    for r, was_sent in zip(ready, sent, strict=True):
        batch = r.batch
        if was_sent:
            logger.info(
                "job enqueued",
                extra={"org_id": r.org_id, "batch_id": batch.id, "reason": SCHEDULER},
            )
            results.append(
                OrgResult(
                    r.org_id, r.name, "enqueued", f"batch {batch.id}, {batch.total_runs} runs"
                )
            )
        else:
            results.append(
                OrgResult(
                    r.org_id,
                    r.name,
                    "failed",
                    f"batch {batch.id} saved but not sent; the reconciler resends it",
                )
            )
    return results
