"""The analysts on their own: the rules of the simulated one, the model-backed one against the
engine emulator over real HTTP, and the summary arithmetic built on what they find."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from app.analysis import AnalysisError, SimulatedAnalyst, analysis_provider
from app.analysis.factory import create_analyst
from app.analysis.llm import LlmAnalyst
from app.analysis.names import normalise_competitors
from app.analysis.reading import read_answer
from app.analysis.spellings import rule_variations
from app.clock import SystemClock
from app.db.models import RunStatus
from app.engines.ratelimit import LocalRateLimiter
from app.evaluations.metrics import RunFacts, TrackedBrands
from app.evaluations.schemas import BatchSummary
from app.evaluations.summaries import summarise
from app.settings import Settings
from devtools.emulator.config import EmulatorConfig, Fault
from devtools.emulator.server import EmulatorServer
from devtools.emulator.structured import structured_reply

ORG = "Acme Analytics"
ORG_NAMES = (ORG, "Acme")
NEGATED_ANSWER = "I could not find information about Acme Analytics."
LISTED_ANSWER = """Here are the leading options:

1. **Mixpanel** – a strong all-rounder with a generous free tier
2. **Acme Analytics** – well regarded for responsive customer support
   - Free trial: 14 days
3. [Heap](https://heap.io) – best known for its reporting
- **amplitude** – popular with product teams

Acme's onboarding is often praised."""


# The simulated analyst's name variations.


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("Acme, Inc.", ("Acme",), id="legal-form-dropped"),
        pytest.param("Acme Pty Ltd", ("Acme",), id="stacked-legal-forms"),
        pytest.param("Acme Analytics", ("AcmeAnalytics",), id="words-run-together"),
        pytest.param("The Home Depot", ("Home Depot", "HomeDepot"), id="leading-the"),
        pytest.param("The Guardian", ("TheGuardian",), id="the-kept-when-one-word-would-remain"),
        pytest.param("Johnson & Johnson", ("Johnson and Johnson",), id="ampersand"),
        pytest.param(
            "International Business Machines",
            ("InternationalBusinessMachines", "IBM"),
            id="initials-of-three-words",
        ),
        pytest.param("Bank of America", (), id="no-initials-of-two-words"),
        pytest.param("HubSpot", (), id="one-word-has-nothing-to-vary"),
        pytest.param("monday.com", (), id="domain-styled-name-kept-whole"),
        pytest.param("AB Co", (), id="nothing-shorter-than-three-characters"),
    ],
)
def test_rule_variations(name: str, expected: tuple[str, ...]) -> None:
    assert rule_variations(name, []) == expected


def test_rule_variations_cover_aliases_and_never_repeat_known_names() -> None:
    assert rule_variations("Acme Analytics", ["Acme Ltd", "AcmeAnalytics"]) == ("Acme",)


# The simulated analyst's reading of an answer.


@pytest.mark.parametrize(
    "answer",
    [
        NEGATED_ANSWER,
        "Sorry, I couldn't find any reliable information on Acme Analytics.",
        "I'm not familiar with a company called Acme.",
        "I am not aware of ACME ANALYTICS.",
        "There is no public information about Acme Analytics at the moment.",
        "I don't have any specific data about Acme Analytics.",
        "Acme Analytics doesn't appear in the rankings I know of.",
        "Acme Analytics is not listed among the leading vendors.",
        "Never heard of Acme. Try Mixpanel instead.",
        # Every one of several mentions negated, each where its own name is masked.
        "I'm not familiar with Acme. I am not aware of ACME ANALYTICS either. "
        "Acme Analytics is not listed among the leading vendors.",
    ],
)
def test_negated_mentions(answer: str) -> None:
    reading = read_answer(answer, ORG_NAMES, ())
    assert reading.negated is True
    assert reading.sentiment is None


@pytest.mark.parametrize(
    "answer",
    [
        "Acme Analytics is a solid choice.",
        "Acme Analytics is great. I could not find information about Acme's pricing, though.",
        "I could not find information about Mixpanel, but Acme Analytics is reliable.",
        "I couldn't find anything bad to say about Acme Analytics.",
        "I'm not familiar with Acme. I am not aware of ACME ANALYTICS either. "
        "Acme Analytics is a solid choice, though.",
    ],
)
def test_mentions_that_are_not_negated(answer: str) -> None:
    assert read_answer(answer, ORG_NAMES, ()).negated is False


@pytest.mark.parametrize(
    ("configured", "written"),
    [
        pytest.param("Coca-Cola", "Coca-Cola", id="as-configured"),
        pytest.param("Coca-Cola", "Coca Cola", id="space-for-hyphen"),
        pytest.param("Coca-Cola", "Coca\u2011Cola", id="non-breaking-hyphen"),
        pytest.param("Coca Cola", "Coca-Cola", id="hyphen-for-space"),
    ],
)
def test_a_negation_names_the_org_however_matching_finds_it(configured: str, written: str) -> None:
    for answer in (
        f"I could not find information about {written}.",
        f"{written} is not listed among the leading brands.",
    ):
        reading = read_answer(answer, (configured,), ())
        assert (reading.negated, reading.sentiment) == (True, None), answer


def test_an_answer_without_the_org_has_no_sentiment_and_no_negation() -> None:
    reading = read_answer("Mixpanel is the best option.", ORG_NAMES, ())
    assert (reading.sentiment, reading.negated) == (None, False)


@pytest.mark.parametrize(
    ("answer", "sentiment"),
    [
        pytest.param("Acme Analytics is reliable and well regarded.", "positive", id="positive"),
        pytest.param("Acme Analytics is pricier and its app is slow.", "negative", id="negative"),
        pytest.param("Acme Analytics is based in Berlin.", "neutral", id="neutral"),
        pytest.param("Acme Analytics is not recommended.", "negative", id="not-recommended"),
        pytest.param(
            "Acme Analytics is based in Berlin. Mixpanel is excellent.", "neutral", id="others-tone"
        ),
    ],
)
def test_sentiment_is_read_near_the_org(answer: str, sentiment: str) -> None:
    assert read_answer(answer, ORG_NAMES, ()).sentiment == sentiment


def test_competitors_are_list_leads_and_tracked_names_in_order_without_the_org() -> None:
    reading = read_answer(LISTED_ANSWER, ORG_NAMES, ("Amplitude", "Pendo"))
    # "amplitude" is spelt as tracked; "Free trial" is a detail, not a brand; Pendo is absent.
    assert reading.competitors == ("Mixpanel", "Heap", "Amplitude")
    assert reading.sentiment == "positive"


def test_competitor_names_are_cleaned_deduplicated_and_capped() -> None:
    names = [" **Zoho   CRM**, ", "zoho-crm", "Acme", "salesforce", "", "—", "HubSpot"]
    assert normalise_competitors(names, ORG_NAMES, ["Salesforce"]) == (
        "Zoho CRM",
        "Salesforce",
        "HubSpot",
    )
    assert len(normalise_competitors([f"Brand {i}" for i in range(50)], ORG_NAMES, [])) == 20
    # A model's JSON may escape what Postgres cannot store.
    assert normalise_competitors(["Zo\x00ho", "Pipe\ud83ddrive"], ORG_NAMES, []) == (
        "Zoho",
        "Pipe\ufffddrive",
    )


async def test_simulated_analyst_costs_nothing() -> None:
    analyst = SimulatedAnalyst()
    analysis = await analyst.analyse_answer("Best analytics?", LISTED_ANSWER, ORG, ["Acme"], [])
    assert analysis.competitors == ("Mixpanel", "Heap", "amplitude")
    assert (analysis.cost, analysis.input_tokens, analysis.model) == (Decimal(0), 0, "simulated")
    variations = await analyst.name_variations("Acme, Inc.", [])
    assert (variations.names, variations.source) == (("Acme",), "simulated")


# Which analyst a process gets.


@pytest.mark.parametrize(
    ("overrides", "provider"),
    [
        pytest.param({}, "simulated", id="no-keys"),
        pytest.param({"openai_api_key": SecretStr("k")}, "openai", id="openai-key"),
        pytest.param(
            {"azure_openai_api_key": SecretStr("k"), "azure_openai_endpoint": "https://x"},
            "azure_openai",
            id="azure-key-and-endpoint",
        ),
        pytest.param({"azure_openai_api_key": SecretStr("k")}, "simulated", id="azure-no-endpoint"),
        pytest.param(
            {"openai_api_key": SecretStr("k"), "analysis_provider": "simulated"},
            "simulated",
            id="explicit-choice-wins",
        ),
    ],
)
def test_auto_provider_follows_the_credentials(overrides: dict[str, Any], provider: str) -> None:
    assert analysis_provider(Settings.model_validate(overrides)) == provider


def test_a_chosen_provider_without_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        create_analyst(Settings(analysis_provider="openai"), LocalRateLimiter(SystemClock()))


# The model-backed analyst, against the emulator.


def llm_settings(emulator: EmulatorServer, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "analysis_provider": "openai",
        "analysis_model": "gpt-4o-mini-test",
        "openai_api_key": SecretStr("sk-test-openai"),
        "openai_base_url": f"{emulator.url}/v1",
        "run_retry_base_seconds": 0.01,
        **overrides,
    }
    return Settings.model_validate(values)


@pytest.fixture
async def llm_analyst(emulator: EmulatorServer) -> AsyncIterator[LlmAnalyst]:
    analyst = create_analyst(llm_settings(emulator), LocalRateLimiter(SystemClock()))
    assert isinstance(analyst, LlmAnalyst)
    yield analyst
    await analyst.aclose()


def structured_requests(emulator: EmulatorServer, name: str) -> list[dict[str, Any]]:
    bodies = [entry.body for entry in emulator.state.logged("openai")]
    return [b for b in bodies if b["response_format"]["json_schema"]["name"] == name]


async def test_answer_analysis_is_one_strict_structured_call(
    emulator: EmulatorServer, llm_analyst: LlmAnalyst
) -> None:
    analysis = await llm_analyst.analyse_answer(
        "Best analytics?", LISTED_ANSWER, ORG, ["Acme"], ["Amplitude"]
    )

    [body] = [entry.body for entry in emulator.state.logged("openai")]
    assert body["model"] == "gpt-4o-mini-test"
    assert body["temperature"] == 0
    response_format = body["response_format"]
    assert response_format["type"] == "json_schema"
    json_schema = response_format["json_schema"]
    assert (json_schema["name"], json_schema["strict"]) == ("answer_analysis", True)
    schema = json_schema["schema"]
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == sorted(schema["properties"])

    assert analysis.competitors == ("Mixpanel", "Heap", "Amplitude")
    assert (analysis.sentiment, analysis.negated) == ("positive", False)
    assert analysis.model == "gpt-4o-mini-test"
    assert analysis.input_tokens > 0
    assert analysis.output_tokens > 0
    expected_cost = (
        analysis.input_tokens * Decimal("0.15") + analysis.output_tokens * Decimal("0.60")
    ) / 1_000_000
    assert analysis.cost == expected_cost.quantize(Decimal("0.000001"))


async def test_a_negated_mention_comes_back_negated(
    emulator: EmulatorServer, llm_analyst: LlmAnalyst
) -> None:
    analysis = await llm_analyst.analyse_answer("Is Acme good?", NEGATED_ANSWER, ORG, [], [])
    assert (analysis.negated, analysis.sentiment, analysis.competitors) == (True, None, ())


async def test_name_variations_are_one_strict_structured_call(
    emulator: EmulatorServer, llm_analyst: LlmAnalyst
) -> None:
    result = await llm_analyst.name_variations("Acme Analytics, Inc.", ["Acme"])
    [body] = structured_requests(emulator, "name_variations")
    assert body["response_format"]["json_schema"]["strict"] is True
    assert result.names == ("Acme Analytics", "AcmeAnalytics")
    assert result.source == "openai:gpt-4o-mini-test"


async def test_retryable_failures_are_asked_again(
    emulator: EmulatorServer, llm_analyst: LlmAnalyst
) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="server_error", provider="openai", times=2)])
    )
    analysis = await llm_analyst.analyse_answer("Is Acme good?", NEGATED_ANSWER, ORG, [], [])
    assert analysis.negated is True
    assert [entry.status for entry in emulator.state.logged("openai")] == [500, 500, 200]


async def test_failures_become_analysis_errors(
    emulator: EmulatorServer, llm_analyst: LlmAnalyst
) -> None:
    emulator.state.configure(
        EmulatorConfig(faults=[Fault(kind="quota_exhausted", provider="openai")])
    )
    with pytest.raises(AnalysisError, match="quota_exhausted"):
        await llm_analyst.analyse_answer("Is Acme good?", NEGATED_ANSWER, ORG, [], [])
    assert len(emulator.state.logged("openai")) == 1, "an empty quota is not asked again"


def test_the_emulator_answers_unknown_schemas_with_a_minimal_instance() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    assert structured_reply("verdict", schema, [{"role": "user", "content": "x"}]) == {"ok": False}


# The summary's arithmetic.

BATCH = uuid.uuid4()


def facts(
    engine: str = "openai",
    *,
    question: uuid.UUID | None = None,
    sample: int = 1,
    mentioned: bool = True,
    negated: bool = False,
    sentiment: str | None = None,
    position: int | None = None,
    competitors: tuple[str, ...] = (),
    domains: tuple[str, ...] = (),
    org_cited: bool = False,
    status: RunStatus = RunStatus.COMPLETED,
    error: str | None = None,
) -> RunFacts:
    return RunFacts(
        question_id=question or uuid.uuid4(),
        engine=engine,
        location="US",
        sample=sample,
        status=status,
        error=error,
        simulated=True,
        model="m",
        surface="api",
        searched=None,
        surface_present=True,
        analysed=sentiment is not None,
        extraction_version=1,
        mentioned=mentioned,
        negated=negated,
        list_position=position,
        org_cited=org_cited,
        sentiment=sentiment,
        competitors=frozenset(competitors),
        domains=frozenset(domains),
        has_citations=bool(domains),
    )


def summary_of(runs: list[RunFacts], competitors: list[str] | None = None) -> BatchSummary:
    return summarise(BATCH, runs, TrackedBrands.of(competitors or []))


def test_negated_mentions_count_toward_nothing() -> None:
    runs = [
        facts(sentiment="positive", position=2),
        facts(negated=True, position=1),
        facts(mentioned=False),
        facts(status=RunStatus.FAILED, error="timeout"),
        facts(status=RunStatus.FAILED, error="invalid_answer: empty"),
    ]
    overall = summary_of(runs).summary
    assert (overall.completed_runs, overall.failed_runs, overall.rejected_runs) == (3, 2, 1)
    assert overall.visibility.value == round(1 / 3, 4)
    assert (overall.visibility.cells, overall.visibility.answers) == (3, 3)
    assert overall.average_position.value == 2
    assert overall.share_of_voice.all.value == 1.0
    assert (overall.sentiment.positive, overall.sentiment.score.value) == (1, 1.0)


def test_share_of_voice_in_both_variants() -> None:
    runs = [
        facts(competitors=("Mixpanel", "Heap")),
        facts(competitors=("mixpanel", "Untracked Co")),
        facts(mentioned=False, competitors=("Heap",)),
    ]
    sov = summary_of(runs, ["Mixpanel", "Heap"]).summary.share_of_voice
    # Per answer: the org's share of the brands it names; the mean over cells.
    assert sov.tracked.value == round((1 / 3 + 1 / 2 + 0) / 3, 4)
    assert sov.all.value == round((1 / 3 + 1 / 3 + 0) / 3, 4)
    assert "configured competitor" in sov.tracked.denominator
    untracked = summary_of(runs).summary.share_of_voice
    # No competitor configured: nothing to compare against is null, never 0.
    assert untracked.tracked.value is None
    assert untracked.tracked.interval_note is not None
    assert untracked.all.value == sov.all.value


def test_share_of_voice_is_undefined_without_any_brand_mentioned() -> None:
    overall = summary_of([facts(mentioned=False)], ["Heap"]).summary
    assert overall.share_of_voice.tracked.value is None
    assert overall.share_of_voice.all.value is None
    assert overall.sentiment.score.value is None


def test_a_cell_asked_five_times_weighs_what_a_cell_asked_once_does() -> None:
    asked_often = uuid.uuid4()
    runs = [facts(question=asked_often, sample=i, mentioned=i == 1) for i in range(1, 6)]
    runs.append(facts())
    summary = summary_of(runs)
    # (1/5 + 1) / 2, not 2/6.
    assert summary.summary.visibility.value == 0.6
    assert (summary.summary.visibility.cells, summary.summary.visibility.answers) == (2, 6)
    assert summary.methodology.samples_per_cell is not None
    assert summary.methodology.samples_per_cell.model_dump() == {"min": 1, "mean": 3.0, "max": 5}
    # Fewer than 3 questions: no interval, and why.
    assert summary.summary.visibility.interval is None
    assert "fewer than 3 questions" in (summary.summary.visibility.interval_note or "")


def test_an_interval_is_deterministic_and_brackets_the_value() -> None:
    runs = [facts(mentioned=i % 3 == 0) for i in range(12)]
    first, again = summary_of(runs).summary, summary_of(runs).summary
    assert first.visibility.interval is not None
    low, high = first.visibility.interval
    assert low <= (first.visibility.value or 0) <= high
    assert first.visibility == again.visibility


def test_sentiment_per_engine() -> None:
    runs = [
        facts("openai", sentiment="positive"),
        facts("openai", sentiment="negative"),
        facts("openai", sentiment="neutral"),
        facts("openai", sentiment="positive"),
        facts("linkup", sentiment="negative"),
        facts("linkup", mentioned=False),
    ]
    summary = summary_of(runs)
    openai = summary.by_engine["openai"].sentiment
    assert (openai.positive, openai.neutral, openai.negative, openai.score.value) == (
        2,
        1,
        1,
        0.25,
    )
    assert summary.by_engine["linkup"].sentiment.score.value == -1.0
    assert summary.summary.sentiment.score.value == 0.0
    assert summary.by_location["US"].sentiment.score.value == 0.0
    assert summary.methodology.llm_analysis


def test_citation_rate_is_over_answers_with_citations() -> None:
    runs = [
        facts(domains=("acme.com",), org_cited=True),
        facts(domains=("g2.com",)),
        facts(),
        facts(),
    ]
    assert summary_of(runs).summary.citation_rate.value == 0.5
    assert summary_of([facts()]).summary.citation_rate.value is None
