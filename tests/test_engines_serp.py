"""Google AI Overviews through the DataForSEO SERP client, against the engine emulator over
real HTTP: the task sent for the run's country, the overview mapped, a page without one, and
failures written in the body."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import httpx
import pytest

from app.clock import SystemClock
from app.engines.base import BrandContext, EngineCitation, EngineError, EngineRequest
from app.engines.ratelimit import LocalRateLimiter
from app.engines.serp import PATH, SerpEngine
from app.settings import Settings
from devtools.emulator.config import EmulatorConfig, Fault, ScriptedAnswer, ScriptedCitation
from devtools.emulator.dataforseo import ASYNC_OVERVIEW_COST, PAGE_COST
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings

QUESTION = "beste buchhaltungssoftware für freiberufler"
ANSWER = ScriptedAnswer(
    match="buchhaltungssoftware",
    text="**LedgerLy** und **Northwind** sind beliebt.\n\nBeide bieten eine Testphase.",
    citations=[
        ScriptedCitation(url="https://www.chip.de/buchhaltung", title="CHIP"),
        ScriptedCitation(url="https://ledgerly.de/"),
    ],
)
REQUEST = EngineRequest(QUESTION, "DE", BrandContext(name="LedgerLy"))

MakeEngine = Callable[..., SerpEngine]


@pytest.fixture
async def make_engine(emulator: EmulatorServer) -> AsyncIterator[MakeEngine]:
    engines: list[SerpEngine] = []

    def make(**overrides: object) -> SerpEngine:
        settings = Settings.model_validate({**emulated_engine_settings(emulator.url), **overrides})
        engine = SerpEngine(settings, LocalRateLimiter(SystemClock()))
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


async def test_the_ai_overview_of_the_page_for_the_runs_country(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[ANSWER]))

    answer = await make_engine().ask(REQUEST)

    [logged] = emulator.state.logged("dataforseo")
    assert (logged.method, logged.path, logged.status) == ("POST", PATH, 200)
    pair = f"{EMULATOR_KEYS['dataforseo_login']}:{EMULATOR_KEYS['dataforseo_password']}"
    assert logged.headers["authorization"] == f"Basic {base64.b64encode(pair.encode()).decode()}"
    assert logged.body == [
        {
            "keyword": QUESTION,
            "location_code": 2276,
            "language_code": "de",
            "load_async_ai_overview": True,
        }
    ]
    assert answer.text == ANSWER.text
    # The references' `#:~:text=` fragments point into the page: the page is what is cited.
    assert answer.citations == (
        EngineCitation("https://www.chip.de/buchhaltung", "CHIP"),
        EngineCitation("https://ledgerly.de/", "https://ledgerly.de/"),
    )
    assert answer.cost == PAGE_COST + ASYNC_OVERVIEW_COST
    assert (answer.surface, answer.surface_present, answer.searched) == ("serp", True, True)
    assert answer.search_queries == (QUESTION,)
    assert (answer.input_tokens, answer.output_tokens) == (0, 0)


async def test_a_page_without_an_ai_overview_is_an_answer_without_the_surface(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(
        EmulatorConfig(answers=[ANSWER], faults=[Fault(kind="no_ai_overview", times=1)])
    )

    answer = await make_engine(dataforseo_load_async_ai_overview=False).ask(REQUEST)

    assert emulator.state.logged("dataforseo")[0].body[0].get("load_async_ai_overview") is None
    assert answer.surface_present is False
    assert (answer.text, answer.citations, answer.search_queries) == ("", (), ())
    assert answer.searched is None
    assert answer.cost == PAGE_COST, "the page was billed all the same"


async def test_insufficient_funds_in_the_body_is_not_retried(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="quota_exhausted")]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(REQUEST)

    assert emulator.state.logged("dataforseo")[0].status == 200
    assert not raised.value.retryable
    assert raised.value.reason.startswith("quota_exhausted: google_ai_overview: status 40210")


async def test_rate_limited_waits_for_retry_after(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    fault = Fault(kind="rate_limited", provider="dataforseo", times=1, retry_after_seconds=5)
    emulator.state.configure(EmulatorConfig(faults=[fault]))
    engine = make_engine()

    with pytest.raises(EngineError) as raised:
        await engine.ask(REQUEST)

    assert raised.value.retryable
    assert raised.value.retry_after == 5
    assert (await engine.ask(REQUEST)).surface_present


async def test_a_server_error_is_retryable(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="server_error", times=1)]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(REQUEST)

    assert raised.value.retryable


async def test_a_country_without_a_location_is_refused_without_a_call(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    with pytest.raises(EngineError) as raised:
        await make_engine().ask(EngineRequest(QUESTION, "IS", BrandContext(name="LedgerLy")))

    assert not raised.value.retryable
    assert emulator.state.logged("dataforseo") == []


async def test_emulator_rejects_an_invalid_field(emulator: EmulatorServer) -> None:
    auth = (EMULATOR_KEYS["dataforseo_login"], EMULATOR_KEYS["dataforseo_password"])
    async with httpx.AsyncClient(base_url=emulator.url, auth=auth, timeout=10) as client:
        response = await client.post(PATH, json=[{"keyword": "x", "location_code": 1}])

    assert response.status_code == 200
    assert response.json()["status_code"] == 40501
    assert Decimal(str(response.json()["cost"])) == 0
