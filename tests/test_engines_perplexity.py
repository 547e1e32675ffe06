"""The Perplexity Agent API client against the engine emulator, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from app.clock import SystemClock
from app.engines.base import BrandContext, EngineCitation, EngineError, EngineRequest
from app.engines.perplexity import PerplexityEngine
from app.engines.ratelimit import LocalRateLimiter
from app.settings import Settings
from devtools.emulator.answers import count_tokens
from devtools.emulator.config import EmulatorConfig, Fault, ScriptedAnswer, ScriptedCitation
from devtools.emulator.perplexity import SEARCH_PRICE
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings

QUESTION = "Which payroll tool do French startups use?"
ANSWER = ScriptedAnswer(
    match="payroll tool do french startups",
    text="Most French startups pick **PayFlow**, with Northwind a close second.",
    citations=[
        ScriptedCitation(url="https://www.lesechos.fr/payroll", title="Les Echos"),
        ScriptedCitation(url="https://payflow.fr/"),
    ],
)
REQUEST = EngineRequest(QUESTION, "FR", BrandContext(name="PayFlow"))

MakeEngine = Callable[..., PerplexityEngine]


@pytest.fixture
async def make_engine(emulator: EmulatorServer) -> AsyncIterator[MakeEngine]:
    engines: list[PerplexityEngine] = []

    def make(**overrides: object) -> PerplexityEngine:
        settings = Settings.model_validate(
            {
                **emulated_engine_settings(emulator.url),
                "perplexity_requests_per_minute": 6000,
                **overrides,
            }
        )
        engine = PerplexityEngine(settings, LocalRateLimiter(SystemClock()))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


async def test_agent_request_with_the_runs_country_and_the_reported_cost(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[ANSWER]))

    answer = await make_engine(perplexity_search_context_size="high").ask(REQUEST)

    [logged] = emulator.state.logged("perplexity")
    assert (logged.method, logged.path, logged.status) == ("POST", "/v1/agent", 200)
    assert logged.headers["authorization"] == f"Bearer {EMULATOR_KEYS['perplexity_api_key']}"
    assert logged.body == {
        "model": "perplexity/sonar",
        "input": QUESTION,
        "tools": [
            {
                "type": "web_search",
                "search_context_size": "high",
                "user_location": {"country": "FR"},
            }
        ],
    }
    assert answer.text == ANSWER.text
    assert answer.citations == (
        EngineCitation("https://www.lesechos.fr/payroll", "Les Echos"),
        EngineCitation("https://payflow.fr/", "https://payflow.fr/"),
    )
    tokens = count_tokens(QUESTION), count_tokens(ANSWER.text)
    assert (answer.input_tokens, answer.output_tokens) == tokens
    # What Perplexity reported: the search and the tokens at the emulator's list price.
    assert answer.cost == SEARCH_PRICE + sum(tokens) * Decimal("0.000001")
    assert (answer.surface, answer.searched, answer.search_queries) == ("api", True, (QUESTION,))
    assert answer.model == "perplexity/sonar"


async def test_a_failed_response_behind_http_200_is_an_error(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="response_failed", times=1)]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(REQUEST)

    assert raised.value.retryable
    assert raised.value.reason == "perplexity: response failed: The agent run failed"
    assert emulator.state.logged("perplexity")[0].status == 200


async def test_rate_limited_waits_for_retry_after(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    fault = Fault(kind="rate_limited", provider="perplexity", times=1, retry_after_seconds=4)
    emulator.state.configure(EmulatorConfig(faults=[fault]))
    engine = make_engine()

    with pytest.raises(EngineError) as raised:
        await engine.ask(REQUEST)

    assert raised.value.retryable
    assert raised.value.retry_after == 4
    assert "request_rate_limit_exceeded" in raised.value.reason
    assert (await engine.ask(REQUEST)).text


async def test_quota_is_not_retried(emulator: EmulatorServer, make_engine: MakeEngine) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="quota_exhausted")]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(REQUEST)

    assert not raised.value.retryable
    assert raised.value.reason.startswith("quota_exhausted: perplexity")
    assert len(emulator.state.logged("perplexity")) == 1


async def test_a_stalled_response_times_out_retryably(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="stall", times=1, stall_seconds=0.5)])
    )

    with pytest.raises(EngineError) as raised:
        await make_engine(perplexity_timeout_seconds=0.2).ask(REQUEST)

    assert raised.value.retryable
    assert raised.value.reason == "perplexity: no answer within 0.2 s"
