"""The Linkup client against the engine emulator, over real HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import httpx
import pytest

from app.clock import SystemClock
from app.engines.base import BrandContext, EngineCitation, EngineError, EngineRequest
from app.engines.linkup import LinkupEngine
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
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings

QUESTION = "Which analytics platform suits retailers in Germany?"
ANSWER = ScriptedAnswer(
    match="analytics platform suits retailers",
    text="**Acme Analytics** is the usual pick for retailers, ahead of Northwind Labs.",
    citations=[
        ScriptedCitation(url="https://www.g2.com/categories/retail-analytics", title="G2 grid"),
        ScriptedCitation(url="https://acme-analytics.com/retail"),
    ],
)
REQUEST = EngineRequest(QUESTION, "DE", BrandContext(name="Acme Analytics"))

# Tests ask back to back; the default 60 a minute would space them a second apart.
FAST_LIMITS = {"linkup_requests_per_minute": 6000}

MakeEngine = Callable[..., LinkupEngine]


@pytest.fixture
async def make_engine(emulator: EmulatorServer) -> AsyncIterator[MakeEngine]:
    engines: list[LinkupEngine] = []

    def make(**overrides: object) -> LinkupEngine:
        settings = Settings.model_validate(
            {**emulated_engine_settings(emulator.url), **FAST_LIMITS, **overrides}
        )
        engine = LinkupEngine(settings, LocalRateLimiter(SystemClock()))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


async def test_search_request_and_sourced_answer(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[ANSWER]))
    engine = make_engine(linkup_depth="deep", linkup_price_per_request=Decimal("0.0275"))

    answer = await engine.ask(REQUEST)

    [logged] = emulator.state.logged("linkup")
    assert (logged.method, logged.path, logged.status) == ("POST", "/v1/search", 200)
    assert logged.headers["authorization"] == f"Bearer {EMULATOR_KEYS['linkup_api_key']}"
    # Linkup has no location parameter: the body is exactly these three fields.
    assert logged.body == {"q": QUESTION, "depth": "deep", "outputType": "sourcedAnswer"}
    assert answer.text == ANSWER.text
    assert answer.citations == (
        EngineCitation("https://www.g2.com/categories/retail-analytics", "G2 grid"),
        # A source without a title is named after its site.
        EngineCitation("https://acme-analytics.com/retail", "acme-analytics.com"),
    )
    assert answer.cost == Decimal("0.0275")
    assert answer.model == "linkup-deep"
    assert (answer.input_tokens, answer.output_tokens, answer.simulated) == (0, 0, False)
    assert answer.latency_ms >= 0


async def test_out_of_credits_is_not_retried(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="quota_exhausted")]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(REQUEST)

    assert not raised.value.retryable
    assert raised.value.reason.startswith("quota_exhausted: ")
    assert "INSUFFICIENT_FUNDS_CREDITS" in raised.value.reason
    assert len(emulator.state.logged("linkup")) == 1


async def test_rate_limited_is_retryable_after_the_providers_wait(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    fault = Fault(kind="rate_limited", times=1, retry_after_seconds=3)
    emulator.state.configure(EmulatorConfig(faults=[fault]))
    engine = make_engine()

    with pytest.raises(EngineError) as raised:
        await engine.ask(REQUEST)

    assert raised.value.retryable
    assert raised.value.retry_after is not None
    assert raised.value.retry_after >= 3
    assert "TOO_MANY_REQUESTS" in raised.value.reason
    assert (await engine.ask(REQUEST)).text


@pytest.mark.parametrize("kind", ["server_error", "overloaded"])
async def test_server_failures_are_retryable(
    emulator: EmulatorServer, make_engine: MakeEngine, kind: FaultKind
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind=kind, times=1)]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(REQUEST)

    assert raised.value.retryable


async def test_a_stalled_search_times_out_retryably(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    fault = Fault(kind="stall", times=1, stall_seconds=0.5)
    emulator.state.configure(EmulatorConfig(faults=[fault]))

    with pytest.raises(EngineError) as raised:
        await make_engine(linkup_timeout_seconds=0.2).ask(REQUEST)

    assert raised.value.retryable
    assert raised.value.reason == "linkup: no answer within 0.2 s"


async def test_emulator_rejects_what_linkup_rejects(emulator: EmulatorServer) -> None:
    headers = {"Authorization": f"Bearer {EMULATOR_KEYS['linkup_api_key']}"}
    async with httpx.AsyncClient(base_url=emulator.url, headers=headers) as client:
        response = await client.post(
            "/v1/search", json={"q": QUESTION, "depth": "ultra", "outputType": "sourcedAnswer"}
        )
        results = await client.post(
            "/v1/search", json={"q": QUESTION, "depth": "fast", "outputType": "searchResults"}
        )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert results.status_code == 200
    assert {item["type"] for item in results.json()["results"]} == {"text"}
