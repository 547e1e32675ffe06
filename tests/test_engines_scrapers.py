"""The BrightData scrapers added as rows of SCRAPERS — Gemini, Copilot, Google AI Mode, Grok —
against the engine emulator, over real HTTP: each row's dataset, start page and inputs, its
records' own field names mapped, and a country it does not serve refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest

from app.clock import SystemClock
from app.engines.base import BrandContext, EngineCitation, EngineError, EngineRequest
from app.engines.brightdata import BrightDataEngine
from app.engines.ratelimit import LocalRateLimiter
from app.settings import Settings
from devtools.emulator.config import EmulatorConfig, Fault, ScriptedAnswer, ScriptedCitation
from devtools.emulator.server import EmulatorServer
from devtools.emulator.state import LoggedRequest
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings

QUESTION = "Which accounting tool suits freelancers?"
ANSWER = ScriptedAnswer(
    match="accounting tool suits freelancers",
    text="**LedgerLy** suits freelancers best ([LedgerLy](https://ledgerly.io/)).",
    citations=[
        ScriptedCitation(url="https://www.pcmag.com/picks/accounting", title="PCMag"),
        ScriptedCitation(url="https://ledgerly.io/pricing", title="Pricing"),
    ],
)
CITED = (
    EngineCitation("https://www.pcmag.com/picks/accounting", "PCMag"),
    EngineCitation("https://ledgerly.io/pricing", "Pricing"),
)
PRICE = Decimal("0.0025")
TRIGGER = "/datasets/v3/trigger"

MakeEngine = Callable[..., BrightDataEngine]


@pytest.fixture
async def make_engine(emulator: EmulatorServer) -> AsyncIterator[MakeEngine]:
    engines: list[BrightDataEngine] = []

    def make(engine_id: str, **overrides: object) -> BrightDataEngine:
        values = {
            **emulated_engine_settings(emulator.url),
            "brightdata_requests_per_minute": 6000,
            "brightdata_price_per_record": PRICE,
            **overrides,
        }
        engine = BrightDataEngine(
            engine_id, Settings.model_validate(values), LocalRateLimiter(SystemClock())
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


def trigger(emulator: EmulatorServer) -> LoggedRequest:
    [logged] = [e for e in emulator.state.logged("brightdata") if e.path == TRIGGER]
    return logged


@pytest.mark.parametrize(
    ("engine_id", "dataset", "site", "searched"),
    [
        # No web-search flag in Gemini's or Copilot's records: their sources say it searched.
        ("brightdata_gemini", "gd_mbz66arm2mf9cu856y", "https://gemini.google.com/", True),
        ("brightdata_copilot", "gd_m7di5jy6s9geokz8w", "https://copilot.microsoft.com/chats", True),
        ("brightdata_ai_mode", "gd_mcswdt6z2elth3zqr2", "https://google.com/aimode", True),
    ],
)
async def test_each_scraper_row_asks_its_dataset_and_maps_its_record(
    emulator: EmulatorServer,
    make_engine: MakeEngine,
    engine_id: str,
    dataset: str,
    site: str,
    searched: bool,
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[ANSWER]))

    answer = await make_engine(engine_id).ask(EngineRequest(QUESTION, "DE", BrandContext("X")))

    logged = trigger(emulator)
    assert logged.query == {"dataset_id": dataset, "include_errors": "true"}
    assert logged.headers["authorization"] == f"Bearer {EMULATOR_KEYS['brightdata_api_key']}"
    assert logged.body == [{"url": site, "prompt": QUESTION, "country": "DE"}]
    assert answer.text == ANSWER.text
    # Copilot's `sources`, AI Mode's URL in `domain`, and `#:~:text=` fragments all mapped.
    assert answer.citations == CITED
    assert (answer.surface, answer.searched) == ("scraped_ui", searched)
    assert answer.cost == PRICE
    assert answer.model == engine_id
    assert answer.raw["dataset_id"] == dataset


async def test_grok_takes_no_country_and_reports_its_web_search(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[ANSWER]))

    answer = await make_engine("brightdata_grok").ask(
        EngineRequest(QUESTION, "FR", BrandContext("X"))
    )

    logged = trigger(emulator)
    assert logged.query["dataset_id"] == "gd_m8ve0u141icu75ae74"
    assert logged.body == [{"url": "https://grok.com/", "prompt": QUESTION, "web_search": True}]
    assert answer.citations == CITED
    assert answer.searched is True
    assert answer.raw["country_applied"] is False


async def test_a_record_that_did_not_search_says_so(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    text = "LedgerLy ([site](https://ledgerly.io/)) suits freelancers."
    uncited = ANSWER.model_copy(update={"citations": [], "text": text})
    emulator.state.configure(EmulatorConfig(answers=[uncited]))

    grok = await make_engine("brightdata_grok").ask(
        EngineRequest(QUESTION, "US", BrandContext("X"))
    )
    gemini = await make_engine("brightdata_gemini").ask(
        EngineRequest(QUESTION, "US", BrandContext("X"))
    )

    assert grok.searched is False, "web_search_triggered: false"
    # A link written in the answer is cited, but is no sign of a search.
    assert gemini.citations == (EngineCitation("https://ledgerly.io/", "site"),)
    assert gemini.searched is None, "no flag and no sources: Gemini's page does not say"


async def test_a_country_the_scraper_does_not_serve_is_refused_unretried(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    with pytest.raises(EngineError) as raised:
        await make_engine("brightdata_gemini").ask(EngineRequest(QUESTION, "JP", BrandContext("X")))

    assert not raised.value.retryable
    assert "country 'JP'" in raised.value.reason
    assert trigger(emulator).status == 400


async def test_a_dataset_id_can_be_replaced_by_setting(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    engine = make_engine(
        "brightdata_copilot", brightdata_dataset_ids={"brightdata_copilot": "gd_new_copilot"}
    )

    await engine.ask(EngineRequest(QUESTION, "US", BrandContext("X")))

    assert trigger(emulator).query["dataset_id"] == "gd_new_copilot"


async def test_a_busy_scraper_is_retried_after_retry_after(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    fault = Fault(kind="rate_limited", provider="brightdata", times=1, retry_after_seconds=7)
    emulator.state.configure(EmulatorConfig(faults=[fault]))

    with pytest.raises(EngineError) as raised:
        await make_engine("brightdata_ai_mode").ask(
            EngineRequest(QUESTION, "US", BrandContext("X"))
        )

    assert raised.value.retryable
    assert raised.value.retry_after == 7
