"""The emulated chat completions and messages endpoints, seen by official clients and raw HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from pydantic import BaseModel

from devtools.emulator.answers import count_tokens
from devtools.emulator.config import (
    EmulatorConfig,
    RateLimitRule,
    ScriptedAnswer,
    ScriptedCitation,
)
from devtools.emulator.server import EmulatorServer
from tests.worker_support import eventually

OPENAI_HEADERS = {"Authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Best CRM?"}]}
MESSAGE = {"model": "claude-test", "max_tokens": 256, "messages": CHAT["messages"]}
SCRIPTED = EmulatorConfig(
    answers=[
        ScriptedAnswer(
            match="crm",
            text="Acme Analytics is popular.\n\nNorthwind Labs is cheaper.",
            citations=[
                ScriptedCitation(url="https://www.g2.com/crm", title="G2"),
                ScriptedCitation(url="https://acme-analytics.com/", title="Acme"),
            ],
        )
    ]
)


class Verdict(BaseModel):
    mentioned: bool
    sentiment: str
    position: int


@pytest.fixture
async def http(emulator: EmulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=emulator.url, timeout=5) as client:
        yield client


@pytest.fixture
async def openai_client(emulator: EmulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(api_key="sk-test", base_url=f"{emulator.url}/v1", max_retries=0)
    yield client
    await client.close()


async def test_json_schema_replies_parse_with_the_official_client(
    emulator: EmulatorServer, openai_client: openai.AsyncOpenAI
) -> None:
    completion = await openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "Judge."}, {"role": "user", "content": "Text"}],
        response_format={
            "type": "json_schema",
            "json_schema": {
                "name": "verdict",
                "strict": True,
                "schema": Verdict.model_json_schema(),
            },
        },
    )

    content = completion.choices[0].message.content
    assert content is not None
    assert Verdict.model_validate_json(content) == Verdict(
        mentioned=False, sentiment="", position=0
    )
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == count_tokens("Judge. Text")
    assert completion.usage.completion_tokens == count_tokens(content)

    parsed = await openai_client.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Text"}],
        response_format=Verdict,
    )
    assert parsed.choices[0].message.parsed == Verdict(mentioned=False, sentiment="", position=0)


async def test_url_citations_span_their_inline_links(
    emulator: EmulatorServer, openai_client: openai.AsyncOpenAI
) -> None:
    emulator.state.configure(SCRIPTED)
    completion = await openai_client.chat.completions.create(
        model="gpt-4o-search-preview",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Best CRM in France?"}]}],
        web_search_options={
            "user_location": {"type": "approximate", "approximate": {"country": "FR"}}
        },
    )

    message = completion.choices[0].message
    assert message.content is not None
    assert message.content.startswith("Acme Analytics is popular.")
    spans = [
        (
            a.url_citation.url,
            a.url_citation.title,
            message.content[a.url_citation.start_index : a.url_citation.end_index],
        )
        for a in message.annotations or ()
    ]
    assert spans == [
        ("https://www.g2.com/crm", "G2", "([www.g2.com](https://www.g2.com/crm))"),
        (
            "https://acme-analytics.com/",
            "Acme",
            "([acme-analytics.com](https://acme-analytics.com/))",
        ),
    ]


async def test_generated_answers_follow_the_search_location(
    emulator: EmulatorServer, openai_client: openai.AsyncOpenAI
) -> None:
    async def ask(country: str) -> str:
        completion = await openai_client.chat.completions.create(
            model="gpt-4o-search-preview",
            messages=[{"role": "user", "content": "Which CRM is best for startups?"}],
            web_search_options={
                "user_location": {"type": "approximate", "approximate": {"country": country}}
            },
        )
        return completion.choices[0].message.content or ""

    france, japan = await ask("FR"), await ask("JP")
    assert "France" in france
    assert "Japan" in japan


async def test_chat_requests_are_validated(
    emulator: EmulatorServer, http: httpx.AsyncClient
) -> None:
    without_model = await http.post(
        "/v1/chat/completions", headers=OPENAI_HEADERS, json={"messages": CHAT["messages"]}
    )
    assert without_model.status_code == 400
    assert without_model.json()["error"]["type"] == "invalid_request_error"

    without_messages = await http.post(
        "/v1/chat/completions", headers=OPENAI_HEADERS, json={"model": "gpt-4o", "messages": []}
    )
    assert without_messages.status_code == 400

    without_key = await http.post("/v1/chat/completions", json=CHAT)
    assert without_key.status_code == 401
    assert without_key.json()["error"]["code"] == "invalid_api_key"


async def test_azure_needs_an_api_version(
    emulator: EmulatorServer, http: httpx.AsyncClient
) -> None:
    path = "/openai/deployments/gpt4o-prod/chat/completions"
    headers = {"api-key": "azure-test"}
    missing = await http.post(path, headers=headers, json={"messages": CHAT["messages"]})
    assert missing.status_code == 404

    answered = await http.post(
        path,
        headers=headers,
        params={"api-version": "2024-10-21"},
        json={"messages": CHAT["messages"]},
    )
    assert answered.status_code == 200
    assert answered.json()["model"] == "gpt4o-prod"


async def test_anthropic_requests_are_validated(
    emulator: EmulatorServer, http: httpx.AsyncClient
) -> None:
    without_version = await http.post(
        "/v1/messages", headers={"x-api-key": "sk-ant-test"}, json=MESSAGE
    )
    assert without_version.status_code == 400
    assert without_version.json() == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "anthropic-version: header is required",
        },
    }

    without_max_tokens = await http.post(
        "/v1/messages", headers=ANTHROPIC_HEADERS, json={**MESSAGE, "max_tokens": None}
    )
    assert without_max_tokens.status_code == 400
    assert "max_tokens" in without_max_tokens.json()["error"]["message"]

    without_key = await http.post(
        "/v1/messages", headers={"anthropic-version": "2023-06-01"}, json=MESSAGE
    )
    assert without_key.status_code == 401
    assert without_key.json()["error"]["type"] == "authentication_error"


async def test_anthropic_web_search_reply_shape(
    emulator: EmulatorServer, http: httpx.AsyncClient
) -> None:
    emulator.state.configure(SCRIPTED)
    tool = {
        "type": "web_search_20250305",
        "name": "web_search",
        "max_uses": 3,
        "user_location": {"type": "approximate", "country": "GB"},
    }
    response = await http.post(
        "/v1/messages", headers=ANTHROPIC_HEADERS, json={**MESSAGE, "tools": [tool]}
    )

    assert response.status_code == 200
    reply = response.json()
    assert reply["type"] == "message"
    assert reply["model"] == "claude-test"
    assert reply["stop_reason"] == "end_turn"
    blocks = reply["content"]
    assert [b["type"] for b in blocks] == [
        "server_tool_use",
        "web_search_tool_result",
        "text",
        "text",
    ]
    assert blocks[1]["tool_use_id"] == blocks[0]["id"]
    assert [r["url"] for r in blocks[1]["content"]] == [
        "https://www.g2.com/crm",
        "https://acme-analytics.com/",
    ]
    assert "".join(b["text"] for b in blocks[2:]) == SCRIPTED.answers[0].text
    cited = [(c["type"], c["url"], c["title"]) for b in blocks[2:] for c in b["citations"]]
    assert cited == [
        ("web_search_result_location", "https://www.g2.com/crm", "G2"),
        ("web_search_result_location", "https://acme-analytics.com/", "Acme"),
    ]
    assert reply["usage"]["server_tool_use"] == {"web_search_requests": 1}
    assert reply["usage"]["output_tokens"] == count_tokens(SCRIPTED.answers[0].text)


async def test_anthropic_without_tools_answers_in_one_text_block(
    emulator: EmulatorServer, http: httpx.AsyncClient
) -> None:
    emulator.state.configure(SCRIPTED)
    response = await http.post("/v1/messages", headers=ANTHROPIC_HEADERS, json=MESSAGE)

    reply = response.json()
    assert reply["content"] == [{"type": "text", "text": SCRIPTED.answers[0].text}]
    assert "server_tool_use" not in reply["usage"]


async def test_openai_rate_limit_per_key(emulator: EmulatorServer, http: httpx.AsyncClient) -> None:
    emulator.state.configure(
        EmulatorConfig(rate_limits={"openai": RateLimitRule(requests_per_minute=60, burst=2)})
    )

    async def post(key: str = "sk-test") -> httpx.Response:
        return await http.post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=CHAT
        )

    statuses = [(await post()).status_code for _ in range(2)]
    limited = await post()
    assert statuses == [200, 200]
    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    wait_ms = int(limited.headers["retry-after-ms"])
    assert 0 < wait_ms <= 1000
    assert limited.headers["retry-after"] == "1"
    # Each key has a bucket of its own.
    assert (await post("sk-other")).status_code == 200

    # The bucket refills: a later request is answered again.
    async def refilled() -> bool:
        return (await post()).status_code == 200

    await eventually(refilled, interval=wait_ms / 4000, what="the bucket to refill")


async def test_openai_errors_parse_with_the_official_client(
    emulator: EmulatorServer, openai_client: openai.AsyncOpenAI
) -> None:
    emulator.state.configure(
        EmulatorConfig(rate_limits={"openai": RateLimitRule(requests_per_minute=60, burst=1)})
    )
    await openai_client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )
    with pytest.raises(openai.RateLimitError) as raised:
        await openai_client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.code == "rate_limit_exceeded"
    assert float(raised.value.response.headers["retry-after-ms"]) > 0
