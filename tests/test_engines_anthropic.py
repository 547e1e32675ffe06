"""The Anthropic engine against the engine emulator, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
from pydantic import SecretStr

from app.clock import SystemClock
from app.engines.anthropic import AnthropicEngine
from app.engines.base import BrandContext, EngineCitation, EngineError, EngineRequest
from app.engines.ratelimit import LocalRateLimiter
from app.settings import Settings
from devtools.embedded import free_port
from devtools.emulator.answers import count_tokens
from devtools.emulator.config import (
    EmulatorConfig,
    Fault,
    FaultKind,
    ScriptedAnswer,
    ScriptedCitation,
)
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings

QUESTION = "What is the best CRM for agencies?"
ANSWER = (
    "Agencies in Germany usually shortlist these:\n\n"
    "1. **Acme Analytics** — strong reporting\n2. **Northwind Labs** — cheaper\n\n"
    "Both offer free trials."
)
SOURCES = [
    ScriptedCitation(url="https://www.g2.com/categories/crm", title="Best CRM | G2"),
    ScriptedCitation(url="https://acme-analytics.com/agencies", title="Acme for agencies"),
    ScriptedCitation(url="https://www.g2.com/categories/crm", title="Best CRM | G2"),
]
REQUEST = EngineRequest(question=QUESTION, location="DE", brand=BrandContext(name="Acme Analytics"))
G2 = EngineCitation("https://www.g2.com/categories/crm", "Best CRM | G2")
ACME = EngineCitation("https://acme-analytics.com/agencies", "Acme for agencies")


def engine_settings(emulator: EmulatorServer, **overrides: object) -> Settings:
    return Settings.model_validate(
        {
            **emulated_engine_settings(emulator.url),
            "anthropic_model": "claude-test",
            "anthropic_max_tokens": 1024,
            "anthropic_web_search_max_uses": 2,
            "anthropic_input_price_per_mtok": Decimal("1000"),
            "anthropic_output_price_per_mtok": Decimal("5000"),
            "anthropic_price_per_web_search": Decimal("0.01"),
            **overrides,
        }
    )


@asynccontextmanager
async def anthropic_engine(settings: Settings) -> AsyncIterator[AnthropicEngine]:
    engine = AnthropicEngine(settings, LocalRateLimiter(SystemClock()))
    try:
        yield engine
    finally:
        await engine.aclose()


def scripted(text: str = ANSWER) -> EmulatorConfig:
    return EmulatorConfig(answers=[ScriptedAnswer(match="crm", text=text, citations=SOURCES)])


async def test_asks_with_web_search_located_in_the_run_country(emulator: EmulatorServer) -> None:
    emulator.state.configure(scripted())
    async with anthropic_engine(engine_settings(emulator)) as engine:
        answer = await engine.ask(REQUEST)

    [logged] = emulator.state.logged("anthropic")
    assert logged.path == "/v1/messages"
    assert logged.headers["x-api-key"] == EMULATOR_KEYS["anthropic_api_key"]
    assert logged.headers["anthropic-version"] == "2023-06-01"
    assert logged.headers["content-type"] == "application/json"
    assert logged.body == {
        "model": "claude-test",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": QUESTION}],
        "tools": [
            {
                "type": "web_search_20250305",
                "name": "web_search",
                "max_uses": 2,
                "user_location": {"type": "approximate", "country": "DE"},
            }
        ],
    }

    # The text comes back split in cited blocks; joined, it is the answer as written.
    assert answer.text == ANSWER
    assert answer.citations == (G2, ACME)
    assert answer.model == "claude-test"
    assert answer.simulated is False
    assert answer.output_tokens == count_tokens(ANSWER)
    assert answer.input_tokens > count_tokens(QUESTION), "search results are billed as input"
    tokens_cost = (answer.input_tokens * 1000 + answer.output_tokens * 5000) / Decimal(10**6)
    assert answer.cost == (tokens_cost + Decimal("0.01")).quantize(Decimal("0.000001"))
    usage = answer.raw["usage"]
    assert isinstance(usage, dict)
    assert usage["server_tool_use"] == {"web_search_requests": 1}
    assert answer.raw["stop_reason"] == "end_turn"
    assert str(answer.raw["id"]).startswith("msg_")


async def test_without_web_search_there_are_no_tools_nor_search_costs(
    emulator: EmulatorServer,
) -> None:
    emulator.state.configure(scripted())
    async with anthropic_engine(engine_settings(emulator, anthropic_web_search=False)) as engine:
        answer = await engine.ask(REQUEST)

    [logged] = emulator.state.logged("anthropic")
    assert "tools" not in logged.body
    assert answer.text == ANSWER
    assert answer.citations == ()
    assert answer.input_tokens == count_tokens(QUESTION)
    tokens_cost = (answer.input_tokens * 1000 + answer.output_tokens * 5000) / Decimal(10**6)
    assert answer.cost == tokens_cost.quantize(Decimal("0.000001"))


async def test_uncited_text_falls_back_to_the_pages_searched(emulator: EmulatorServer) -> None:
    emulator.state.configure(scripted(text=""))
    async with anthropic_engine(engine_settings(emulator)) as engine:
        answer = await engine.ask(REQUEST)

    assert answer.citations == (G2, ACME)


async def test_generated_answers_cite_their_search_results(emulator: EmulatorServer) -> None:
    async with anthropic_engine(engine_settings(emulator)) as engine:
        answer = await engine.ask(REQUEST)

    assert answer.citations, "the emulated search always finds sources"
    assert all(c.url.startswith("https://") and c.title for c in answer.citations)


@pytest.mark.parametrize(
    ("kind", "retryable", "reason"),
    [
        ("server_error", True, "HTTP 500 api_error"),
        ("overloaded", True, "HTTP 529 overloaded_error"),
        ("quota_exhausted", False, "quota_exhausted: anthropic: HTTP 400"),
    ],
)
async def test_failures_are_classified(
    emulator: EmulatorServer, kind: FaultKind, retryable: bool, reason: str
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind=kind, times=1)]))
    async with anthropic_engine(engine_settings(emulator)) as engine:
        with pytest.raises(EngineError) as raised:
            await engine.ask(REQUEST)

    assert raised.value.retryable is retryable
    assert reason in raised.value.reason
    assert len(emulator.state.logged("anthropic")) == 1


async def test_rate_limits_carry_retry_after_in_whole_seconds(emulator: EmulatorServer) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="rate_limited", times=1, retry_after_seconds=1.25)])
    )
    async with anthropic_engine(engine_settings(emulator)) as engine:
        with pytest.raises(EngineError) as raised:
            await engine.ask(REQUEST)

    assert raised.value.retryable is True
    assert "HTTP 429 rate_limit_error" in raised.value.reason
    # Anthropic sends only Retry-After, rounded up so that waiting it is always enough.
    assert raised.value.retry_after == 2


async def test_a_stalled_call_times_out_as_retryable(emulator: EmulatorServer) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="stall", times=1, stall_seconds=1)]))
    async with anthropic_engine(engine_settings(emulator, anthropic_timeout_seconds=0.3)) as engine:
        with pytest.raises(EngineError) as raised:
            await engine.ask(REQUEST)

    assert raised.value.retryable is True
    assert raised.value.reason == "anthropic: no answer within 0.3 s"


async def test_a_rejected_key_is_not_retried(emulator: EmulatorServer) -> None:
    settings = engine_settings(emulator, anthropic_api_key=SecretStr(""))
    async with anthropic_engine(settings) as engine:
        with pytest.raises(EngineError) as raised:
            await engine.ask(REQUEST)

    assert raised.value.retryable is False
    assert "HTTP 401 authentication_error" in raised.value.reason


async def test_an_unreachable_provider_is_a_retryable_connection_error(
    emulator: EmulatorServer,
) -> None:
    closed_port = free_port()
    settings = engine_settings(emulator, anthropic_base_url=f"http://127.0.0.1:{closed_port}")
    async with anthropic_engine(settings) as engine:
        with pytest.raises(EngineError) as raised:
            await engine.ask(REQUEST)

    assert raised.value.retryable is True
    assert raised.value.reason.startswith("anthropic: connection failed")
