"""kill -9: two `senso worker` processes share the work of several batches while one of them is
killed at random points, again and again, and replaced. Whatever the timing, every batch ends,
every completed run is charged exactly once, and the money adds up to the cent.

Bounded: at most KILLS kills, each after 1 to 3 more runs completed, and a deadline for the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import uuid
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import func, select

from app.context import AppContext
from app.db.models import EvaluationBatch, Partner, QuestionRun, RunStatus, UsageLedgerEntry
from app.settings import Settings
from tests.factories import create_org, create_partner, expect
from tests.processes import WorkerProcess, worker_environment, worker_process
from tests.worker_support import eventually

# Runs processes of its own: never beside another test that does (see pyproject.toml).
pytestmark = pytest.mark.xdist_group("processes")

KILLS = 6
ORGS = 10
INITIAL = Decimal("10.00")
PRICE = Decimal("0.05")
# Quick to notice a crash: messages reappear after 5 s, leases end after 1.5 s, and the
# reconciler looks every half second.
CRASH_ENV = {
    # Slow enough that the work outlasts the kills and restarts.
    "SIMULATED_LATENCY_MS": "200",
    "RUN_CONCURRENCY": "1",
    "WORKER_CONCURRENCY": "2",
    "SQS_VISIBILITY_TIMEOUT": "5",
    "RUN_LEASE_SECONDS": "1.5",
    "RECONCILE_INTERVAL_SECONDS": "0.5",
    "STALL_AFTER_SECONDS": "1",
    "JOB_RETRY_BASE_SECONDS": "0",
    "WORKER_DRAIN_SECONDS": "0",
    "LOG_LEVEL": "INFO",
}
SEED = int(os.environ.get("CRASH_TEST_SEED", "20261129"))


async def completed_runs(context: AppContext) -> int:
    async with context.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(QuestionRun)
            .where(QuestionRun.status == RunStatus.COMPLETED)
        )
    return count or 0


def ready(workers: list[WorkerProcess]) -> list[WorkerProcess]:
    """Workers past their start-up (a process still importing has nothing to lose)."""
    return [w for w in workers if any('"worker started"' in line for line in w.stderr)]


async def live_batches(context: AppContext) -> int:
    async with context.sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(EvaluationBatch)
            .where(EvaluationBatch.status.in_(["pending", "running"]))
        )
    return count or 0


async def test_workers_killed_at_random_points_lose_nothing_and_charge_nothing_twice(
    api: httpx.AsyncClient, context: AppContext, settings: Settings
) -> None:
    rng = random.Random(SEED)
    partner_id = await create_partner(api, balance=str(INITIAL), price=str(PRICE))
    batches = []
    for n in range(ORGS):
        setup = await create_org(
            api, partner_id, name=f"Org {n}", questions=2, engines=("openai", "anthropic")
        )
        batches.append(expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202))
    total_runs = sum(batch["total_runs"] for batch in batches)
    env = worker_environment(settings, **CRASH_ENV)

    kills = 0
    async with contextlib.AsyncExitStack() as stack:
        workers: list[WorkerProcess] = [
            await stack.enter_async_context(worker_process(env)) for _ in range(2)
        ]
        while kills < KILLS and await live_batches(context):
            target = await completed_runs(context) + rng.randint(1, 3)

            async def progressed(target: int = target) -> bool:
                return (
                    await completed_runs(context) >= target and bool(ready(workers))
                ) or not await live_batches(context)

            await eventually(progressed, limit=60, what=f"{target} completed runs")
            # A random point in whatever the workers are doing now.
            await asyncio.sleep(rng.uniform(0, 0.3))
            victim = rng.choice(ready(workers))
            victim.process.kill()  # SIGKILL: no drain, no release, no goodbye
            await victim.process.wait()
            kills += 1
            workers.remove(victim)
            workers.append(await stack.enter_async_context(worker_process(env)))

        async def all_ended() -> bool:
            return await live_batches(context) == 0

        await eventually(all_ended, limit=120, interval=0.2, what="every batch to end")

    assert kills >= KILLS, f"the batches ended after {kills} kills: not enough work"
    async with context.sessions() as session:
        statuses = list(await session.scalars(select(EvaluationBatch.status)))
        completed = await session.scalar(
            select(func.count())
            .select_from(QuestionRun)
            .where(QuestionRun.status == RunStatus.COMPLETED)
        )
        charged = await session.scalar(
            select(func.count()).select_from(QuestionRun).where(QuestionRun.charged_at.is_not(None))
        )
        ledger_rows, ledger_runs = (
            await session.execute(
                select(func.count(), func.count(func.distinct(UsageLedgerEntry.question_run_id)))
            )
        ).one()
        ledger_sum = sum(await session.scalars(select(UsageLedgerEntry.amount)), Decimal(0))
        partner = await session.get_one(Partner, uuid.UUID(partner_id))

    assert set(statuses) <= {"completed", "failed"}, statuses
    assert sum(status == "completed" for status in statuses) >= ORGS - 1, statuses
    assert ledger_rows == ledger_runs == completed == charged, (ledger_rows, completed, charged)
    assert completed <= total_runs
    assert ledger_sum == completed * PRICE
    assert partner.reserved == 0
    assert partner.balance + ledger_sum + partner.reserved == INITIAL
