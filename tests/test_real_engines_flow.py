"""The real engine clients inside the whole flow (API over HTTP → SQS → worker → Postgres),
every provider served by the engine emulator over real HTTP: costs add up, retries wait as
long as the provider asked, quota errors are not retried, timeouts are, and an answer that is
not an answer is neither charged nor measured."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from app.context import AppContext
from app.db.models import QuestionRun, RunCitation, RunMention
from app.settings import Settings
from devtools.embedded import run_worker_task
from devtools.emulator.config import (
    PROVIDERS,
    Brand,
    EmulatorConfig,
    Fault,
    ScriptedAnswer,
    ScriptedCitation,
)
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import emulated_engine_settings
from tests.conftest import make_settings
from tests.db_checks import balance, run_stats
from tests.factories import QUESTIONS, create_org, create_partner, expect, wait_for_batch

ALL_ENGINES = (
    "openai",
    "azure_openai",
    "anthropic",
    "brightdata_chatgpt",
    "brightdata_perplexity",
    "linkup",
)
NEW_ENGINES = (
    "gemini",
    "perplexity",
    "brightdata_gemini",
    "brightdata_copilot",
    "brightdata_ai_mode",
    "brightdata_grok",
    "google_ai_overview",
)
FAST = 60_000  # requests per minute: the limiter is tested elsewhere, here it must not slow


@pytest.fixture
def settings(
    postgres_url: str, queue_url: str, sqs_endpoint: str, emulator: EmulatorServer
) -> Settings:
    return make_settings(
        postgres_url,
        queue_url,
        sqs_endpoint,
        **emulated_engine_settings(emulator.url),
        analysis_provider="simulated",
        redis_key_prefix=f"test-{uuid.uuid4().hex[:12]}",
        max_failed_run_ratio=0.6,
        openai_timeout_seconds=0.5,
        anthropic_timeout_seconds=0.5,
        **{f"{engine}_requests_per_minute": FAST for engine in PROVIDERS},
    )


async def _evaluate(
    api: httpx.AsyncClient,
    context: AppContext,
    *,
    engines: tuple[str, ...],
    questions: int = 1,
    locations: tuple[str, ...] = ("US",),
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(
        api, partner_id, questions=questions, engines=engines, locations=locations
    )
    accepted = expect(await api.post(f"/orgs/{setup.org_id}/evaluations", json={}), 202)
    async with run_worker_task(context):
        batch = await wait_for_batch(api, accepted["batch_id"])
    results = expect(
        await api.get(f"/batches/{accepted['batch_id']}/results", params={"limit": 200}), 200
    )
    return partner_id, batch, results


async def test_every_engine_answers_through_its_own_protocol(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    emulator.state.configure(
        EmulatorConfig(
            brand=Brand(
                name="HubSpot", domains=["hubspot.com"], competitors=["Salesforce", "Pipedrive"]
            )
        )
    )
    partner_id, batch, results = await _evaluate(
        api, context, engines=ALL_ENGINES, questions=2, locations=("US", "GB")
    )

    assert batch["status"] == "completed", batch
    assert batch["completed_runs"] == batch["charged_runs"] == 24
    assert await balance(context, partner_id) == Decimal("10.00") - 24 * Decimal("0.05")
    assert results["simulated"] is False
    assert set(results["by_engine"]) == set(ALL_ENGINES)
    runs = results["runs"]
    assert all(not run["simulated"] and run["answer"] for run in runs)
    # The batch's engine cost is the sum of its runs' costs, each priced by its provider.
    assert Decimal(batch["cost"]) == sum(Decimal(run["cost"]) for run in runs)
    by_engine = {engine: [r for r in runs if r["engine"] == engine] for engine in ALL_ENGINES}
    assert {Decimal(r["cost"]) for r in by_engine["linkup"]} == {Decimal("0.005")}
    assert {Decimal(r["cost"]) for r in by_engine["brightdata_chatgpt"]} == {Decimal("0.0015")}
    assert all(Decimal(r["cost"]) > 0 for r in by_engine["openai"] + by_engine["anthropic"])
    assert results["summary"]["visibility"]["value"] > 0, "the emulated answers name the org"

    calls = {provider: emulator.state.logged(provider) for provider in ("openai", "linkup")}
    assert len(calls["openai"]) == 4
    assert len(calls["linkup"]) == 4
    assert len(emulator.state.logged("azure_openai")) == 4
    assert len(emulator.state.logged("anthropic")) == 4
    countries = {
        c.body["web_search_options"]["user_location"]["approximate"]["country"]
        for c in calls["openai"]
    }
    assert countries == {"US", "GB"}, "each run's country goes to the provider"
    triggers = [c for c in emulator.state.logged("brightdata") if c.path.endswith("/trigger")]
    assert sum(len(trigger.body) for trigger in triggers) == 8
    assert {t.query["dataset_id"] for t in triggers} == {
        "gd_m7aof0k82r803d5bjm",
        "gd_m7dhdot1vw9a7gc1n",
    }


async def test_a_rate_limited_call_is_retried_no_sooner_than_retry_after(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    emulator.state.configure(
        EmulatorConfig(
            faults=[Fault(kind="rate_limited", provider="openai", times=1, retry_after_seconds=1.5)]
        )
    )
    _, batch, results = await _evaluate(api, context, engines=("openai",))

    assert batch["status"] == "completed", batch
    [run] = results["runs"]
    assert run["attempts"] == 2
    first, second = emulator.state.logged("openai")
    assert first.status == 429
    assert second.status == 200
    assert second.at - first.at >= 1.5


async def test_quota_exhaustion_is_not_retried(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="quota_exhausted", provider="linkup")])
    )
    partner_id, batch, results = await _evaluate(api, context, engines=("linkup",))

    assert batch["status"] == "failed", batch
    [run] = results["runs"]
    assert run["status"] == "failed"
    assert run["attempts"] == 1
    assert run["error"].startswith("quota_exhausted: linkup: HTTP 429 INSUFFICIENT_FUNDS_CREDITS")
    assert len(emulator.state.logged("linkup")) == 1
    assert batch["charged_runs"] == 0
    assert await balance(context, partner_id) == Decimal("10.00")


async def test_a_call_that_times_out_is_asked_again(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="stall", provider="anthropic", times=1, stall_seconds=3)])
    )
    _, batch, results = await _evaluate(api, context, engines=("anthropic",))

    assert batch["status"] == "completed", batch
    [run] = results["runs"]
    assert run["attempts"] == 2
    assert len(emulator.state.logged("anthropic")) == 2


async def test_an_answer_that_is_not_an_answer_is_not_charged_nor_measured(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    echoed = QUESTIONS[0]
    emulator.state.configure(
        EmulatorConfig(
            faults=[Fault(kind="auth_wall", provider="brightdata", times=1)],
            answers=[ScriptedAnswer(match=echoed, text=echoed, engines=["linkup"])],
        )
    )
    partner_id, batch, results = await _evaluate(
        api, context, engines=("brightdata_chatgpt", "linkup"), questions=3
    )

    failures = {run["error"] for run in results["runs"] if run["status"] == "failed"}
    assert failures == {
        "invalid_answer: sign-up or log-in wall instead of an answer",
        "invalid_answer: answer repeats the prompt",
    }
    rejected = [run for run in results["runs"] if run["status"] == "failed"]
    assert all(run["answer"] and run["mention"] is None for run in rejected), "kept to inspect"
    # The providers billed the rejected answers: the engine cost says so, the partner pays none.
    assert {Decimal(run["cost"]) for run in rejected} == {Decimal("0.0015"), Decimal("0.005")}
    assert Decimal(batch["cost"]) == sum(Decimal(run["cost"]) for run in results["runs"])
    assert batch["status"] == "completed", batch
    assert batch["completed_runs"] == batch["charged_runs"] == 4
    assert await balance(context, partner_id) == Decimal("10.00") - 4 * Decimal("0.05")
    summary = results["summary"]
    assert summary["completed_runs"] == 4
    assert summary["failed_runs"] == 2
    stats = await run_stats(context, batch["batch_id"])
    assert stats["ledger"] == 4


async def test_a_retried_run_keeps_what_its_rejected_answer_cost(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="auth_wall", provider="brightdata", times=1)])
    )
    _, failed, _ = await _evaluate(api, context, engines=("brightdata_chatgpt",))
    assert failed["status"] == "failed", failed
    assert Decimal(failed["cost"]) == Decimal("0.0015")

    # Triggering again resumes the failed batch: the run is asked again and now answers.
    resumed = expect(await api.post(f"/orgs/{failed['org_id']}/evaluations", json={}), 202)
    assert resumed["batch_id"] == failed["batch_id"]
    async with run_worker_task(context):
        batch = await wait_for_batch(api, failed["batch_id"])
    assert batch["status"] == "completed", batch
    assert Decimal(batch["cost"]) == Decimal("0.0030"), "both answers were billed to us"
    assert batch["charged_runs"] == 1


async def test_every_new_surface_records_what_it_searched(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    emulator.state.configure(
        EmulatorConfig(
            brand=Brand(name="HubSpot", domains=["hubspot.com"]),
            faults=[Fault(kind="no_ai_overview", provider="dataforseo", times=1)],
        )
    )
    _, batch, results = await _evaluate(
        api, context, engines=NEW_ENGINES, questions=2, locations=("DE",)
    )

    assert batch["status"] == "completed", batch
    assert batch["completed_runs"] == batch["charged_runs"] == 14
    assert all(run["status"] == "completed" for run in results["runs"])
    async with context.sessions() as session:
        runs = list(await session.scalars(select(QuestionRun)))
        mentioned = set(await session.scalars(select(RunMention.run_id)))
        cited = set(await session.scalars(select(RunCitation.run_id)))
    by_engine: dict[str, list[QuestionRun]] = {}
    for run in runs:
        by_engine.setdefault(run.engine_id, []).append(run)
    surfaces = {engine: {r.surface for r in rows} for engine, rows in by_engine.items()}
    assert surfaces == {
        "gemini": {"api"},
        "perplexity": {"api"},
        "brightdata_gemini": {"scraped_ui"},
        "brightdata_copilot": {"scraped_ui"},
        "brightdata_ai_mode": {"scraped_ui"},
        "brightdata_grok": {"scraped_ui"},
        "google_ai_overview": {"serp"},
    }
    for run in by_engine["gemini"] + by_engine["perplexity"]:
        assert run.searched is True
        assert run.search_queries == [run.question_text]
        assert run.model
    # One results page had no AI Overview: completed, charged, but neither mention nor citation.
    [absent] = [r for r in by_engine["google_ai_overview"] if not r.surface_present]
    [present] = [r for r in by_engine["google_ai_overview"] if r.surface_present]
    assert (absent.answer_text, absent.searched, absent.search_queries) == ("", None, None)
    assert absent.id not in mentioned | cited
    assert absent.charged_at is not None
    assert (present.searched, present.id in mentioned) == (True, True)
    dataforseo = emulator.state.logged("dataforseo")
    assert len(dataforseo) == 2
    assert {call.body[0]["location_code"] for call in dataforseo} == {2276}


async def test_geminis_retry_info_is_waited_before_asking_again(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    emulator.state.configure(
        EmulatorConfig(
            faults=[Fault(kind="rate_limited", provider="gemini", times=1, retry_after_seconds=1.5)]
        )
    )
    _, batch, results = await _evaluate(api, context, engines=("gemini",))

    assert batch["status"] == "completed", batch
    [run] = results["runs"]
    assert run["attempts"] == 2
    first, second = [c for c in emulator.state.logged("gemini") if "generateContent" in c.path]
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 1.5


def _answer_crm_with(emulator: EmulatorServer, text: str, *citations: tuple[str, str]) -> None:
    """Every question about CRM is answered with `text` and `citations` (URL, title); the
    brand is HubSpot, with Salesforce a competitor."""
    emulator.state.configure(
        EmulatorConfig(
            answers=[
                ScriptedAnswer(
                    match="CRM",
                    text=text,
                    citations=[ScriptedCitation(url=url, title=title) for url, title in citations],
                )
            ],
            brand=Brand(name="HubSpot", domains=["hubspot.com"], competitors=["Salesforce"]),
        )
    )


async def test_an_answer_with_nul_characters_is_stored_without_them(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    # Postgres text and JSON cannot hold NUL: a scraped page or a model may still send one.
    _answer_crm_with(
        emulator,
        "HubSpot\x00 is the best CRM;\x00 Salesforce is close.",
        ("https://hubspot.com/crm", "HubSpot\x00 CRM"),
    )
    partner_id, batch, results = await _evaluate(
        api, context, engines=("openai", "anthropic", "brightdata_perplexity", "linkup")
    )

    assert batch["status"] == "completed", batch
    assert batch["completed_runs"] == batch["charged_runs"] == 4
    assert await balance(context, partner_id) == Decimal("10.00") - 4 * Decimal("0.05")
    for run in results["runs"]:
        # Some providers add their sources to the text (OpenAI as a markdown link).
        assert run["answer"].startswith("HubSpot is the best CRM; Salesforce is close."), run
        assert "\x00" not in run["answer"], run
        assert run["mention"]["mentioned"] is True, run
        assert {c["domain"] for c in run["citations"]} == {"hubspot.com"}, run
        assert all("\x00" not in (c.get("title") or "") for c in run["citations"]), run


async def test_a_citation_whose_host_no_dns_name_could_have_is_kept_without_a_domain(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    # A 300-character "domain" overflowed its column: the write failed, and so the batch.
    garbage = f"https://{'a' * 300}.com/page"
    _answer_crm_with(
        emulator,
        "HubSpot is the best CRM; Salesforce is close.",
        ("https://hubspot.com/crm", "HubSpot CRM"),
        (garbage, "Garbage"),
    )
    _, batch, results = await _evaluate(
        api, context, engines=("openai", "anthropic", "brightdata_perplexity", "linkup")
    )

    assert batch["status"] == "completed", batch
    assert batch["completed_runs"] == batch["charged_runs"] == 4
    for run in results["runs"]:
        cited = {c["url"]: c["domain"] for c in run["citations"]}
        assert cited.get("https://hubspot.com/crm") == "hubspot.com", run
        assert cited.get(garbage, "absent") is None, run


async def test_a_scraped_answer_cut_inside_an_emoji_is_stored_with_a_replacement_character(
    api: httpx.AsyncClient, context: AppContext, emulator: EmulatorServer
) -> None:
    # A browser's JSON.stringify escapes a lone UTF-16 surrogate ("\ud83d"); decoded, it has
    # no UTF-8 form, so Postgres cannot take it. It failed the run's write, and so the batch.
    _answer_crm_with(
        emulator,
        "HubSpot is the best CRM \ud83d; Salesforce is close.",
        ("https://hubspot.com/crm", "HubSpot \udc00CRM"),
    )
    partner_id, batch, results = await _evaluate(
        api, context, engines=("brightdata_chatgpt", "brightdata_perplexity")
    )

    assert batch["status"] == "completed", batch
    assert batch["completed_runs"] == batch["charged_runs"] == 2
    assert await balance(context, partner_id) == Decimal("10.00") - 2 * Decimal("0.05")
    for run in results["runs"]:
        assert run["answer"].startswith("HubSpot is the best CRM \ufffd; Salesforce is close."), run
        assert run["mention"]["mentioned"] is True, run
        assert [(c["domain"], c["title"]) for c in run["citations"]] == [
            ("hubspot.com", "HubSpot \ufffdCRM")
        ], run
