"""GET /engines, ENABLED_ENGINES shared by the API and the worker, and the countries an engine
does not serve refused when an org's matrix is set — over the real API."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from app.clock import SystemClock
from app.engines.catalogue import ENGINE_IDS
from app.engines.ratelimit import LocalRateLimiter
from app.engines.registry import EngineRegistry
from app.errors import InvalidInputError
from app.settings import Settings
from tests.conftest import make_settings
from tests.factories import create_org, create_partner, expect

ENABLED = ("openai", "brightdata_gemini", "brightdata_grok", "google_ai_overview", "gemini")


@pytest.fixture
def settings(postgres_url: str, queue_url: str, sqs_endpoint: str) -> Settings:
    # Listed out of catalogue order, with spaces: the order served is the catalogue's.
    return make_settings(
        postgres_url, queue_url, sqs_endpoint, enabled_engines=" gemini, " + ",".join(ENABLED)
    )


async def test_the_catalogue_lists_every_engine_and_what_this_deployment_serves(
    api: httpx.AsyncClient,
) -> None:
    engines = expect(await api.get("/engines"), 200)

    assert [e["id"] for e in engines] == list(ENGINE_IDS)
    by_id = {e["id"]: e for e in engines}
    assert {e["id"] for e in engines if e["configured"]} == set(ENABLED)
    assert by_id["gemini"] == {
        "id": "gemini",
        "provider": "gemini",
        "assistant": "Gemini (API, Google Search grounding)",
        "surface": "api",
        "countries": {"takes_country": False, "served": None, "not_served": []},
        "configured": True,
        "credentials": ["GEMINI_API_KEY"],
        "price_basis": by_id["gemini"]["price_basis"],
    }
    assert "grounding fee" in by_id["gemini"]["price_basis"]
    assert by_id["brightdata_gemini"]["surface"] == "scraped_ui"
    assert by_id["brightdata_gemini"]["countries"]["not_served"] == ["ES", "IN", "JP"]
    assert by_id["brightdata_grok"]["countries"]["takes_country"] is False
    overview = by_id["google_ai_overview"]
    assert (overview["surface"], overview["provider"]) == ("serp", "dataforseo")
    assert "DE" in overview["countries"]["served"]
    assert "IS" not in overview["countries"]["served"]
    assert overview["credentials"] == ["DATAFORSEO_LOGIN", "DATAFORSEO_PASSWORD"]
    assert {e["surface"] for e in engines} == {"api", "scraped_ui", "serp"}


async def test_the_catalogue_needs_a_key(api: httpx.AsyncClient) -> None:
    response = await api.get("/engines", headers={"Authorization": ""})
    assert response.status_code == 401


async def test_an_engine_the_deployment_does_not_serve_is_refused(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, engines=("openai",), locations=("US",))

    refused = await api.put(f"/orgs/{setup.org_id}/engines", json={"engines": ["openai", "linkup"]})

    assert refused.status_code == 422
    assert refused.json()["error"] == "unknown_engine"
    assert "engine 'linkup' is not enabled in this deployment" in refused.json()["detail"]


async def test_a_country_a_scraper_does_not_serve_is_refused_when_locations_are_set(
    api: httpx.AsyncClient,
) -> None:
    partner_id = await create_partner(api)
    setup = await create_org(
        api, partner_id, engines=("openai", "brightdata_gemini"), locations=("US",)
    )

    refused = await api.put(f"/orgs/{setup.org_id}/locations", json={"locations": ["US", "JP"]})

    assert refused.status_code == 422
    assert refused.json() == {
        "error": "unserved_country",
        "detail": "engine 'brightdata_gemini' does not serve country 'JP'",
    }
    org = expect(await api.get(f"/orgs/{setup.org_id}"), 200)
    assert org["locations"] == ["US"], "nothing changed"
    # Grok takes no country at all: any is accepted for it.
    expect(
        await api.put(f"/orgs/{setup.org_id}/engines", json={"engines": ["brightdata_grok"]}), 200
    )
    expect(await api.put(f"/orgs/{setup.org_id}/locations", json={"locations": ["JP"]}), 200)


async def test_an_engine_refused_for_a_location_already_set(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, engines=("openai",), locations=("IS", "ES"))

    refused = await api.put(
        f"/orgs/{setup.org_id}/engines",
        json={"engines": ["google_ai_overview", "brightdata_gemini"]},
    )

    assert refused.status_code == 422
    assert refused.json()["detail"] == (
        "engine 'google_ai_overview' does not serve country 'IS'; "
        "engine 'brightdata_gemini' does not serve country 'ES'"
    )


async def test_a_real_worker_will_not_start_with_an_enabled_engine_it_cannot_call() -> None:
    settings = Settings(
        engine_mode="real",
        enabled_engines="openai,perplexity",
        openai_api_key=SecretStr("sk-x"),
    )
    with pytest.raises(ValueError, match="perplexity: set PERPLEXITY_API_KEY"):
        EngineRegistry(settings, LocalRateLimiter(SystemClock()))
    with pytest.raises(ValueError, match="unknown engines: gpt-9"):
        EngineRegistry(Settings(enabled_engines="gpt-9"), LocalRateLimiter(SystemClock()))


async def test_unserved_countries_can_be_set_per_scraper() -> None:
    registry = EngineRegistry(
        Settings(brightdata_unserved_countries={"brightdata_gemini": ["fr"]}),
        LocalRateLimiter(SystemClock()),
    )
    try:
        registry.check_countries(["brightdata_gemini"], ["JP"])
        with pytest.raises(InvalidInputError, match="country 'FR'"):
            registry.check_countries(["brightdata_gemini"], ["FR"])
    finally:
        await registry.aclose()
