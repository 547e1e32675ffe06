"""`senso enqueue-all`: today's evaluation of every org, for a scheduled task.

Each org goes through the same service code as `POST /orgs/{id}/evaluations`: today's batch is
created, reused or resumed and committed, then its job is sent. One org's problem never stops
the others.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select

from app.clock import Clock
from app.context import AppContext
from app.db.models import Org
from app.errors import DomainError, InsufficientBalanceError
from app.evaluations.schemas import EvaluationTrigger
from app.evaluations.service import enqueue_batch, get_or_create_today_batch
from app.logging import log_context
from app.queue.sqs import SqsQueue

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


async def enqueue_all(
    context: AppContext,
    *,
    per_second: float,
    on_result: Callable[[OrgResult], None] = lambda _result: None,
) -> list[OrgResult]:
    """Evaluate every org today, in creation order; returns one result per org."""
    queue = context.require_queue()
    pacer = Pacer(per_second, context.clock)
    async with context.sessions() as session:
        orgs = (await session.execute(select(Org.id, Org.name).order_by(Org.created_at))).all()
    results = []
    for org_id, name in orgs:
        with log_context(org_id=org_id):
            result = await _evaluate(context, queue, pacer, org_id, name)
        on_result(result)
        results.append(result)
    return results


async def _evaluate(
    context: AppContext, queue: SqsQueue, pacer: Pacer, org_id: uuid.UUID, name: str
) -> OrgResult:
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
    await pacer.wait()
    if not await enqueue_batch(queue, batch, reason=SCHEDULER):
        return result("failed", f"batch {batch.id} saved but not sent; the reconciler resends it")
    return result("enqueued", f"batch {batch.id}, {batch.total_runs} runs")
