"""CSV exports against the JSON they mirror, and re-scoring stored answers, over the real
API, SQS, worker and Postgres."""

from __future__ import annotations

import asyncio
import csv
import io
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select

from app.context import AppContext
from app.db.models import QuestionRun, UsageLedgerEntry
from devtools.embedded import run_worker_task
from tests.db_checks import balance
from tests.factories import create_org, create_partner, expect, wait_for_batch
from tests.test_api_management import partner_client


async def _evaluated(api: httpx.AsyncClient, context: AppContext) -> tuple[str, str, str]:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, questions=3, engines=("openai", "anthropic"))
    expect(await api.patch(f"/orgs/{setup.org_id}", json={"samples": 2}), 200)
    accepted = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    async with run_worker_task(context):
        batch = await wait_for_batch(api, accepted["batch_id"])
    assert batch["status"] == "completed", batch
    return partner_id, setup.org_id, accepted["batch_id"]


async def test_the_results_csv_holds_what_the_json_does(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id, _, batch_id = await _evaluated(api, context)
    results = expect(await api.get(f"/batches/{batch_id}/results", params={"limit": 500}), 200)
    response = await api.get(f"/batches/{batch_id}/results.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == results["total"] == 24
    for row, run in zip(rows, results["runs"], strict=True):
        mention = run["mention"]
        expected: dict[str, Any] = {
            "run_id": run["run_id"],
            "question": run["question"],
            "engine": run["engine"],
            "country": run["location"],
            "sample": str(run["sample"]),
            "status": run["status"],
            "mentioned": "true" if mention["mentioned"] and not mention["negated"] else "false",
            "position": "" if mention["list_position"] is None else str(mention["list_position"]),
            "sentiment": mention["sentiment"] or "",
        }
        assert {k: row[k] for k in expected} == expected
        assert Decimal(row["cost"]) == Decimal(run["cost"])
        assert set(filter(None, row["competitors"].split("; "))) == {
            c["name"] for c in run["competitors"]
        }
        assert row["cited_domains"].split("; ") == list(
            dict.fromkeys(c["domain"] for c in run["citations"] if c["domain"])
        ) or (row["cited_domains"] == "" and not run["citations"])

    other_partner = await create_partner(api)
    async with partner_client(api, other_partner) as other:
        assert (await other.get(f"/batches/{batch_id}/results.csv")).status_code == 404
    async with partner_client(api, partner_id) as own:
        assert (await own.get(f"/batches/{batch_id}/results.csv")).status_code == 200


async def _wait_rescore(api: httpx.AsyncClient, location: str, limit: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        rescore: dict[str, Any] = expect(await api.get(location), 200)
        if rescore["status"] in ("completed", "failed"):
            return rescore
        assert time.monotonic() < deadline, rescore
        await asyncio.sleep(0.1)


async def test_rescoring_finds_facts_again_with_the_orgs_current_names_and_charges_nothing(
    api: httpx.AsyncClient, context: AppContext
) -> None:
    partner_id, org_id, batch_id = await _evaluated(api, context)
    before = expect(await api.get(f"/batches/{batch_id}/results", params={"limit": 500}), 200)
    own = {"hubspot.com"}
    cited = [d["name"] for d in before["summary"]["top_cited_domains"] if d["name"] not in own]
    assert cited, "the simulated answers cite other sites"
    adopted = cited[0]
    expect(await api.patch(f"/orgs/{org_id}", json={"domains": ["hubspot.com", adopted]}), 200)
    paid = await balance(context, partner_id)
    async with context.sessions() as session:
        ledger = await session.scalar(select(func.count()).select_from(UsageLedgerEntry))
        attempts = await session.scalar(
            select(func.sum(QuestionRun.attempts)).where(
                QuestionRun.batch_id == uuid.UUID(batch_id)
            )
        )

    day = before["methodology"]
    assert day["extraction_version"] == 1
    batch = expect(await api.get(f"/batches/{batch_id}"), 200)
    response = await api.post(
        f"/orgs/{org_id}/rescore", json={"from": batch["batch_date"], "to": batch["batch_date"]}
    )
    accepted = expect(response, 202)
    assert accepted["status"] == "pending"
    assert (accepted["from"], accepted["to"]) == (batch["batch_date"], batch["batch_date"])
    async with run_worker_task(context):
        done = await _wait_rescore(api, response.headers["location"])
    assert done["status"] == "completed", done
    assert (done["batches"], done["runs"]) == (1, 24)

    after = expect(await api.get(f"/batches/{batch_id}/results", params={"limit": 500}), 200)
    assert after["summarised_at"] >= before["summarised_at"]
    now_cited = [
        run for run in after["runs"] if any(c["domain"] == adopted for c in run["citations"])
    ]
    assert now_cited
    assert all(run["mention"]["org_cited"] for run in now_cited)
    assert all(
        c["is_org_domain"] for run in now_cited for c in run["citations"] if c["domain"] == adopted
    )
    rate_before = before["summary"]["citation_rate"]["value"] or 0
    assert after["summary"]["citation_rate"]["value"] > rate_before
    # The answers are the same answers: nothing was asked, nothing charged.
    assert [r["answer"] for r in after["runs"]] == [r["answer"] for r in before["runs"]]
    assert all(r["extraction_version"] == 1 for r in after["runs"])
    assert await balance(context, partner_id) == paid
    async with context.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(UsageLedgerEntry)) == ledger
        assert (
            await session.scalar(
                select(func.sum(QuestionRun.attempts)).where(
                    QuestionRun.batch_id == uuid.UUID(batch_id)
                )
            )
            == attempts
        )


async def test_a_rescore_is_validated_and_scoped(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, questions=1, engines=("openai",))
    path = f"/orgs/{setup.org_id}/rescore"
    backwards = await api.post(path, json={"from": "2026-02-01", "to": "2026-01-01"})
    assert backwards.status_code == 422
    assert "after" in backwards.text
    assert (await api.post(path, json={"from": "2026-01-01"})).status_code == 422
    other_partner = await create_partner(api)
    async with partner_client(api, other_partner) as other:
        response = await other.post(path, json={"from": "2026-01-01", "to": "2026-01-02"})
        assert response.status_code == 404
    missing = await api.get(f"/orgs/{setup.org_id}/rescores/{uuid.uuid4()}")
    assert missing.status_code == 404
