"""An ended batch keeps its totals on its row: `GET /batches/{id}` then reads them without
summing the batch's runs or ledger rows, so its cost does not grow with the batch; a live batch
is summed as it runs, and a resumed one is read live again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import event, update

from app.context import AppContext
from app.db.models import EvaluationBatch, QuestionRun, RunStatus
from app.evaluations.pipeline import mark_batch_failed
from app.evaluations.runs import run_totals
from devtools.embedded import run_worker_task
from tests.factories import (
    JOB_STEPS,
    create_org,
    create_partner,
    expect,
    trigger,
    wait_for_batch,
)

TOTALS = (
    "completed_runs",
    "failed_runs",
    "cancelled_runs",
    "charged_runs",
    "cost",
    "charged_amount",
    "simulated",
)


@contextmanager
def statements(context: AppContext) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(str(args[2]))

    event.listen(context.db.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(context.db.sync_engine, "before_cursor_execute", record)


def _totals(batch: dict[str, Any]) -> dict[str, Any]:
    return {name: batch[name] for name in TOTALS}


async def test_an_ended_batch_is_read_from_the_totals_kept_when_it_ended(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id, questions=2, locations=("US",))
    batch_id = await trigger(api, setup.org_id)

    async with run_worker_task(context):
        await wait_for_batch(api, batch_id)
    async with context.sessions() as session:
        live = await run_totals(session, uuid.UUID(batch_id))
        kept = await session.get_one(EvaluationBatch, uuid.UUID(batch_id))
    assert (kept.completed_runs, kept.failed_runs, kept.cancelled_runs) == (6, 0, 0)
    assert (kept.charged_runs, kept.charged_amount) == (6, Decimal("0.30"))
    assert kept.run_cost == live.cost
    assert kept.simulated is True

    with statements(context) as seen:
        read = expect(await api.get(f"/batches/{batch_id}"), 200)
    assert not [s for s in seen if "question_runs" in s or "usage_ledger" in s], seen
    # The batch, its org's partner and its steps: one statement.
    assert len(seen) == 1, seen
    assert [(step["name"], step["status"]) for step in read["steps"]] == [
        (name, "completed") for name in JOB_STEPS
    ]
    assert read["completed_runs"] == read["charged_runs"] == 6
    assert Decimal(read["charged_amount"]) == Decimal("0.30")
    assert Decimal(read["cost"]) == live.cost


async def test_a_resumed_batch_is_read_live_until_it_ends_again(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id, questions=1, locations=("US",))
    batch_id = await trigger(api, setup.org_id)
    await mark_batch_failed(context, uuid.UUID(batch_id), "redrive_limit: for the test")
    failed = expect(await api.get(f"/batches/{batch_id}"), 200)
    assert failed["status"] == "failed"
    money = {name: Decimal(failed[name]) for name in ("cost", "charged_amount")}
    assert _totals(failed) | money == {
        "completed_runs": 0,
        "failed_runs": 0,
        "cancelled_runs": 0,
        "charged_runs": 0,
        "cost": Decimal(0),
        "charged_amount": Decimal(0),
        "simulated": False,
    }

    assert await trigger(api, setup.org_id) == batch_id  # resumed: live again
    async with context.sessions() as session:
        # A run's change while the batch is live shows at once: it is summed, not kept.
        await session.execute(
            update(QuestionRun)
            .where(QuestionRun.batch_id == uuid.UUID(batch_id))
            .values(status=RunStatus.CANCELLED)
        )
        await session.commit()
    with statements(context) as seen:
        pending = expect(await api.get(f"/batches/{batch_id}"), 200)
    assert len(seen) == 2, seen  # the batch with its steps, then its live totals
    assert pending["status"] == "pending"
    assert pending["cancelled_runs"] == 3
