"""Queries over a batch's question runs that more than one step or endpoint asks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from decimal import Decimal

from sqlalchemy import ColumnElement, Select, Uuid, and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.clock import db_now
from app.db.models import BatchStatus, EvaluationBatch, QuestionRun, RunStatus, UsageLedgerEntry
from app.evaluations.billing import money_sum

_UNFINISHED = (RunStatus.PENDING, RunStatus.RUNNING)
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


@dataclass(frozen=True, slots=True)
class RunTotals:
    completed: int
    failed: int
    cancelled: int
    cost: Decimal
    simulated: bool
    charged_runs: int
    charged_amount: Decimal
    unfinished: int = 0  # pending or running

    @property
    def runs(self) -> int:
        return self.completed + self.failed + self.cancelled + self.unfinished

    def with_charges(self, runs: int, amount: Decimal) -> RunTotals:
        """As they are once `runs` more were charged `amount`."""
        return replace(
            self, charged_runs=self.charged_runs + runs, charged_amount=self.charged_amount + amount
        )


def _totals() -> Select[int, int, int, int, Decimal | None, bool | None, int, Decimal | None]:
    """`run_totals`' statement on Postgres, built once (per call it cost more CPU than its
    round trip)."""
    batch_id = bindparam("t_batch_id", type_=Uuid)
    charged = UsageLedgerEntry.batch_id == batch_id
    return select(
        func.count().filter(QuestionRun.status == RunStatus.COMPLETED),
        func.count().filter(QuestionRun.status == RunStatus.FAILED),
        func.count().filter(QuestionRun.status == RunStatus.CANCELLED),
        func.count().filter(QuestionRun.status.in_(_UNFINISHED)),
        func.sum(QuestionRun.cost),
        func.bool_or(QuestionRun.simulated),
        select(func.count()).where(charged).scalar_subquery(),
        select(func.sum(UsageLedgerEntry.amount)).where(charged).scalar_subquery(),
    ).where(QuestionRun.batch_id == batch_id)


_TOTALS = _totals()


async def run_totals(session: AsyncSession, batch_id: uuid.UUID) -> RunTotals:
    """A batch's run counts, cost and charges. On Postgres one aggregate statement, whatever
    the batch's size (NUMERIC sums are exact); SQLite keeps money as text, which SUM() would
    turn into a float, so there the embedded database's few rows are summed here."""
    if session.get_bind().dialect.name == "postgresql":
        row = (await session.execute(_TOTALS, {"t_batch_id": batch_id})).one()
        completed, failed, cancelled, unfinished, cost, simulated, charged_runs, amount = row
        return RunTotals(
            completed,
            failed,
            cancelled,
            cost or Decimal(0),
            bool(simulated),
            charged_runs,
            amount or Decimal(0),
            unfinished,
        )
    of_batch = QuestionRun.batch_id == batch_id
    charged = UsageLedgerEntry.batch_id == batch_id
    counts = await status_counts(session, batch_id)
    cost_and_simulated = (
        await session.execute(select(QuestionRun.cost, QuestionRun.simulated).where(of_batch))
    ).all()
    charges = list(await session.scalars(select(UsageLedgerEntry.amount).where(charged)))
    return RunTotals(
        counts.get(RunStatus.COMPLETED, 0),
        counts.get(RunStatus.FAILED, 0),
        counts.get(RunStatus.CANCELLED, 0),
        money_sum([cost for cost, _ in cost_and_simulated]),
        any(simulated for _, simulated in cost_and_simulated),
        len(charges),
        money_sum(list(charges)),
        sum(counts.get(status, 0) for status in _UNFINISHED),
    )


async def store_totals(
    session: AsyncSession, batch: EvaluationBatch, totals: RunTotals | None = None
) -> RunTotals:
    """Keep the totals of a batch that has ended on its row, in the caller's transaction (after
    its last charge): what `GET /batches/{id}` serves from then on, at the same cost whatever
    the batch's size. A batch resumed runs again, and is read live until it ends again.
    `totals`, as they are now, when the caller has them."""
    if totals is None:
        totals = await run_totals(session, batch.id)
    batch.completed_runs = totals.completed
    batch.failed_runs = totals.failed
    batch.cancelled_runs = totals.cancelled
    batch.run_cost = totals.cost
    batch.simulated = totals.simulated
    batch.charged_runs = totals.charged_runs
    batch.charged_amount = totals.charged_amount
    return totals


def stored_totals(batch: EvaluationBatch) -> RunTotals | None:
    """The totals kept when the batch ended; None while it is live (or ended before they
    were kept)."""
    if batch.status in (BatchStatus.PENDING, BatchStatus.RUNNING):
        return None
    if (
        batch.completed_runs is None
        or batch.failed_runs is None
        or batch.cancelled_runs is None
        or batch.run_cost is None
        or batch.simulated is None
        or batch.charged_runs is None
        or batch.charged_amount is None
    ):
        return None
    return RunTotals(
        batch.completed_runs,
        batch.failed_runs,
        batch.cancelled_runs,
        batch.run_cost,
        batch.simulated,
        batch.charged_runs,
        batch.charged_amount,
    )
