"""Analysis inside the whole flow: API over HTTP → SQS → worker → Postgres, with the analysis
calls going to the engine emulator's chat completions over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from alembic import command
from pydantic import SecretStr
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection

from app.analysis.variations import load_variations
from app.context import AppContext
from app.db.migrate import alembic_config, upgrade
from app.db.models import Org, OrgNameVariation, QuestionRun
from app.db.session import create_engine
from app.settings import Settings
from devtools.embedded import run_worker_task
from devtools.emulator.config import EmulatorConfig, Fault, ScriptedAnswer
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings
from tests.clock import OffsetClock
from tests.conftest import make_settings, operator_client
from tests.factories import create_org, create_partner, expect, wait_for_batch

RUNS = 12  # 3 questions × 2 engines × 2 locations


@pytest.fixture
def analysed_settings(
    postgres_url: str, queue_url: str, sqs_endpoint: str, emulator: EmulatorServer
) -> Settings:
    """Simulated engines; analysis by the OpenAI client, served by the emulator."""
    return make_settings(
        postgres_url,
        queue_url,
        sqs_endpoint,
        engine_mode="simulated",
        analysis_provider="openai",
        openai_api_key=SecretStr(EMULATOR_KEYS["openai_api_key"]),
        openai_base_url=f"{emulator.url}/v1",
    )


@contextlib.asynccontextmanager
async def service(
    settings: Settings, clock: OffsetClock | None = None
) -> AsyncIterator[tuple[AppContext, httpx.AsyncClient]]:
    async with (
        AppContext.create(settings, clock) as context,
        operator_client(settings, context) as api,
    ):
        yield context, api


async def new_org(
    api: httpx.AsyncClient,
    *,
    questions: int = 3,
    engines: tuple[str, ...] = ("openai", "anthropic"),
    locations: tuple[str, ...] = ("US", "GB"),
) -> str:
    partner_id = await create_partner(api)
    setup = await create_org(
        api, partner_id, questions=questions, engines=engines, locations=locations
    )
    return setup.org_id


async def evaluate(context: AppContext, api: httpx.AsyncClient, org_id: str) -> dict[str, Any]:
    """Trigger the org's batch, run it to the end, and return its results (every run)."""
    accepted = expect(await api.post(f"/orgs/{org_id}/evaluations"), 202)
    assert accepted["is_existing"] is False
    async with run_worker_task(context):
        batch = await wait_for_batch(api, accepted["batch_id"])
    assert batch["status"] == "completed", batch
    results: dict[str, Any] = expect(
        await api.get(f"/batches/{accepted['batch_id']}/results", params={"limit": 500}), 200
    )
    return results


def structured_calls(emulator: EmulatorServer) -> Counter[str]:
    """Structured-output requests the emulator received, by schema name."""
    return Counter(
        entry.body["response_format"]["json_schema"]["name"]
        for entry in emulator.state.logged("openai")
        if isinstance(entry.body, dict) and "response_format" in entry.body
    )


async def stored_variations(context: AppContext, org_id: str) -> set[str]:
    async with context.sessions() as session:
        rows = await session.scalars(
            select(OrgNameVariation.variation).where(OrgNameVariation.org_id == uuid.UUID(org_id))
        )
        return set(rows)


async def test_one_structured_call_per_answer_and_one_for_the_names(
    analysed_settings: Settings, emulator: EmulatorServer
) -> None:
    async with service(analysed_settings) as (context, api):
        org_id = await new_org(api)
        results = await evaluate(context, api, org_id)
        runs = results["runs"]
        async with context.sessions() as session:
            stored = list(
                await session.scalars(
                    select(QuestionRun).where(
                        QuestionRun.batch_id == uuid.UUID(results["batch_id"])
                    )
                )
            )

    assert results["summary"]["completed_runs"] == RUNS
    assert structured_calls(emulator) == {"answer_analysis": RUNS, "name_variations": 1}
    assert {entry.status for entry in emulator.state.logged("openai")} == {200}

    mentioned = [run["mention"] for run in runs if run["mention"]["mentioned"]]
    assert mentioned, "the simulated answers name the org in most runs"
    assert all(m["sentiment"] in ("positive", "neutral", "negative") for m in mentioned)
    assert not any(m["negated"] for m in mentioned)
    sources = {c["source"] for run in runs for c in run["competitors"]}
    assert sources == {"tracked", "analysis"}, "untracked rivals come from the analysis"

    summary = results["summary"]
    assert 0 < summary["share_of_voice"]["tracked"]["value"] <= 1
    assert 0 < summary["visibility"]["value"] <= 1
    assert summary["sentiment"]["score"]["value"] is not None
    assert sum(summary["sentiment"][k] for k in ("positive", "neutral", "negative")) == len(
        mentioned
    )
    for part in (*results["by_engine"].values(), *results["by_location"].values()):
        assert part["share_of_voice"]["tracked"]["value"] is not None
        assert part["sentiment"]["score"]["value"] is not None

    for run in stored:
        assert run.raw_response is not None
        analysis = run.raw_response["analysis"]
        assert analysis["model"] == analysed_settings.analysis_model
        assert Decimal(analysis["cost"]) > 0
        assert run.cost == Decimal(run.raw_response["engine_cost"]) + Decimal(analysis["cost"])


async def test_variations_are_reused_until_the_names_change(
    analysed_settings: Settings, emulator: EmulatorServer
) -> None:
    # One batch per org and day: the service's clock moves to the next day each time.
    day = date(2026, 5, 1)
    clock = OffsetClock()
    async with service(analysed_settings, clock) as (context, api):
        clock.move_to(day)
        org_id = await new_org(api, questions=1, locations=("US",))
        await evaluate(context, api, org_id)
        assert structured_calls(emulator)["name_variations"] == 1
        first = await stored_variations(context, org_id)
        assert first == {"HubSpot", "HubSpotCRM"}

        emulator.state.clear_log()
        clock.move_to(day + timedelta(days=1))
        await evaluate(context, api, org_id)
        assert structured_calls(emulator) == {"answer_analysis": 2}
        assert await stored_variations(context, org_id) == first

        emulator.state.clear_log()
        aliases = ["HubSpot CRM", "HubSpot Sales Hub"]
        expect(await api.patch(f"/orgs/{org_id}", json={"aliases": aliases}), 200)
        clock.move_to(day + timedelta(days=2))
        await evaluate(context, api, org_id)
        assert structured_calls(emulator) == {"answer_analysis": 2, "name_variations": 1}
        assert await stored_variations(context, org_id) == {
            "HubSpot",
            "HubSpotCRM",
            "HubSpotSalesHub",
        }


async def test_with_answer_analysis_off_only_deterministic_facts_are_stored(
    analysed_settings: Settings, emulator: EmulatorServer
) -> None:
    settings = analysed_settings.model_copy(update={"answer_analysis_enabled": False})
    async with service(settings) as (context, api):
        results = await evaluate(context, api, await new_org(api))

    assert structured_calls(emulator) == {"name_variations": 1}
    runs = results["runs"]
    assert {run["mention"]["sentiment"] for run in runs} == {None}
    assert any(run["mention"]["mentioned"] for run in runs)
    assert {c["source"] for run in runs for c in run["competitors"]} == {"tracked"}
    summary = results["summary"]
    assert summary["visibility"]["value"] > 0
    assert summary["share_of_voice"]["tracked"]["value"] > 0
    sentiment = summary["sentiment"]
    assert (sentiment["positive"], sentiment["neutral"], sentiment["negative"]) == (0, 0, 0)
    assert sentiment["score"]["value"] is None
    assert results["methodology"]["llm_analysis"] is False


async def test_the_simulated_analyst_runs_offline_end_to_end(
    analysed_settings: Settings, emulator: EmulatorServer
) -> None:
    settings = analysed_settings.model_copy(update={"analysis_provider": "simulated"})
    async with service(settings) as (context, api):
        org_id = await new_org(api)
        results = await evaluate(context, api, org_id)
        assert await stored_variations(context, org_id) == {"HubSpot", "HubSpotCRM"}

    assert emulator.state.logged() == []
    summary = results["summary"]
    assert summary["share_of_voice"]["tracked"]["value"] is not None
    assert summary["sentiment"]["score"]["value"] is not None
    assert any(run["mention"]["sentiment"] for run in results["runs"])


async def test_a_failing_analysis_never_loses_the_answer(
    analysed_settings: Settings, emulator: EmulatorServer
) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="quota_exhausted", provider="openai")])
    )
    async with service(analysed_settings) as (context, api):
        org_id = await new_org(api)
        results = await evaluate(context, api, org_id)
        assert await stored_variations(context, org_id) == set(), "a failure is not cached"
        async with context.sessions() as session:
            raw = list(
                await session.scalars(
                    select(QuestionRun.raw_response).where(
                        QuestionRun.batch_id == uuid.UUID(results["batch_id"])
                    )
                )
            )

    assert results["summary"]["completed_runs"] == RUNS
    assert structured_calls(emulator) == {"answer_analysis": RUNS, "name_variations": 1}
    assert all("quota_exhausted" in r["analysis"]["error"] for r in raw if r is not None)
    assert {run["mention"]["sentiment"] for run in results["runs"]} == {None}
    assert results["summary"]["visibility"]["value"] > 0


async def test_a_negated_mention_is_not_visibility(
    analysed_settings: Settings, emulator: EmulatorServer
) -> None:
    """Real engine clients against the emulator, whose every answer is scripted."""
    settings = analysed_settings.model_copy(
        update={**emulated_engine_settings(emulator.url), "analysis_provider": "openai"}
    )
    emulator.state.configure(
        EmulatorConfig(
            answers=[
                ScriptedAnswer(match="CRM", text="I could not find information about HubSpot.")
            ]
        )
    )
    async with service(settings) as (context, api):
        org_id = await new_org(api, questions=2, engines=("openai",), locations=("US",))
        results = await evaluate(context, api, org_id)

    mentions = [run["mention"] for run in results["runs"]]
    assert [(m["mentioned"], m["negated"], m["sentiment"]) for m in mentions] == [
        (True, True, None),
        (True, True, None),
    ]
    summary = results["summary"]
    assert summary["visibility"]["value"] == 0.0
    assert summary["share_of_voice"]["tracked"]["value"] is None
    assert summary["average_position"]["value"] is None


async def test_concurrent_generations_for_one_org_do_not_collide(
    analysed_settings: Settings,
) -> None:
    async with service(analysed_settings) as (context, api):
        org_id = uuid.UUID(await new_org(api))
        async with context.sessions() as session:
            org = await session.get_one(Org, org_id)
        made = await asyncio.gather(
            *(load_variations(context.sessions, context.analyst, org) for _ in range(4))
        )
        assert await stored_variations(context, str(org_id)) == {"HubSpot", "HubSpotCRM"}
    assert all(set(names) == {"HubSpot", "HubSpotCRM"} for names in made)


@pytest.mark.parametrize("dialect", ["postgres", "sqlite"])
async def test_the_analysis_migration_downgrades_and_upgrades(
    dialect: str, postgres_url: str, sqlite_url: str
) -> None:
    url = postgres_url if dialect == "postgres" else sqlite_url
    engine = create_engine(Settings(database_url=SecretStr(url)))

    def downgrade(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        command.downgrade(config, "0001")

    def columns(connection: Connection) -> set[str]:
        inspector = inspect(connection)
        return {
            f"{table}.{column['name']}"
            for table in ("run_mentions", "run_competitors")
            for column in inspector.get_columns(table)
        }

    added = {"run_mentions.negated", "run_competitors.source"}
    try:
        async with engine.begin() as connection:
            await connection.run_sync(downgrade)
            assert not added & await connection.run_sync(columns)
        await upgrade(engine)
        async with engine.connect() as connection:
            assert added <= await connection.run_sync(columns)
    finally:
        await engine.dispose()
