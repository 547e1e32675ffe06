"""The Gemini client against the engine emulator, over real HTTP: the generateContent request,
grounding chunks resolved through their redirects, usage and the grounding fee, and Google's
429s (RetryInfo waited, a per-day quota not retried)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from app.clock import SystemClock
from app.engines.base import BrandContext, EngineCitation, EngineError, EngineRequest
from app.engines.costs import token_cost
from app.engines.gemini import GeminiEngine
from app.engines.ratelimit import LocalRateLimiter
from app.settings import Settings
from devtools.emulator.config import (
    EmulatorConfig,
    Fault,
    FaultKind,
    ScriptedAnswer,
    ScriptedCitation,
)
from devtools.emulator.server import EmulatorServer
from devtools.emulator.state import LoggedRequest
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings

MODEL = "gemini-3-flash-preview"
QUESTION = "Which CRM suits a retailer in Germany?"
ANSWER = ScriptedAnswer(
    match="crm suits a retailer",
    text="**Acme CRM** is the usual pick for retailers, ahead of Northwind.",
    citations=[
        ScriptedCitation(url="https://www.g2.com/categories/crm", title="G2 grid"),
        ScriptedCitation(url="https://acme-crm.com/retail"),
    ],
)
REQUEST = EngineRequest(QUESTION, "DE", BrandContext(name="Acme CRM"))
PRICES = {
    "gemini_input_price_per_mtok": Decimal("0.50"),
    "gemini_output_price_per_mtok": Decimal("3.00"),
    "gemini_grounding_fee": Decimal("0.014"),
    "gemini_requests_per_minute": 6000,
}
GENERATE = f"/v1beta/models/{MODEL}:generateContent"

MakeEngine = Callable[..., GeminiEngine]


@pytest.fixture
async def make_engine(emulator: EmulatorServer) -> AsyncIterator[MakeEngine]:
    engines: list[GeminiEngine] = []

    def make(**overrides: object) -> GeminiEngine:
        settings = Settings.model_validate(
            {**emulated_engine_settings(emulator.url), **PRICES, **overrides}
        )
        engine = GeminiEngine(settings, LocalRateLimiter(SystemClock()))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


def calls(emulator: EmulatorServer) -> list[LoggedRequest]:
    return [e for e in emulator.state.logged("gemini") if e.path == GENERATE]


def redirects(emulator: EmulatorServer) -> list[LoggedRequest]:
    return [e for e in emulator.state.logged("gemini") if "/grounding-api-redirect/" in e.path]


async def test_grounded_answer_with_redirects_resolved_usage_and_fee(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[ANSWER]))

    answer = await make_engine().ask(REQUEST)

    [logged] = calls(emulator)
    assert (logged.method, logged.status) == ("POST", 200)
    assert logged.headers["x-goog-api-key"] == EMULATOR_KEYS["gemini_api_key"]
    assert logged.body == {
        "contents": [{"role": "user", "parts": [{"text": QUESTION}]}],
        "tools": [{"google_search": {}}],
    }
    assert answer.text == ANSWER.text
    # The chunks' redirect links, followed to the pages; the chunk title (the domain) kept.
    assert answer.citations == (
        EngineCitation("https://www.g2.com/categories/crm", "www.g2.com"),
        EngineCitation("https://acme-crm.com/retail", "acme-crm.com"),
    )
    followed = redirects(emulator)
    assert len(followed) == 2
    assert all(e.status == 302 and "x-goog-api-key" not in e.headers for e in followed)
    usage = answer.raw["usage"]
    assert isinstance(usage, dict)
    assert answer.input_tokens == usage["prompt_token_count"] + usage["tool_use_prompt_token_count"]
    assert answer.output_tokens == usage["candidates_token_count"] + usage["thoughts_token_count"]
    assert usage["thoughts_token_count"] > 0, "thinking is billed as output"
    # Gemini reported one real query and an empty string: one query's fee.
    assert answer.search_queries == (QUESTION,)
    assert answer.cost == token_cost(
        answer.input_tokens, answer.output_tokens, Decimal("0.50"), Decimal("3.00")
    ) + Decimal("0.014")
    assert (answer.surface, answer.searched, answer.surface_present) == ("api", True, True)
    assert answer.model == MODEL
    assert answer.raw["location_applied"] is False


async def test_resolved_redirects_are_cached(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[ANSWER]))
    engine = make_engine()

    first = await engine.ask(REQUEST)
    second = await engine.ask(REQUEST)

    assert first.citations == second.citations
    assert len(calls(emulator)) == 2
    assert len(redirects(emulator)) == 2, "each link followed once"


async def test_an_expired_redirect_cites_the_chunks_domain(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(
        EmulatorConfig(answers=[ANSWER], faults=[Fault(kind="redirect_expired", times=1)])
    )

    answer = await make_engine().ask(REQUEST)

    assert answer.citations == (
        EngineCitation("https://www.g2.com/", "www.g2.com"),
        EngineCitation("https://acme-crm.com/retail", "acme-crm.com"),
    )
    assert answer.raw["unresolved_redirects"] == 1


async def test_a_per_prompt_fee_is_charged_once(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[ANSWER]))
    engine = make_engine(
        gemini_grounding_fee_basis="per_prompt", gemini_grounding_fee=Decimal("0.035")
    )

    answer = await engine.ask(REQUEST)

    tokens = token_cost(answer.input_tokens, answer.output_tokens, Decimal("0.50"), Decimal("3"))
    assert answer.cost == tokens + Decimal("0.035")


async def test_resource_exhausted_waits_as_long_as_retry_info_says(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    fault = Fault(kind="rate_limited", provider="gemini", times=1, retry_after_seconds=31)
    emulator.state.configure(EmulatorConfig(faults=[fault]))
    engine = make_engine()

    with pytest.raises(EngineError) as raised:
        await engine.ask(REQUEST)

    [refused] = calls(emulator)
    assert refused.status == 429
    assert raised.value.retryable
    # From the body's google.rpc.RetryInfo: Gemini sends no Retry-After header.
    assert raised.value.retry_after == 31
    assert "RESOURCE_EXHAUSTED" in raised.value.reason
    assert (await engine.ask(REQUEST)).text


async def test_a_spent_daily_quota_is_not_retried(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="daily_quota")]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(REQUEST)

    assert not raised.value.retryable
    assert raised.value.reason.startswith("quota_exhausted: gemini: HTTP 429 RESOURCE_EXHAUSTED")
    assert len(calls(emulator)) == 1


@pytest.mark.parametrize(("kind", "status"), [("server_error", 500), ("overloaded", 503)])
async def test_internal_and_unavailable_are_retryable(
    emulator: EmulatorServer, make_engine: MakeEngine, kind: FaultKind, status: int
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind=kind, times=1)]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(REQUEST)

    assert raised.value.retryable
    assert f"HTTP {status}" in raised.value.reason
