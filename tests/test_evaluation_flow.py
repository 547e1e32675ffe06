"""The whole flow over real connections: API over HTTP → SQS → worker → Postgres/SQLite."""

from __future__ import annotations

import uuid
from decimal import Decimal

import httpx
from pydantic import SecretStr
from sqlalchemy import select

from app.context import AppContext
from app.db.models import AuditEvent, OrgEngine
from app.settings import Settings
from devtools.embedded import run_worker_task
from tests.conftest import make_settings, operator_client
from tests.db_checks import audit_actions, balance, run_stats
from tests.factories import JOB_STEPS, create_org, create_partner, expect, wait_for_batch


async def _full_flow(api: httpx.AsyncClient, context: AppContext) -> None:
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id)
    assert setup.runs == 30

    response = await api.post(
        f"/orgs/{setup.org_id}/evaluations", json={"triggered_by": "test", "user_id": "u-1"}
    )
    accepted = expect(response, 202)
    assert accepted["is_existing"] is False
    assert accepted["total_runs"] == 30
    assert response.headers["location"] == f"/batches/{accepted['batch_id']}"

    async with run_worker_task(context):
        await wait_for_batch(api, accepted["batch_id"])
    # Read once the worker has stopped: the last step is recorded just after the batch ends.
    batch = expect(await api.get(f"/batches/{accepted['batch_id']}"), 200)

    assert batch["status"] == "completed", batch
    assert batch["completed_runs"] == 30
    assert batch["charged_runs"] == 30
    assert Decimal(batch["charged_amount"]) == Decimal("1.50")
    assert batch["triggered_by"] == "test"
    assert batch["user_id"] == "u-1"
    assert batch["started_at"]
    assert batch["completed_at"]
    assert [s["name"] for s in batch["steps"]] == list(JOB_STEPS)
    assert all(s["status"] == "completed" and s["finished_at"] for s in batch["steps"])

    stats = await run_stats(context, accepted["batch_id"])
    assert stats["total"] == 30 == stats["completed"] == stats["ledger"]
    assert stats["max_attempts"] == 1
    assert await balance(context, partner_id) == Decimal("10.00") - 30 * Decimal("0.05")

    results = expect(
        await api.get(f"/batches/{accepted['batch_id']}/results", params={"limit": 7}), 200
    )
    assert results["total"] == 30
    assert len(results["runs"]) == 7
    assert results["simulated"] is True
    run = results["runs"][0]
    assert run["simulated"] is True
    assert run["answer"]
    assert run["mention"] is not None
    summary = results["summary"]
    assert summary["completed_runs"] == 30
    assert 0 < summary["visibility"]["value"] <= 1
    assert set(results["by_engine"]) == {"openai", "anthropic", "brightdata_perplexity"}
    assert set(results["by_location"]) == {"US", "GB"}
    assert sum(p["completed_runs"] for p in results["by_engine"].values()) == 30
    assert summary["top_competitors"], "the simulated answers name tracked competitors"
    await _pages_by_cursor_match_pages_by_offset(api, accepted["batch_id"])

    assert await audit_actions(context, accepted["batch_id"]) == [
        "batch.created",
        "batch.started",
        "batch.charged",
        "batch.completed",
    ]
    async with context.sessions() as session:
        sources = set(
            await session.scalars(
                select(AuditEvent.source).where(AuditEvent.resource_id == accepted["batch_id"])
            )
        )
    assert sources == {"senso"}, "this service's own events, the worker's included"
    assert await audit_actions(context, setup.org_id) == [
        "org.created",
        "org.questions_set",
        "org.engines_set",
        "org.locations_set",
    ]
    assert await audit_actions(context, partner_id) == ["partner.created"]

    history = expect(await api.get(f"/orgs/{setup.org_id}/batches"), 200)
    assert [b["batch_id"] for b in history["items"]] == [accepted["batch_id"]]

    again = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    assert again == {
        "batch_id": accepted["batch_id"],
        "status": "completed",
        "is_existing": True,
        "total_runs": 30,
    }


async def _pages_by_cursor_match_pages_by_offset(api: httpx.AsyncClient, batch_id: str) -> None:
    path = f"/batches/{batch_id}/results"
    everything = expect(await api.get(path, params={"limit": 30}), 200)
    assert everything["next_cursor"] is None, "the last page has no next"
    paged: list[str] = []
    params: dict[str, str | int] = {"limit": 7}
    while True:
        page = expect(await api.get(path, params=params), 200)
        paged += [run["run_id"] for run in page["runs"]]
        if page["next_cursor"] is None:
            break
        params = {"limit": 7, "cursor": page["next_cursor"]}
    assert paged == [run["run_id"] for run in everything["runs"]], "every run once, in order"
    for cursor in ("bm9wZQ", "!", "AAAAAAAAAAAAAAAAAAAAAA"):
        refused = await api.get(path, params={"cursor": cursor})
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "invalid_cursor"


async def test_end_to_end_on_postgres_and_sqs(api: httpx.AsyncClient, context: AppContext) -> None:
    await _full_flow(api, context)


async def test_end_to_end_on_embedded_sqlite(
    sqlite_url: str, queue_url: str, sqs_endpoint: str
) -> None:
    settings = make_settings(sqlite_url, queue_url, sqs_endpoint, redis_url=None)
    async with (
        AppContext.create(settings) as context,
        operator_client(settings, context) as api,
    ):
        await _full_flow(api, context)


def test_settings_secrets_are_not_printed() -> None:
    settings = Settings(
        database_url=SecretStr("postgresql+asyncpg://u:hunter2@db/x"), api_token=SecretStr("s3cret")
    )
    assert "hunter2" not in repr(settings)
    assert "s3cret" not in repr(settings)


async def test_a_run_on_an_engine_no_longer_served_fails_alone(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    lenient = settings.model_copy(update={"max_failed_run_ratio": 0.6})
    async with AppContext.create(lenient) as context:
        partner_id = await create_partner(api)
        setup = await create_org(api, partner_id, engines=("openai",))
        async with context.sessions() as session:
            session.add(OrgEngine(org_id=uuid.UUID(setup.org_id), engine_id="retired_engine"))
            await session.commit()
        accepted = expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
        async with run_worker_task(context):
            batch = await wait_for_batch(api, accepted["batch_id"])
        results = expect(
            await api.get(
                f"/batches/{accepted['batch_id']}/results", params={"engine": "retired_engine"}
            ),
            200,
        )
    assert batch["status"] == "completed"
    assert (batch["completed_runs"], batch["failed_runs"], batch["charged_runs"]) == (10, 10, 10)
    assert {run["error"] for run in results["runs"]} == {"unknown engine 'retired_engine'"}
    assert results["summary"]["failed_runs"] == 10
