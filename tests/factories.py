"""Set up partners and orgs the way a user does: through the API."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

# The steps of a job that completes its batch, in the order `GET /batches/{id}` lists them.
JOB_STEPS = (
    "get_or_create_batch",
    "check_balance",
    "start_batch",
    "run_question_matrix",
    "track_usage",
    "complete_batch",
)
QUESTIONS = (
    "What is the best CRM for a small business?",
    "Which CRM do sales teams recommend for startups?",
    "Top alternatives to Salesforce for a 20-person company?",
    "What CRM has the best email integration?",
    "Which CRM is easiest to set up without an admin?",
)


@dataclass(frozen=True, slots=True)
class OrgSetup:
    partner_id: str
    org_id: str
    runs: int


def expect(response: httpx.Response, status: int) -> Any:
    assert response.status_code == status, f"{response.status_code}: {response.text}"
    return response.json()


async def create_partner(
    api: httpx.AsyncClient, *, balance: str = "100.00", price: str = "0.05", name: str | None = None
) -> str:
    body = {
        "name": name or f"partner-{uuid.uuid4().hex[:8]}",
        "balance": balance,
        "price_per_run": price,
    }
    return str(expect(await api.post("/partners", json=body), 201)["id"])


async def create_org(
    api: httpx.AsyncClient,
    partner_id: str,
    *,
    questions: int = 5,
    engines: tuple[str, ...] = ("openai", "anthropic", "brightdata_perplexity"),
    locations: tuple[str, ...] = ("US", "GB"),
    name: str = "HubSpot",
) -> OrgSetup:
    org = expect(
        await api.post(
            "/orgs",
            json={
                "partner_id": partner_id,
                "name": name,
                "aliases": ["HubSpot CRM"],
                "domains": ["hubspot.com"],
                "competitors": ["Salesforce", "Pipedrive", "Zoho CRM", "Freshsales"],
            },
        ),
        201,
    )
    org_id = str(org["id"])
    if questions:
        body = {"questions": list(QUESTIONS[:questions])}
        expect(await api.put(f"/orgs/{org_id}/questions", json=body), 200)
    if engines:
        expect(await api.put(f"/orgs/{org_id}/engines", json={"engines": list(engines)}), 200)
    if locations:
        expect(await api.put(f"/orgs/{org_id}/locations", json={"locations": list(locations)}), 200)
    return OrgSetup(partner_id, org_id, questions * len(engines) * len(locations))


async def trigger(api: httpx.AsyncClient, org_id: str) -> str:
    """POST /orgs/{id}/evaluations (202); returns the batch id."""
    return str(expect(await api.post(f"/orgs/{org_id}/evaluations"), 202)["batch_id"])


async def wait_for_batch(
    api: httpx.AsyncClient,
    batch_id: str,
    *,
    statuses: tuple[str, ...] = ("completed", "failed"),
    limit: float = 60,
) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while True:
        batch: dict[str, Any] = expect(await api.get(f"/batches/{batch_id}"), 200)
        if batch["status"] in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch['status']}: {batch}"
        await asyncio.sleep(0.1)
