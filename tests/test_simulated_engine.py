from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from app.engines.base import BrandContext, Engine, EngineAnswer, EngineError, EngineRequest
from app.engines.catalogue import ENGINE_IDS
from app.engines.simulated import SimulatedEngine

BRAND = BrandContext(
    name="HubSpot",
    aliases=("HubSpot CRM",),
    domains=("hubspot.com",),
    competitors=("Salesforce", "Pipedrive", "Zoho CRM", "monday.com", "Freshsales"),
)
QUESTION = "What is the best CRM for small businesses in Germany?"
SEGMENTS = ("small businesses", "agencies", "startups", "nonprofits", "law firms")
MARKETS = ("DE", "FR", "GB", "US", "ES", "IT", "NL", "SE", "PL", "JP")
# Ten segments x ten markets: enough answers for rates and spreads to settle.
QUESTIONS = [
    (f"Which CRM is best for {segment} {suffix}?", market)
    for segment in SEGMENTS
    for suffix in ("right now", "on a budget")
    for market in MARKETS
]
TOP_LEVEL_ITEM = re.compile(r"^(?:\d+\.|-) \*\*(?P<name>[^*]+)\*\*", re.MULTILINE)


def make_engine(
    engine_id: str = "brightdata_perplexity", *, latency_ms: int = 0, failure_rate: float = 0.0
) -> SimulatedEngine:
    return SimulatedEngine(engine_id, latency_ms=latency_ms, failure_rate=failure_rate)


def make_request(
    question: str = QUESTION, location: str = "DE", *, brand: BrandContext = BRAND, attempt: int = 1
) -> EngineRequest:
    return EngineRequest(question=question, location=location, brand=brand, attempt=attempt)


def without_latency(answer: EngineAnswer) -> EngineAnswer:
    return dataclasses.replace(answer, latency_ms=0)


def listed_names(answer: EngineAnswer) -> list[str]:
    return [match["name"] for match in TOP_LEVEL_ITEM.finditer(answer.text)]


def org_position(answer: EngineAnswer) -> int | None:
    own = {BRAND.name, *BRAND.aliases}
    names = listed_names(answer)
    return next((i for i, name in enumerate(names, 1) if name in own), None)


async def ask_all(engine_id: str) -> list[EngineAnswer]:
    engine = make_engine(engine_id)
    return [await engine.ask(make_request(q, loc)) for q, loc in QUESTIONS]


def test_satisfies_engine_protocol() -> None:
    engine: Engine = make_engine("openai")
    assert engine.engine_id == "openai"


@pytest.mark.parametrize("engine_id", ENGINE_IDS)
async def test_same_request_gives_identical_answers(engine_id: str) -> None:
    first = await make_engine(engine_id).ask(make_request())
    second = await make_engine(engine_id).ask(make_request(attempt=2))
    assert without_latency(first) == without_latency(second)


ANSWER_IN_A_FRESH_PROCESS = """
import asyncio
from tests.test_simulated_engine import make_engine, make_request
print(asyncio.run(make_engine("linkup").ask(make_request())).text)
"""


async def test_answers_survive_process_hash_randomisation() -> None:
    expected = (await make_engine("linkup").ask(make_request())).text
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run(  # noqa: ASYNC221 - a one-off child process in a test
            [sys.executable, "-c", ANSWER_IN_A_FRESH_PROCESS],
            capture_output=True,
            text=True,
            env=env,
            cwd=Path(__file__).parents[1],
            check=True,
        )
        assert run.stdout == expected + "\n"


async def test_answers_vary_across_questions_locations_and_engines() -> None:
    engine = make_engine()
    questions = sorted({question for question, _ in QUESTIONS})
    by_question = {(await engine.ask(make_request(q))).text for q in questions}
    by_location = {(await engine.ask(make_request(location=loc))).text for loc in MARKETS}
    by_engine = {(await make_engine(e).ask(make_request())).text for e in ENGINE_IDS}
    assert len(by_question) == len(questions)
    assert len(by_location) == len(MARKETS)
    assert len(by_engine) == len(ENGINE_IDS)


async def test_intro_names_the_country_falling_back_to_its_code() -> None:
    engine = make_engine("openai")
    assert "Germany" in (await engine.ask(make_request(location="DE"))).text
    assert "the United States" in (await engine.ask(make_request(location="US"))).text
    assert " LI" in (await engine.ask(make_request(location="LI"))).text


@pytest.mark.parametrize("engine_id", ["openai", "brightdata_perplexity"])
async def test_org_appears_in_most_answers_at_varied_positions(engine_id: str) -> None:
    answers = await ask_all(engine_id)
    positions = [org_position(a) for a in answers]
    ranked = [p for p in positions if p is not None]
    assert 0.6 * len(answers) <= len(ranked) <= 0.9 * len(answers)
    assert len(set(ranked)) >= 4
    assert ranked.count(1) < 0.5 * len(ranked)
    assert all(3 <= len(listed_names(a)) <= 6 for a in answers)


async def test_absent_org_is_not_named_anywhere() -> None:
    answers = await ask_all("anthropic")
    absent = [a for a in answers if org_position(a) is None]
    assert absent
    assert not any("HubSpot" in a.text for a in absent)


async def test_answers_use_aliases_possessives_links_and_bare_urls() -> None:
    texts = [a.text for a in await ask_all("azure_openai")]
    assert any("**HubSpot CRM**" in t for t in texts)
    assert any("HubSpot's" in t for t in texts)
    assert any("[HubSpot](https://www.hubspot.com/" in t for t in texts)
    assert any("[Zoho CRM](https://www.zohocrm.com/" in t for t in texts)
    assert any(re.search(r"(?<!\()https://\S+\.$", t, re.MULTILINE) for t in texts)
    assert any("\n- **" in t for t in texts)


async def test_without_competitors_invents_plausible_rivals() -> None:
    alone = BrandContext(name="Acme", domains=("acme.io",))
    engine = make_engine("linkup")
    answers = [await engine.ask(make_request(q, loc, brand=alone)) for q, loc in QUESTIONS[:20]]
    rivals = {name for a in answers for name in listed_names(a)} - {"Acme"}
    assert len(rivals) >= 4
    assert all(re.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+", name) for name in rivals)


@pytest.mark.parametrize(
    "engine_id", ["anthropic", "brightdata_chatgpt", "brightdata_perplexity", "linkup"]
)
async def test_search_style_engines_return_citations(engine_id: str) -> None:
    answers = await ask_all(engine_id)
    urls = [c.url for a in answers for c in a.citations]
    assert all(2 <= len(a.citations) <= 5 for a in answers)
    assert all(len({c.url for c in a.citations}) == len(a.citations) for a in answers)
    assert any(u.startswith("https://www.hubspot.com/") for u in urls)
    assert any("g2.com" in u or "capterra.com" in u for u in urls)
    assert any(re.match(r"https://[a-z]+\.[a-z]+\.co\.uk/", u) for u in urls)


async def test_perplexity_numbers_its_sources_within_range() -> None:
    for answer in await ask_all("brightdata_perplexity"):
        markers = {int(n) for n in re.findall(r" \[(\d+)\]", answer.text)}
        assert markers
        assert max(markers) <= len(answer.citations)


@pytest.mark.parametrize("engine_id", ["openai", "azure_openai"])
async def test_model_style_engines_return_no_citations(engine_id: str) -> None:
    assert all(not a.citations for a in await ask_all(engine_id))


async def test_reports_tokens_cost_model_and_simulation() -> None:
    answer = await make_engine("openai").ask(make_request())
    assert len(QUESTION) // 4 < answer.input_tokens <= len(QUESTION) // 4 + 20
    assert abs(answer.output_tokens - len(answer.text) / 4) <= 1
    expected = (
        answer.input_tokens * Decimal("0.0025") + answer.output_tokens * Decimal("0.01")
    ) / 1000
    assert answer.cost == expected.quantize(Decimal("0.000001"))
    assert answer.cost.as_tuple().exponent == -6
    assert answer.model == "simulated-gpt-4o"
    assert answer.simulated is True
    assert answer.raw["simulated"] is True
    assert re.fullmatch(r"[0-9a-f]{32}", str(answer.raw["seed"]))


async def test_models_and_prices_differ_by_engine() -> None:
    answers = [await make_engine(e).ask(make_request()) for e in ENGINE_IDS]
    assert len({a.model for a in answers}) == len(ENGINE_IDS)
    assert all(a.model.startswith("simulated-") for a in answers)


async def test_never_fails_at_rate_zero() -> None:
    engine = make_engine(failure_rate=0.0)
    for question, location in QUESTIONS:
        await engine.ask(make_request(question, location))


async def test_always_fails_at_rate_one_with_a_retryable_error() -> None:
    engine = make_engine(failure_rate=1.0)
    for question, location in QUESTIONS[:20]:
        with pytest.raises(EngineError) as caught:
            await engine.ask(make_request(question, location))
        assert caught.value.retryable is True
        assert caught.value.reason == "simulated transient failure"


async def outcomes(engine: SimulatedEngine, requests: list[EngineRequest]) -> list[bool]:
    failed: list[bool] = []
    for request in requests:
        try:
            await engine.ask(request)
        except EngineError:
            failed.append(True)
        else:
            failed.append(False)
    return failed


async def test_fails_at_about_the_configured_rate() -> None:
    requests = [make_request(q, loc) for q, loc in QUESTIONS]
    failed = await outcomes(make_engine(failure_rate=0.3), requests)
    assert 0.15 * len(requests) <= sum(failed) <= 0.45 * len(requests)


async def test_failures_are_deterministic_but_change_with_the_attempt() -> None:
    engine = make_engine(failure_rate=0.5)
    retries = [make_request(attempt=attempt) for attempt in range(1, 31)]
    first = await outcomes(engine, retries)
    assert first == await outcomes(make_engine(failure_rate=0.5), retries)
    assert any(first)
    assert not all(first)


def test_rejects_unknown_engine_and_bad_settings() -> None:
    with pytest.raises(ValueError, match="unknown engine id 'gpt-9'"):
        make_engine("gpt-9")
    with pytest.raises(ValueError, match="latency_ms"):
        make_engine(latency_ms=-1)
    with pytest.raises(ValueError, match="failure_rate"):
        make_engine(failure_rate=1.5)


async def test_latency_is_roughly_respected_and_reported() -> None:
    started = time.perf_counter()
    answer = await make_engine(latency_ms=80).ask(make_request())
    elapsed_ms = (time.perf_counter() - started) * 1000
    # It waited at least the latency less its jitter, and reports what it waited.
    assert 0.75 * 80 - 5 <= answer.latency_ms <= elapsed_ms + 1


async def test_aclose_is_harmless() -> None:
    engine = make_engine()
    await engine.aclose()
    await engine.aclose()
