"""Management through the HTTP API: partners, orgs and their matrix, partner-key scoping,
pagination, and triggering evaluations (reuse of today's batch, concurrent triggers).

Every request goes over real HTTP to the API served by uvicorn, backed by a fresh Postgres
database and a fresh SQS queue on the moto server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any

import httpx
from mypy_boto3_sqs import SQSClient

from tests.clock import OffsetClock
from tests.factories import QUESTIONS, create_org, create_partner, expect


async def queue_messages(sqs: SQSClient, queue_url: str) -> list[dict[str, Any]]:
    """Every job in the queue, each read once (received with a visibility timeout)."""
    bodies: list[dict[str, Any]] = []
    while True:
        response = await asyncio.to_thread(
            sqs.receive_message,
            QueueUrl=queue_url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            VisibilityTimeout=30,
        )
        messages = response.get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(json.loads(m["Body"]) for m in messages)


async def api_key(api: httpx.AsyncClient, partner_id: str, name: str | None = None) -> str:
    body = {} if name is None else {"name": name}
    created = expect(await api.post(f"/partners/{partner_id}/api-keys", json=body), 201)
    assert created["partner_id"] == partner_id
    assert created["name"] == (name or "default")
    key = created["key"]
    assert isinstance(key, str)
    assert key.startswith("sk_")
    return key


@asynccontextmanager
async def partner_client(
    api: httpx.AsyncClient, partner_id: str
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the same server that authenticates with a new key of the partner."""
    key = await api_key(api, partner_id)
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        yield client


# --- partners -------------------------------------------------------------------------------


async def test_partners_are_created_read_and_listed_page_by_page(api: httpx.AsyncClient) -> None:
    first = expect(
        await api.post(
            "/partners", json={"name": "  Agency One ", "balance": "0.1", "price_per_run": "0.0125"}
        ),
        201,
    )
    assert first["name"] == "Agency One"
    assert (first["balance"], first["price_per_run"]) == ("0.100000", "0.012500")
    # Without a price the configured default applies; money may be sent as a JSON number too.
    second = expect(await api.post("/partners", json={"name": "Agency Two", "balance": 12.5}), 201)
    assert (second["balance"], second["price_per_run"]) == ("12.500000", "0.050000")
    third = expect(await api.post("/partners", json={"name": "Agency Three"}), 201)
    assert third["balance"] == "0.000000"

    assert expect(await api.get(f"/partners/{first['id']}"), 200) == first

    listed = expect(await api.get("/partners"), 200)
    assert (listed["total"], listed["limit"], listed["offset"]) == (3, 50, 0)
    assert [p["id"] for p in listed["items"]] == [first["id"], second["id"], third["id"]]
    page = expect(await api.get("/partners", params={"limit": 2}), 200)
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [p["id"] for p in page["items"]] == [first["id"], second["id"]]
    page = expect(await api.get("/partners", params={"limit": 2, "offset": 2}), 200)
    assert [p["id"] for p in page["items"]] == [third["id"]]
    assert page["total"] == 3
    beyond = expect(await api.get("/partners", params={"offset": 10}), 200)
    assert (beyond["items"], beyond["total"]) == ([], 3)


async def test_top_ups_add_exact_decimals(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api, balance="0")
    topped = await api.post(f"/partners/{partner_id}/topups", json={"amount": "0.1"})
    assert expect(topped, 200)["balance"] == "0.100000"
    body = {"amount": "0.2", "note": "invoice 42"}
    topped = await api.post(f"/partners/{partner_id}/topups", json=body)
    assert expect(topped, 200)["balance"] == "0.300000"
    assert expect(await api.get(f"/partners/{partner_id}"), 200)["balance"] == "0.300000"

    # Concurrent top-ups are all kept: none overwrites another.
    responses = await asyncio.gather(
        *(api.post(f"/partners/{partner_id}/topups", json={"amount": "0.000001"}) for _ in range(8))
    )
    assert [r.status_code for r in responses] == [200] * 8
    assert expect(await api.get(f"/partners/{partner_id}"), 200)["balance"] == "0.300008"


# --- orgs -----------------------------------------------------------------------------------


async def test_org_is_created_read_and_updated(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    created = expect(
        await api.post(
            "/orgs",
            json={
                "partner_id": partner_id,
                "name": "  Acme   Corp ",
                "aliases": ["Acme", "ACME Inc.", "Acme"],
                "domains": ["https://www.Acme.com/about", "acme.io.", "ACME.COM:443", "acme.com"],
                "competitors": ["Globex", " Initech "],
            },
        ),
        201,
    )
    assert created["partner_id"] == partner_id
    assert created["name"] == "Acme Corp"
    assert created["aliases"] == ["Acme", "ACME Inc."]
    assert created["domains"] == ["www.acme.com", "acme.io", "acme.com"]
    assert created["competitors"] == ["Globex", "Initech"]
    assert created["active"] is True
    org_id = created["id"]

    detail = expect(await api.get(f"/orgs/{org_id}"), 200)
    assert {k: detail[k] for k in created} == created
    assert (detail["questions"], detail["engines"], detail["locations"]) == ([], [], [])

    # PATCH changes only what it is given.
    patched = expect(await api.patch(f"/orgs/{org_id}", json={"name": "Acme Corporation"}), 200)
    assert patched["name"] == "Acme Corporation"
    assert patched["domains"] == created["domains"]
    assert patched["aliases"] == created["aliases"]
    assert datetime.fromisoformat(patched["updated_at"]) > datetime.fromisoformat(
        created["updated_at"]
    )
    assert patched["created_at"] == created["created_at"]

    changes = {
        "aliases": ["Acme Co"],
        "domains": ["http://Shop.Acme.co.uk/path?q=1"],
        "competitors": [],
        "active": False,
    }
    patched = expect(await api.patch(f"/orgs/{org_id}", json=changes), 200)
    assert patched["aliases"] == ["Acme Co"]
    assert patched["domains"] == ["shop.acme.co.uk"]
    assert patched["competitors"] == []
    assert patched["active"] is False
    assert patched["name"] == "Acme Corporation"
    assert expect(await api.get(f"/orgs/{org_id}"), 200) == patched

    reactivated = expect(await api.patch(f"/orgs/{org_id}", json={"active": True}), 200)
    assert reactivated["active"] is True


async def test_orgs_are_listed_with_filters_and_pages(api: httpx.AsyncClient) -> None:
    partner_a = await create_partner(api)
    partner_b = await create_partner(api)
    ids: list[str] = []
    for partner_id, name in ((partner_a, "A1"), (partner_a, "A2"), (partner_b, "B1")):
        org = expect(await api.post("/orgs", json={"partner_id": partner_id, "name": name}), 201)
        ids.append(org["id"])
    expect(await api.patch(f"/orgs/{ids[1]}", json={"active": False}), 200)

    everything = expect(await api.get("/orgs"), 200)
    assert [o["id"] for o in everything["items"]] == ids
    assert everything["total"] == 3

    def names(page: dict[str, Any]) -> list[str]:
        return [o["name"] for o in page["items"]]

    of_a = expect(await api.get("/orgs", params={"partner_id": partner_a}), 200)
    assert (names(of_a), of_a["total"]) == (["A1", "A2"], 2)
    active = expect(await api.get("/orgs", params={"active": "true"}), 200)
    assert (names(active), active["total"]) == (["A1", "B1"], 2)
    inactive_a = expect(
        await api.get("/orgs", params={"active": "false", "partner_id": partner_a}), 200
    )
    assert (names(inactive_a), inactive_a["total"]) == (["A2"], 1)
    none = expect(await api.get("/orgs", params={"partner_id": str(uuid.uuid4())}), 200)
    assert (none["items"], none["total"]) == ([], 0)

    page = expect(await api.get("/orgs", params={"limit": 1, "offset": 1}), 200)
    assert (names(page), page["total"], page["limit"], page["offset"]) == (["A2"], 3, 1, 1)


async def test_questions_are_replaced_and_kept_texts_keep_their_ids(
    api: httpx.AsyncClient,
) -> None:
    partner_id = await create_partner(api)
    org = await create_org(api, partner_id, questions=0, engines=(), locations=())
    q1, q2, q3, q4 = QUESTIONS[:4]

    detail = expect(
        await api.put(f"/orgs/{org.org_id}/questions", json={"questions": [q1, q2, q3]}), 200
    )
    assert [q["text"] for q in detail["questions"]] == [q1, q2, q3]
    assert [q["position"] for q in detail["questions"]] == [0, 1, 2]
    first_ids = {q["text"]: q["id"] for q in detail["questions"]}

    # Replace: q2 goes, q4 comes, the order changes; whitespace is normalised, duplicates dropped.
    body = {"questions": [q3, f"  {q4} ", q1, q4.replace(" ", "  ")]}
    detail = expect(await api.put(f"/orgs/{org.org_id}/questions", json=body), 200)
    assert [q["text"] for q in detail["questions"]] == [q3, q4, q1]
    assert [q["position"] for q in detail["questions"]] == [0, 1, 2]
    ids = {q["text"]: q["id"] for q in detail["questions"]}
    assert ids[q1] == first_ids[q1]
    assert ids[q3] == first_ids[q3]
    assert ids[q4] not in first_ids.values()
    assert expect(await api.get(f"/orgs/{org.org_id}"), 200)["questions"] == detail["questions"]


async def test_engines_and_locations_are_replaced_and_normalised(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    org = await create_org(api, partner_id, questions=1, engines=(), locations=())

    body = {"engines": ["openai", "linkup", "openai", "azure_openai"]}
    detail = expect(await api.put(f"/orgs/{org.org_id}/engines", json=body), 200)
    assert detail["engines"] == ["azure_openai", "linkup", "openai"]
    detail = expect(
        await api.put(f"/orgs/{org.org_id}/engines", json={"engines": ["anthropic"]}), 200
    )
    assert detail["engines"] == ["anthropic"]

    body = {"locations": ["us", " gb ", "US", "De"]}
    detail = expect(await api.put(f"/orgs/{org.org_id}/locations", json=body), 200)
    assert detail["locations"] == ["DE", "GB", "US"]
    detail = expect(await api.put(f"/orgs/{org.org_id}/locations", json={"locations": ["fr"]}), 200)
    assert detail["locations"] == ["FR"]

    final = expect(await api.get(f"/orgs/{org.org_id}"), 200)
    assert (final["engines"], final["locations"]) == (["anthropic"], ["FR"])
    assert len(final["questions"]) == 1


# --- evaluations ----------------------------------------------------------------------------


async def test_trigger_creates_todays_batch_and_enqueues_one_job(
    api: httpx.AsyncClient, sqs: SQSClient, queue_url: str
) -> None:
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id)
    assert setup.runs == 30

    response = await api.post(
        f"/orgs/{setup.org_id}/evaluations", json={"triggered_by": "scheduler", "user_id": "u-7"}
    )
    accepted = expect(response, 202)
    batch_id = accepted["batch_id"]
    assert accepted == {
        "batch_id": batch_id,
        "status": "pending",
        "is_existing": False,
        "total_runs": 30,
    }
    assert response.headers["location"] == f"/batches/{batch_id}"

    batch = expect(await api.get(response.headers["location"]), 200)
    assert batch["batch_id"] == batch_id
    assert batch["org_id"] == setup.org_id
    assert batch["status"] == "pending"
    assert batch["batch_date"] == date.today().isoformat()
    assert (batch["total_runs"], batch["completed_runs"], batch["charged_runs"]) == (30, 0, 0)
    assert (batch["triggered_by"], batch["user_id"]) == ("scheduler", "u-7")
    assert batch["charged_amount"] == "0.000000"

    results = expect(await api.get(f"/batches/{batch_id}/results", params={"limit": 5}), 200)
    assert (results["batch_id"], results["total"], len(results["runs"])) == (batch_id, 30, 5)
    assert {r["status"] for r in results["runs"]} == {"pending"}

    messages = await queue_messages(sqs, queue_url)
    assert len(messages) == 1
    job = messages[0]
    assert job["type"] == "evaluate_org"
    assert (job["org_id"], job["batch_id"], job["reason"]) == (setup.org_id, batch_id, "scheduler")
    assert not any("token" in key or "key" in key for key in job), job

    # The trigger does not charge anything; only completed runs are charged.
    assert expect(await api.get(f"/partners/{partner_id}"), 200)["balance"] == "10.000000"


async def test_second_trigger_the_same_day_reuses_the_batch_and_sends_no_job(
    api: httpx.AsyncClient, sqs: SQSClient, queue_url: str
) -> None:
    setup = await create_org(api, await create_partner(api))
    first = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    response = await api.post(f"/orgs/{setup.org_id}/evaluations", json={"triggered_by": "again"})
    second = expect(response, 202)
    assert second == {**first, "is_existing": True}
    assert response.headers["location"] == f"/batches/{first['batch_id']}"
    # The batch keeps who triggered it first.
    assert expect(await api.get(f"/batches/{first['batch_id']}"), 200)["triggered_by"] == "api"

    # A changed matrix does not change today's batch either.
    expect(await api.put(f"/orgs/{setup.org_id}/locations", json={"locations": ["FR"]}), 200)
    third = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert third == second

    history = expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)
    assert [b["batch_id"] for b in history["items"]] == [first["batch_id"]]
    messages = await queue_messages(sqs, queue_url)
    assert [m["batch_id"] for m in messages] == [first["batch_id"]]


async def test_concurrent_triggers_create_one_batch_and_one_job(
    api: httpx.AsyncClient, sqs: SQSClient, queue_url: str
) -> None:
    setup = await create_org(api, await create_partner(api))
    responses = await asyncio.gather(
        *(api.post(f"/orgs/{setup.org_id}/evaluations") for _ in range(8))
    )
    accepted = [expect(r, 202) for r in responses]
    batch_ids = {a["batch_id"] for a in accepted}
    assert len(batch_ids) == 1, accepted
    assert sorted(a["is_existing"] for a in accepted) == [False] + [True] * 7
    assert {a["total_runs"] for a in accepted} == {30}
    assert {r.headers["location"] for r in responses} == {f"/batches/{batch_ids.pop()}"}

    batch_id = accepted[0]["batch_id"]
    history = expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)
    assert [b["batch_id"] for b in history["items"]] == [batch_id]
    # Exactly one set of runs was created for the batch.
    results = expect(await api.get(f"/batches/{batch_id}/results", params={"limit": 1}), 200)
    assert results["total"] == 30
    messages = await queue_messages(sqs, queue_url)
    assert [m["batch_id"] for m in messages] == [batch_id]


async def test_batch_history_is_newest_first_and_paginated(
    api: httpx.AsyncClient, sqs: SQSClient, queue_url: str, clock: OffsetClock
) -> None:
    """One batch per day: the server's injected clock is moved."""
    setup = await create_org(api, await create_partner(api))
    days = [date(2026, 3, 1), date(2026, 3, 3), date(2026, 3, 2)]  # triggered out of order
    batch_by_day: dict[date, str] = {}
    for day in days:
        clock.move_to(day)
        accepted = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
        assert accepted["is_existing"] is False, day
        batch_by_day[day] = accepted["batch_id"]
        assert expect(await api.get(f"/batches/{accepted['batch_id']}"), 200)["batch_date"] == (
            day.isoformat()
        )
    assert len(set(batch_by_day.values())) == 3

    newest_first = [batch_by_day[d] for d in sorted(days, reverse=True)]
    history = expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)
    assert [b["batch_id"] for b in history["items"]] == newest_first
    assert [b["batch_date"] for b in history["items"]] == ["2026-03-03", "2026-03-02", "2026-03-01"]
    assert history["total"] == 3
    page = expect(await api.get(f"/orgs/{setup.org_id}/batches", params={"limit": 2}), 200)
    assert [b["batch_id"] for b in page["items"]] == newest_first[:2]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    page = expect(
        await api.get(f"/orgs/{setup.org_id}/batches", params={"limit": 2, "offset": 2}), 200
    )
    assert [b["batch_id"] for b in page["items"]] == newest_first[2:]
    assert page["total"] == 3

    # One job per day's batch.
    messages = await queue_messages(sqs, queue_url)
    assert sorted(m["batch_id"] for m in messages) == sorted(batch_by_day.values())


# --- partner API keys -----------------------------------------------------------------------


async def test_partner_key_acts_as_its_partner(
    api: httpx.AsyncClient, sqs: SQSClient, queue_url: str
) -> None:
    partner_id = await create_partner(api, name="Own Agency")
    first_key = await api_key(api, partner_id, name="ci")
    assert first_key != await api_key(api, partner_id)

    async with partner_client(api, partner_id) as partner:
        me = expect(await partner.get(f"/partners/{partner_id}"), 200)
        assert me["name"] == "Own Agency"
        # No partner_id needed: the key implies it; naming its own partner is fine too.
        org = expect(await partner.post("/orgs", json={"name": "Own Org"}), 201)
        assert org["partner_id"] == partner_id
        named = {"name": "Own Org 2", "partner_id": partner_id}
        assert expect(await partner.post("/orgs", json=named), 201)["partner_id"] == partner_id
        org_id = org["id"]
        body = {"questions": list(QUESTIONS[:2])}
        expect(await partner.put(f"/orgs/{org_id}/questions", json=body), 200)
        expect(await partner.put(f"/orgs/{org_id}/engines", json={"engines": ["openai"]}), 200)
        expect(await partner.put(f"/orgs/{org_id}/locations", json={"locations": ["us"]}), 200)
        patched = expect(await partner.patch(f"/orgs/{org_id}", json={"aliases": ["OO"]}), 200)
        assert patched["aliases"] == ["OO"]

        accepted = expect(await partner.post(f"/orgs/{org_id}/evaluations"), 202)
        assert (accepted["is_existing"], accepted["total_runs"]) == (False, 2)
        batch = expect(await partner.get(f"/batches/{accepted['batch_id']}"), 200)
        assert batch["org_id"] == org_id
        expect(await partner.get(f"/batches/{accepted['batch_id']}/results"), 200)
        history = expect(await partner.get(f"/orgs/{org_id}/batches"), 200)
        assert [b["batch_id"] for b in history["items"]] == [accepted["batch_id"]]

    # The first key still works alongside the others.
    async with httpx.AsyncClient(
        base_url=api.base_url, headers={"Authorization": f"Bearer {first_key}"}
    ) as ci:
        assert expect(await ci.get("/orgs"), 200)["total"] == 2
    assert len(await queue_messages(sqs, queue_url)) == 1


async def test_partner_key_sees_only_its_own_resources(api: httpx.AsyncClient) -> None:
    mine = await create_org(api, await create_partner(api, name="Mine"), name="My Org")
    other = await create_org(api, await create_partner(api, name="Other"), name="Their Org")
    other_batch = expect(await api.post(f"/orgs/{other.org_id}/evaluations"), 202)["batch_id"]

    async with partner_client(api, mine.partner_id) as partner:
        partners = expect(await partner.get("/partners"), 200)
        assert [p["id"] for p in partners["items"]] == [mine.partner_id]
        assert partners["total"] == 1
        orgs = expect(await partner.get("/orgs"), 200)
        assert ([o["id"] for o in orgs["items"]], orgs["total"]) == ([mine.org_id], 1)
        filtered = expect(await partner.get("/orgs", params={"partner_id": other.partner_id}), 200)
        assert (filtered["items"], filtered["total"]) == ([], 0)

        hidden = [
            ("GET", f"/partners/{other.partner_id}", None, "partner"),
            ("POST", "/orgs", {"name": "X", "partner_id": other.partner_id}, "partner"),
            ("GET", f"/orgs/{other.org_id}", None, "org"),
            ("PATCH", f"/orgs/{other.org_id}", {"name": "Hijacked"}, "org"),
            ("PUT", f"/orgs/{other.org_id}/questions", {"questions": ["Hijacked?"]}, "org"),
            ("PUT", f"/orgs/{other.org_id}/engines", {"engines": ["openai"]}, "org"),
            ("PUT", f"/orgs/{other.org_id}/locations", {"locations": ["FR"]}, "org"),
            ("POST", f"/orgs/{other.org_id}/evaluations", None, "org"),
            ("GET", f"/orgs/{other.org_id}/batches", None, "org"),
            ("GET", f"/batches/{other_batch}", None, "batch"),
            ("GET", f"/batches/{other_batch}/results", None, "batch"),
        ]
        for method, path, body, kind in hidden:
            response = await partner.request(method, path, json=body)
            assert response.status_code == 404, f"{method} {path}: {response.text}"
            assert response.json()["error"] == "not_found", f"{method} {path}"
            assert kind in response.json()["detail"], response.json()

        # Operator-only operations are forbidden, even on its own partner.
        admin_only = [
            ("/partners", {"name": "Sneaky"}),
            (f"/partners/{mine.partner_id}/topups", {"amount": "1000"}),
            (f"/partners/{other.partner_id}/topups", {"amount": "1000"}),
        ]
        for path, body in admin_only:
            response = await partner.post(path, json=body)
            assert response.status_code == 403, f"POST {path}: {response.text}"
            assert response.json() == {
                "error": "forbidden",
                "detail": "this operation needs the operator's API token",
            }

    # Nothing of the other partner changed, and nothing was created.
    their_org = expect(await api.get(f"/orgs/{other.org_id}"), 200)
    assert their_org["name"] == "Their Org"
    assert (len(their_org["questions"]), their_org["locations"]) == (5, ["GB", "US"])
    assert expect(await api.get(f"/orgs/{other.org_id}/batches"), 200)["total"] == 1
    assert expect(await api.get("/partners"), 200)["total"] == 2
    assert expect(await api.get(f"/partners/{mine.partner_id}"), 200)["balance"] == "100.000000"
