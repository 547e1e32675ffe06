"""Emulated Anthropic Messages API: `POST /v1/messages`.

With the web search tool the reply is shaped like Claude's: a `server_tool_use` block, its
`web_search_tool_result`, then one text block per paragraph, the sources spread over them as
`web_search_result_location` citations; usage counts the search in `server_tool_use`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devtools.emulator.answers import (
    ComposedAnswer,
    compose_answer,
    count_tokens,
    invalid_messages,
    last_user_text,
)
from devtools.emulator.routing import ProviderRoute, error_response
from devtools.emulator.state import EmulatorState

_PARAGRAPH_END = re.compile(r"(?<=\n\n)")
_CITED_TEXT_CHARS = 150


async def messages(state: EmulatorState, request: Request, body: Any) -> Response:
    if "anthropic-version" not in request.headers:
        return _invalid("anthropic-version: header is required")
    invalid = _invalid_request(body)
    if invalid is not None:
        return _invalid(invalid)
    question = last_user_text(body["messages"])
    search_tool = _web_search_tool(body.get("tools"))
    location = _tool_country(search_tool) if search_tool is not None else "US"
    composed = await compose_answer(state.config, question, location, "anthropic")
    usage: dict[str, Any] = {
        "input_tokens": count_tokens(question),
        "output_tokens": count_tokens(composed.text),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if search_tool is None:
        content: list[dict[str, Any]] = [{"type": "text", "text": composed.text}]
    else:
        content = _searched_content(question, composed)
        # Search results are read as input, so they are billed as input tokens.
        usage["input_tokens"] += sum(
            count_tokens(f"{url} {title}") for url, title in composed.citations
        )
        usage["server_tool_use"] = {"web_search_requests": 1}
    return JSONResponse(
        {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
    )


def _invalid(message: str) -> Response:
    return error_response("anthropic", 400, "invalid_request_error", message)


def _invalid_request(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body: Input should be an object"
    if not isinstance(body.get("model"), str):
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (an integer of at least 1)"
    return invalid_messages(
        body.get("messages"),
        empty="messages: at least one message is required",
        malformed="messages: each message must be an object with a 'role'",
    )


def _web_search_tool(tools: Any) -> dict[str, Any] | None:
    if not isinstance(tools, list):
        return None
    for tool in tools:
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search_"):
            return tool
    return None


def _tool_country(tool: dict[str, Any]) -> str:
    location = tool.get("user_location")
    country = location.get("country") if isinstance(location, dict) else None
    return country if isinstance(country, str) and country else "US"


def _searched_content(question: str, composed: ComposedAnswer) -> list[dict[str, Any]]:
    tool_use_id = f"srvtoolu_{uuid.uuid4().hex[:24]}"
    sources = [(url, title or url) for url, title in composed.citations]
    blocks: list[dict[str, Any]] = [
        {
            "type": "server_tool_use",
            "id": tool_use_id,
            "name": "web_search",
            "input": {"query": question},
        },
        {
            "type": "web_search_tool_result",
            "tool_use_id": tool_use_id,
            "content": [
                {
                    "type": "web_search_result",
                    "url": url,
                    "title": title,
                    "encrypted_content": _opaque(),
                    "page_age": None,
                }
                for url, title in sources
            ],
        },
    ]
    paragraphs = [p for p in _PARAGRAPH_END.split(composed.text) if p]
    # Consecutive shares, so every source is cited once and in order.
    share = -(-len(sources) // max(1, len(paragraphs)))
    for index, paragraph in enumerate(paragraphs):
        cited = sources[index * share : (index + 1) * share]
        block: dict[str, Any] = {"type": "text", "text": paragraph}
        if cited:
            block["citations"] = [
                {
                    "type": "web_search_result_location",
                    "url": url,
                    "title": title,
                    "encrypted_index": _opaque(),
                    "cited_text": paragraph.strip()[:_CITED_TEXT_CHARS],
                }
                for url, title in cited
            ]
        blocks.append(block)
    return blocks


def _opaque() -> str:
    return uuid.uuid4().hex


ROUTES: list[ProviderRoute] = [ProviderRoute("/v1/messages", "anthropic", messages)]
