"""Repeated samples and adaptive extra asks, through the API, SQS, the worker and Postgres."""

from __future__ import annotations

import uuid
from collections import defaultdict
from decimal import Decimal

import httpx
from sqlalchemy import select

from app.context import AppContext
from app.db.models import Partner, QuestionRun, RunMention, RunStatus
from devtools.embedded import run_worker_task
from tests.db_checks import balance, run_stats
from tests.factories import create_org, create_partner, expect, trigger, wait_for_batch

PRICE = Decimal("0.05")


async def _asks_by_cell(
    context: AppContext, batch_id: str
) -> dict[tuple[uuid.UUID, str, str], list[tuple[int, bool]]]:
    """Each cell's asks: (sample, shown) in sample order."""
    async with context.sessions() as session:
        rows = (
            await session.execute(
                select(
                    QuestionRun.question_id,
                    QuestionRun.engine_id,
                    QuestionRun.location,
                    QuestionRun.sample,
                    RunMention.mentioned,
                    RunMention.negated,
                )
                .outerjoin(RunMention, RunMention.run_id == QuestionRun.id)
                .where(QuestionRun.batch_id == uuid.UUID(batch_id))
                .order_by(QuestionRun.sample)
            )
        ).all()
    cells: defaultdict[tuple[uuid.UUID, str, str], list[tuple[int, bool]]] = defaultdict(list)
    for question, engine, location, sample, mentioned, negated in rows:
        cells[(question, engine, location)].append((sample, bool(mentioned) and not negated))
    return dict(cells)


async def test_each_cell_is_asked_samples_times_and_each_ask_charged_once(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api, balance="10.00", price=str(PRICE))
    setup = await create_org(api, partner_id, questions=3, engines=("openai", "anthropic"))
    org = expect(await api.patch(f"/orgs/{setup.org_id}", json={"samples": 3}), 200)
    assert (org["samples"], org["max_samples"]) == (3, None)

    accepted = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert accepted["total_runs"] == setup.runs * 3 == 36
    async with run_worker_task(context):
        batch = await wait_for_batch(api, accepted["batch_id"])
    assert batch["status"] == "completed", batch
    assert (batch["cells"], batch["samples"], batch["max_samples"]) == (12, 3, None)
    assert batch["max_runs"] == 36
    assert batch["charged_runs"] == batch["completed_runs"] == 36
    assert Decimal(batch["charged_amount"]) == 36 * PRICE
    assert await balance(context, partner_id) == Decimal("10.00") - 36 * PRICE
    stats = await run_stats(context, accepted["batch_id"])
    assert stats["ledger"] == 36 == stats["completed"]

    cells = await _asks_by_cell(context, accepted["batch_id"])
    assert len(cells) == 12
    assert all([s for s, _ in asks] == [1, 2, 3] for asks in cells.values())

    results = expect(
        await api.get(f"/batches/{accepted['batch_id']}/results", params={"limit": 500}), 200
    )
    method = results["methodology"]
    assert method["samples_per_cell"] == {"min": 3, "mean": 3.0, "max": 3}
    assert method["questions"] == 3
    assert method["countries"] == ["GB", "US"]
    assert [e["engine"] for e in method["engines"]] == ["anthropic", "openai"]
    assert method["answers"] == {"completed": 36, "failed": 0, "rejected": 0}
    assert method["extraction_version"] == 1
    assert "bootstrap" in method["interval_method"]
    visibility = results["summary"]["visibility"]
    assert (visibility["cells"], visibility["answers"]) == (12, 36)
    assert visibility["interval"] is not None
    low, high = visibility["interval"]
    assert low <= visibility["value"] <= high
    # The batch's value is the mean over cells of each cell's mean.
    shown = [sum(s for _, s in asks) / len(asks) for asks in cells.values()]
    assert visibility["value"] == round(sum(shown) / len(shown), 4)
    assert sorted({(r["sample"]) for r in results["runs"]}) == [1, 2, 3]
    assert results["summarised_at"] is not None


async def test_cells_whose_answers_disagree_are_asked_again_up_to_max_samples(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id = await create_partner(api, balance="10.00", price=str(PRICE))
    setup = await create_org(api, partner_id, questions=5, engines=("openai",))
    expect(await api.patch(f"/orgs/{setup.org_id}", json={"samples": 2, "max_samples": 5}), 200)

    accepted = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert accepted["total_runs"] == 20
    async with context.sessions() as session:
        partner = await session.get_one(Partner, uuid.UUID(partner_id))
        # Admitted for the most asks adaptive sampling may reach.
        assert partner.reserved == 50 * PRICE
    async with run_worker_task(context):
        batch = await wait_for_batch(api, accepted["batch_id"])
    assert batch["status"] == "completed", batch

    cells = await _asks_by_cell(context, accepted["batch_id"])
    disagreeing = 0
    for asks in cells.values():
        samples = [s for s, _ in asks]
        shown = {s for _, s in asks}
        assert samples == list(range(1, len(samples) + 1)), "one ask at a time, none twice"
        if len(shown) == 2:
            disagreeing += 1
            assert len(samples) == 5, f"a disagreeing cell stops at max_samples: {asks}"
        else:
            assert len(samples) == 2, f"agreeing asks need no more: {asks}"
    assert disagreeing, "the simulated answers disagree in some cells"

    total = 20 + 3 * disagreeing
    assert batch["total_runs"] == total == batch["charged_runs"] == batch["completed_runs"]
    assert await balance(context, partner_id) == Decimal("10.00") - total * PRICE
    async with context.sessions() as session:
        partner = await session.get_one(Partner, uuid.UUID(partner_id))
        assert partner.reserved == 0
    results = expect(await api.get(f"/batches/{accepted['batch_id']}/results"), 200)
    per_cell = results["methodology"]["samples_per_cell"]
    assert (per_cell["min"], per_cell["max"]) == (2, 5)


async def test_the_402_estimate_counts_every_ask_adaptive_ones_included(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    # 10 cells: 20 asks fit the balance, the 50 adaptive sampling may reach do not.
    partner_id = await create_partner(api, balance="1.50", price=str(PRICE))
    setup = await create_org(api, partner_id, questions=5, engines=("openai",))
    expect(await api.patch(f"/orgs/{setup.org_id}", json={"samples": 2, "max_samples": 5}), 200)
    refused = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 402)
    assert Decimal(refused["detail"]["required"]) == 50 * PRICE

    expect(await api.patch(f"/orgs/{setup.org_id}", json={"max_samples": None}), 200)
    batch_id = await trigger(api, setup.org_id)
    async with context.sessions() as session:
        runs = list(
            await session.scalars(
                select(QuestionRun.status).where(QuestionRun.batch_id == uuid.UUID(batch_id))
            )
        )
    assert runs == [RunStatus.PENDING] * 20


async def test_samples_are_validated(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, questions=1, engines=("openai",))
    for body in ({"samples": 0}, {"samples": 11}, {"max_samples": 11}, {"samples": "x"}):
        response = await api.patch(f"/orgs/{setup.org_id}", json=body)
        assert response.status_code == 422, (body, response.text)
    expect(await api.patch(f"/orgs/{setup.org_id}", json={"samples": 4}), 200)
    below = await api.patch(f"/orgs/{setup.org_id}", json={"max_samples": 3})
    assert below.status_code == 422
    assert "max_samples (3) must be at least samples (4)" in below.text
    created = await api.post(
        "/orgs", json={"partner_id": partner_id, "name": "X", "samples": 3, "max_samples": 2}
    )
    assert created.status_code == 422
