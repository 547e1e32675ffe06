"""The OpenAI and Azure OpenAI engines against the engine emulator, over real HTTP."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from app.clock import SystemClock
from app.engines.base import BrandContext, EngineCitation, EngineError, EngineRequest
from app.engines.openai_chat import AzureOpenAIEngine, OpenAIEngine
from app.engines.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from app.settings import Settings
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
from tests.clock import RecordingClock
from tests.conftest import REDIS_URL

QUESTION = "Which payroll software is best for small businesses?"
ANSWER = "1. **Acme Analytics** – quick to set up\n2. **Northwind Labs** – cheaper"
SOURCES = [
    ScriptedCitation(url="https://www.g2.com/categories/payroll", title="Best payroll | G2"),
    ScriptedCitation(url="https://acme-analytics.com/pricing", title="Acme pricing"),
    ScriptedCitation(url="https://www.g2.com/categories/payroll", title="Best payroll | G2"),
]
SCRIPTED = EmulatorConfig(answers=[ScriptedAnswer(match="payroll", text=ANSWER, citations=SOURCES)])
REQUEST = EngineRequest(question=QUESTION, location="GB", brand=BrandContext(name="Acme Analytics"))


def engine_settings(emulator: EmulatorServer, **overrides: object) -> Settings:
    return Settings.model_validate(
        {
            **emulated_engine_settings(emulator.url),
            "openai_model": "gpt-test-search",
            "openai_input_price_per_mtok": Decimal("1000"),
            "openai_output_price_per_mtok": Decimal("3000"),
            "azure_openai_deployment": "senso-gpt4o",
            "azure_openai_api_version": "2024-10-21",
            "azure_openai_input_price_per_mtok": Decimal("500"),
            "azure_openai_output_price_per_mtok": Decimal("1500"),
            **overrides,
        }
    )


@asynccontextmanager
async def openai_engine(
    settings: Settings, limiter: RateLimiter | None = None
) -> AsyncIterator[OpenAIEngine]:
    engine = OpenAIEngine(settings, limiter or LocalRateLimiter(SystemClock()))
    try:
        yield engine
    finally:
        await engine.aclose()


async def test_openai_asks_the_bare_question_with_the_run_location(
    emulator: EmulatorServer,
) -> None:
    emulator.state.configure(SCRIPTED)
    async with openai_engine(engine_settings(emulator)) as engine:
        answer = await engine.ask(REQUEST)

    [logged] = emulator.state.logged("openai")
    assert logged.path == "/v1/chat/completions"
    assert logged.headers["authorization"] == f"Bearer {EMULATOR_KEYS['openai_api_key']}"
    assert logged.body["model"] == "gpt-test-search"
    assert logged.body["messages"] == [{"role": "user", "content": QUESTION}]
    assert logged.body["web_search_options"] == {
        "user_location": {"type": "approximate", "approximate": {"country": "GB"}}
    }
    assert logged.headers["x-stainless-retry-count"] == "0"

    # Search models link their sources inline; the annotations become the citations, once each.
    assert answer.text.startswith(ANSWER)
    assert "([www.g2.com](https://www.g2.com/categories/payroll))" in answer.text
    assert answer.citations == (
        EngineCitation("https://www.g2.com/categories/payroll", "Best payroll | G2"),
        EngineCitation("https://acme-analytics.com/pricing", "Acme pricing"),
    )
    assert answer.model == "gpt-test-search"
    assert answer.simulated is False
    assert answer.input_tokens == count_tokens(QUESTION)
    assert answer.output_tokens == count_tokens(answer.text)
    expected_cost = (answer.input_tokens * 1000 + answer.output_tokens * 3000) / Decimal(10**6)
    assert answer.cost == expected_cost.quantize(Decimal("0.000001"))
    assert answer.cost > 0
    assert answer.latency_ms >= 0
    assert answer.raw["web_search"] is True
    assert answer.raw["finish_reason"] == "stop"
    assert str(answer.raw["id"]).startswith("chatcmpl-")
    assert answer.raw["usage"] == {
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
    }


async def test_openai_without_web_search_sends_no_search_options(emulator: EmulatorServer) -> None:
    emulator.state.configure(SCRIPTED)
    async with openai_engine(engine_settings(emulator, openai_web_search=False)) as engine:
        answer = await engine.ask(REQUEST)

    [logged] = emulator.state.logged("openai")
    assert "web_search_options" not in logged.body
    assert answer.text == ANSWER
    assert answer.citations == ()
    assert answer.raw["web_search"] is False


async def test_azure_calls_the_deployment_with_its_api_key(emulator: EmulatorServer) -> None:
    emulator.state.configure(SCRIPTED)
    engine = AzureOpenAIEngine(engine_settings(emulator), LocalRateLimiter(SystemClock()))
    try:
        answer = await engine.ask(REQUEST)
    finally:
        await engine.aclose()

    [logged] = emulator.state.logged("azure_openai")
    assert logged.path == "/openai/deployments/senso-gpt4o/chat/completions"
    assert logged.query == {"api-version": "2024-10-21"}
    assert logged.headers["api-key"] == EMULATOR_KEYS["azure_openai_api_key"]
    assert "authorization" not in logged.headers
    assert logged.body["model"] == "senso-gpt4o"
    assert logged.body["messages"] == [{"role": "user", "content": QUESTION}]
    assert "web_search_options" not in logged.body

    assert answer.text == ANSWER
    assert answer.citations == ()
    assert answer.model == "senso-gpt4o"
    expected_cost = (answer.input_tokens * 500 + answer.output_tokens * 1500) / Decimal(10**6)
    assert answer.cost == expected_cost.quantize(Decimal("0.000001"))


@pytest.mark.parametrize(
    ("kind", "retryable", "reason"),
    [
        ("server_error", True, "HTTP 500"),
        ("overloaded", True, "HTTP 503"),
        ("quota_exhausted", False, "quota_exhausted"),
    ],
)
async def test_openai_failures_are_classified(
    emulator: EmulatorServer, kind: FaultKind, retryable: bool, reason: str
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind=kind, times=1)]))
    async with openai_engine(engine_settings(emulator)) as engine:
        with pytest.raises(EngineError) as raised:
            await engine.ask(REQUEST)

    assert raised.value.retryable is retryable
    assert reason in raised.value.reason
    assert EMULATOR_KEYS["openai_api_key"] not in raised.value.reason
    # One provider call per ask: retrying is the run loop's decision, not the client's.
    assert len(emulator.state.logged("openai")) == 1


async def test_rate_limits_carry_retry_after_ms(emulator: EmulatorServer) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="rate_limited", times=2, retry_after_seconds=1.25)])
    )
    settings = engine_settings(emulator)
    azure = AzureOpenAIEngine(settings, LocalRateLimiter(SystemClock()))
    async with openai_engine(settings) as engine:
        with pytest.raises(EngineError) as from_openai:
            await engine.ask(REQUEST)
        try:
            with pytest.raises(EngineError) as from_azure:
                await azure.ask(REQUEST)
        finally:
            await azure.aclose()

    for raised in (from_openai.value, from_azure.value):
        assert raised.retryable is True
        assert "HTTP 429" in raised.reason
        # retry-after-ms (1250) is more precise than Retry-After (2) and is preferred.
        assert raised.retry_after == pytest.approx(1.25)


async def test_a_stalled_call_times_out_as_retryable(emulator: EmulatorServer) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="stall", times=1, stall_seconds=1)]))
    async with openai_engine(engine_settings(emulator, openai_timeout_seconds=0.3)) as engine:
        # The stall (1 s) outlasts the client's timeout (0.3 s): the call gives up first.
        with pytest.raises(EngineError) as raised:
            await engine.ask(REQUEST)
        # The next attempt is answered normally.
        assert (await engine.ask(REQUEST)).text

    assert raised.value.retryable is True
    assert raised.value.reason == "openai: no answer within 0.3 s"


async def test_calls_are_spaced_by_the_shared_rate_limit(emulator: EmulatorServer) -> None:
    redis = Redis.from_url(REDIS_URL)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    clock = RecordingClock()
    settings = engine_settings(emulator, openai_requests_per_minute=120, rate_limit_burst=1)
    try:
        async with openai_engine(settings, RedisRateLimiter(redis, prefix, clock)) as engine:
            await asyncio.gather(engine.ask(REQUEST), engine.ask(REQUEST))
        assert await redis.zcard(f"{prefix}:ratelimit:openai:slots") == 0
        assert await redis.exists(f"{prefix}:ratelimit:openai:tat"), "the openai limit was used"
    finally:
        await redis.delete(f"{prefix}:ratelimit:openai:slots", f"{prefix}:ratelimit:openai:tat")
        await redis.aclose()

    first, second = emulator.state.logged("openai")
    # 120 a minute with no burst: one every half second, across every process sharing Redis.
    # The limiter made the second call wait for its place, unless it came that late anyway.
    assert clock.sleeps or second.at - first.at >= 0.5, (clock.sleeps, second.at - first.at)
    assert all(0 < wait <= 0.5 for wait in clock.sleeps), clock.sleeps


async def test_concurrent_calls_are_capped(emulator: EmulatorServer) -> None:
    emulator.state.configure(EmulatorConfig(latency_ms=200))
    settings = engine_settings(
        emulator, openai_max_concurrency=1, openai_requests_per_minute=60_000, rate_limit_burst=5
    )
    async with openai_engine(settings) as engine:
        await asyncio.gather(engine.ask(REQUEST), engine.ask(REQUEST))

    first, second = emulator.state.logged("openai")
    assert second.at - first.at >= 0.19


def test_engines_need_their_credentials(emulator: EmulatorServer) -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIEngine(
            engine_settings(emulator, openai_api_key=None), LocalRateLimiter(SystemClock())
        )
    with pytest.raises(ValueError, match="AZURE_OPENAI_ENDPOINT"):
        AzureOpenAIEngine(
            engine_settings(emulator, azure_openai_endpoint=None), LocalRateLimiter(SystemClock())
        )
