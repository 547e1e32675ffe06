"""The BrightData client against the engine emulator, over real HTTP: batching, polling,
record mapping and every way a scrape fails."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.clock import SystemClock
from app.engines.base import BrandContext, EngineAnswer, EngineCitation, EngineError, EngineRequest
from app.engines.brightdata import BrightDataEngine, BrightDataEngineId
from app.engines.guard import invalid_answer_reason
from app.engines.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from app.settings import Settings
from devtools.emulator.brightdata import AUTH_WALL_TEXT, NOT_READY_TEXT
from devtools.emulator.config import EmulatorConfig, Fault, ScriptedAnswer, ScriptedCitation
from devtools.emulator.server import EmulatorServer
from devtools.emulator.state import LoggedRequest
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings
from tests.conftest import REDIS_URL
from tests.worker_support import eventually

CHATGPT_DATASET = "gd_m7aof0k82r803d5bjm"
PERPLEXITY_DATASET = "gd_m7dhdot1vw9a7gc1n"
TRIGGER = "/datasets/v3/trigger"
PRICE = Decimal("0.0042")
BRAND = BrandContext(name="Acme Analytics")
# Tests trigger back to back; the default 60 a minute would space triggers a second apart.
FAST_LIMITS = {"brightdata_requests_per_minute": 6000, "brightdata_price_per_record": PRICE}

MakeEngine = Callable[..., BrightDataEngine]


def question(index: int) -> str:
    return f"Which tool is best for use case {index:02d}?"


def scripted(index: int) -> ScriptedAnswer:
    return ScriptedAnswer(
        match=f"use case {index:02d}",
        text=f"**Tool {index}** leads for use case {index:02d} ([site](https://tool{index}.io/)).",
        citations=[
            ScriptedCitation(url=f"https://reviews.example/{index}", title=f"Review {index}"),
            ScriptedCitation(url=f"https://news.example/{index}"),
        ],
    )


def expected_citations(index: int) -> tuple[EngineCitation, ...]:
    return (
        EngineCitation(f"https://reviews.example/{index}", f"Review {index}"),
        EngineCitation(f"https://news.example/{index}", None),
    )


def ask_request(index: int, location: str = "US") -> EngineRequest:
    return EngineRequest(question(index), location, BRAND)


def triggers(emulator: EmulatorServer) -> list[LoggedRequest]:
    return [entry for entry in emulator.state.logged("brightdata") if entry.path == TRIGGER]


def paths(emulator: EmulatorServer, prefix: str) -> list[LoggedRequest]:
    return [e for e in emulator.state.logged("brightdata") if e.path.startswith(prefix)]


async def wait_for_trigger(emulator: EmulatorServer) -> LoggedRequest:
    for _ in range(200):
        logged = [entry for entry in triggers(emulator) if entry.status == 200]
        if logged:
            return logged[0]
        await asyncio.sleep(0.01)
    raise AssertionError("no trigger reached the emulator")


async def ask_all(engine: BrightDataEngine, requests: list[EngineRequest]) -> list[Any]:
    return await asyncio.gather(*(engine.ask(r) for r in requests), return_exceptions=True)


@pytest.fixture
async def make_engine(emulator: EmulatorServer) -> AsyncIterator[MakeEngine]:
    engines: list[BrightDataEngine] = []

    def make(
        engine_id: BrightDataEngineId = "brightdata_chatgpt",
        limiter: RateLimiter | None = None,
        **overrides: object,
    ) -> BrightDataEngine:
        values = {**emulated_engine_settings(emulator.url), **FAST_LIMITS, **overrides}
        engine = BrightDataEngine(
            engine_id, Settings.model_validate(values), limiter or LocalRateLimiter(SystemClock())
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.aclose()


async def test_concurrent_asks_share_triggers_of_at_most_twenty(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[scripted(i) for i in range(25)]))
    requests = [ask_request(i, "DE" if i % 2 else "US") for i in range(25)]

    answers = await ask_all(make_engine(), requests)

    logged = triggers(emulator)
    assert sorted(len(entry.body) for entry in logged) == [5, 20]
    for entry in logged:
        assert entry.method == "POST"
        assert entry.query == {"dataset_id": CHATGPT_DATASET, "include_errors": "true"}
        assert entry.headers["authorization"] == f"Bearer {EMULATOR_KEYS['brightdata_api_key']}"
    sent = [item for entry in logged for item in entry.body]
    assert sorted(sent, key=lambda item: item["prompt"]) == [
        {"url": "https://chatgpt.com/", "prompt": r.question, "country": r.location}
        for r in requests
    ]
    assert len(paths(emulator, "/datasets/v3/progress/")) >= 2
    downloads = paths(emulator, "/datasets/v3/snapshot/")
    assert len(downloads) == 2
    assert all(entry.query == {"format": "json"} for entry in downloads)
    for index, answer in enumerate(answers):
        assert isinstance(answer, EngineAnswer), answer
        # The markdown, not the plain answer_text the record also carries.
        assert answer.text == scripted(index).text
        assert answer.citations == expected_citations(index)
        assert answer.cost == PRICE
        assert answer.model == "gpt-4o"
        assert (answer.input_tokens, answer.output_tokens, answer.simulated) == (0, 0, False)
        assert str(answer.raw["snapshot_id"]).startswith("s_")


async def test_perplexity_uses_its_dataset_and_site(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(answers=[scripted(7)]))

    answer = await make_engine("brightdata_perplexity").ask(ask_request(7, "FR"))

    [logged] = triggers(emulator)
    assert logged.query == {"dataset_id": PERPLEXITY_DATASET, "include_errors": "true"}
    assert logged.body == [
        {"url": "https://www.perplexity.ai", "prompt": question(7), "country": "FR"}
    ]
    assert answer.text == scripted(7).text
    assert answer.citations == expected_citations(7)
    # Perplexity's records name no model.
    assert answer.model == "brightdata_perplexity"


async def test_without_citations_the_answers_links_are_cited(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    uncited = scripted(3).model_copy(update={"citations": []})
    emulator.state.configure(EmulatorConfig(answers=[uncited]))

    answer = await make_engine().ask(ask_request(3))

    assert answer.citations == (EngineCitation("https://tool3.io/", "site"),)


async def test_a_record_error_fails_only_its_own_ask(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    fault = Fault(kind="record_error", provider="brightdata", times=1)
    emulator.state.configure(
        EmulatorConfig(faults=[fault], answers=[scripted(i) for i in range(3)])
    )

    outcomes = await ask_all(make_engine(), [ask_request(i) for i in range(3)])

    [logged] = triggers(emulator)
    failed_prompt = logged.body[0]["prompt"]
    for index, outcome in enumerate(outcomes):
        if question(index) == failed_prompt:
            assert isinstance(outcome, EngineError)
            # Error records are not billed, so asking again costs nothing.
            assert outcome.retryable
            assert "dead_page" in outcome.reason
        else:
            assert isinstance(outcome, EngineAnswer)
            assert outcome.text == scripted(index).text


async def test_walls_and_placeholders_come_back_as_answers_for_the_guard(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    faults = [Fault(kind="auth_wall", times=1), Fault(kind="not_ready", times=1)]
    emulator.state.configure(EmulatorConfig(faults=faults, answers=[scripted(i) for i in range(3)]))

    outcomes = await ask_all(make_engine(), [ask_request(i) for i in range(3)])

    [logged] = triggers(emulator)
    by_prompt = dict(zip(map(question, range(3)), outcomes, strict=True))
    wall, placeholder, real = (by_prompt[item["prompt"]] for item in logged.body)
    assert isinstance(wall, EngineAnswer)
    assert wall.text == AUTH_WALL_TEXT
    assert isinstance(placeholder, EngineAnswer)
    assert placeholder.text == NOT_READY_TEXT
    assert wall.citations == placeholder.citations == ()
    assert invalid_answer_reason(wall.text, question(0)) is not None
    assert invalid_answer_reason(placeholder.text, question(0)) is not None
    assert isinstance(real, EngineAnswer)
    assert invalid_answer_reason(real.text, "") is None


async def test_a_failed_snapshot_fails_its_whole_batch_retryably(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="snapshot_failed", times=1)]))

    outcomes = await ask_all(make_engine(), [ask_request(i) for i in range(2)])

    for outcome in outcomes:
        assert isinstance(outcome, EngineError)
        assert outcome.retryable
        assert "failed: Collection failed" in outcome.reason
    assert paths(emulator, "/datasets/v3/snapshot/") == []


async def test_a_refused_trigger_fails_its_batch_only(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    fault = Fault(kind="rate_limited", times=1, retry_after_seconds=2)
    emulator.state.configure(EmulatorConfig(faults=[fault]))

    outcomes = await ask_all(
        make_engine(brightdata_batch_size=2), [ask_request(i) for i in range(4)]
    )

    [refused] = [entry for entry in triggers(emulator) if entry.status == 429]
    refused_prompts = {item["prompt"] for item in refused.body}
    for index, outcome in enumerate(outcomes):
        if question(index) in refused_prompts:
            assert isinstance(outcome, EngineError)
            assert outcome.retryable
            assert outcome.retry_after is not None
            assert outcome.retry_after >= 2
        else:
            assert isinstance(outcome, EngineAnswer)
    assert len(refused_prompts) == 2


async def test_exhausted_funds_are_not_retried(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(faults=[Fault(kind="quota_exhausted", times=1)]))

    with pytest.raises(EngineError) as raised:
        await make_engine().ask(ask_request(1))

    assert not raised.value.retryable
    assert raised.value.reason.startswith("quota_exhausted: brightdata_chatgpt: HTTP 402")


async def test_a_slow_snapshot_is_polled_until_ready(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(
        EmulatorConfig(answers=[scripted(4)], snapshot_ready_after_seconds=0.3)
    )

    answer = await make_engine().ask(ask_request(4))

    assert answer.text == scripted(4).text
    assert answer.latency_ms >= 300
    # Polled every 0.05 s while running; downloaded once, when ready.
    assert len(paths(emulator, "/datasets/v3/progress/")) >= 4
    assert len(paths(emulator, "/datasets/v3/snapshot/")) == 1


async def test_a_snapshot_never_ready_times_out_retryably(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(snapshot_ready_after_seconds=60))
    engine = make_engine(brightdata_snapshot_timeout_seconds=0.3)

    with pytest.raises(EngineError) as raised:
        await engine.ask(ask_request(1))

    assert raised.value.retryable
    assert raised.value.reason == "brightdata_chatgpt: no answer within 0.3 s"


async def test_cancelled_asks_leave_the_others_answered(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(
        EmulatorConfig(answers=[scripted(i) for i in range(4)], snapshot_ready_after_seconds=0.2)
    )
    engine = make_engine()
    tasks = [asyncio.create_task(engine.ask(ask_request(i))) for i in range(4)]
    await asyncio.sleep(0)
    tasks[0].cancel()  # before its trigger: never sent
    await wait_for_trigger(emulator)
    tasks[1].cancel()  # while its snapshot runs

    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    [logged] = triggers(emulator)
    assert [item["prompt"] for item in logged.body] == [question(i) for i in (1, 2, 3)]
    assert [type(outcome) for outcome in outcomes[:2]] == [asyncio.CancelledError] * 2
    answered = [outcome for outcome in outcomes if isinstance(outcome, EngineAnswer)]
    assert [answer.text for answer in answered] == [scripted(2).text, scripted(3).text]


async def test_closing_fails_waiting_asks_retryably(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(EmulatorConfig(snapshot_ready_after_seconds=60))
    engine = make_engine()
    waiting = asyncio.create_task(engine.ask(ask_request(1)))
    await wait_for_trigger(emulator)

    await engine.aclose()

    with pytest.raises(EngineError) as raised:
        await waiting
    assert raised.value.retryable


async def test_a_shared_slot_is_held_from_trigger_to_download(
    emulator: EmulatorServer, make_engine: MakeEngine
) -> None:
    emulator.state.configure(
        EmulatorConfig(answers=[scripted(5)], snapshot_ready_after_seconds=0.3)
    )
    prefix = f"test-{uuid.uuid4().hex}"
    slots = f"{prefix}:ratelimit:brightdata_chatgpt:slots"
    redis = Redis.from_url(REDIS_URL)
    try:
        engine = make_engine(limiter=RedisRateLimiter(redis, prefix, SystemClock()))
        asked = asyncio.create_task(engine.ask(ask_request(5)))
        await wait_for_trigger(emulator)
        held = await redis.zcard(slots)
        answer = await asked
        released = await redis.zcard(slots)
    finally:
        await redis.delete(slots, f"{prefix}:ratelimit:brightdata_chatgpt:tat")
        await redis.aclose()

    assert (held, released) == (1, 0)
    assert answer.text == scripted(5).text


async def test_emulator_speaks_brightdatas_protocol(emulator: EmulatorServer) -> None:
    emulator.state.configure(
        EmulatorConfig(
            faults=[Fault(kind="record_error", times=1)], snapshot_ready_after_seconds=0.2
        )
    )
    headers = {"Authorization": f"Bearer {EMULATOR_KEYS['brightdata_api_key']}"}
    inputs = [
        {"url": "https://chatgpt.com/", "prompt": question(i), "country": "US"} for i in (1, 2)
    ]
    async with httpx.AsyncClient(base_url=emulator.url, headers=headers) as client:
        bad = await client.post(TRIGGER, params={"dataset_id": "nope"}, json=inputs)
        empty = await client.post(TRIGGER, params={"dataset_id": CHATGPT_DATASET}, json=[])
        # Without include_errors, BrightData leaves failed inputs out of the snapshot.
        started = await client.post(TRIGGER, params={"dataset_id": CHATGPT_DATASET}, json=inputs)
        snapshot_id = started.json()["snapshot_id"]
        building = await client.get(f"/datasets/v3/snapshot/{snapshot_id}")
        running = await client.get(f"/datasets/v3/progress/{snapshot_id}")
        progress: list[httpx.Response] = []

        async def is_ready() -> bool:
            progress.append(await client.get(f"/datasets/v3/progress/{snapshot_id}"))
            return bool(progress[-1].json()["status"] == "ready")

        await eventually(is_ready, what="the snapshot to be ready")
        ready = progress[-1]
        records = await client.get(f"/datasets/v3/snapshot/{snapshot_id}?format=json")
        unknown = await client.get("/datasets/v3/progress/s_unknown")

    assert (bad.status_code, empty.status_code) == (400, 400)
    assert bad.json()["error_code"] == "validation_error"
    assert building.status_code == 202
    assert building.json() == {
        "status": "building",
        "message": "Snapshot is building, try again in 10s",
    }
    assert running.json()["status"] == "running"
    assert ready.json() == {
        "snapshot_id": snapshot_id,
        "dataset_id": CHATGPT_DATASET,
        "status": "ready",
    }
    assert [record["prompt"] for record in records.json()] == [question(2)]
    assert unknown.status_code == 404
