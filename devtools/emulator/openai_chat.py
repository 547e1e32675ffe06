"""Emulated chat completions: OpenAI's `/v1/chat/completions` and Azure's deployment path.

Replies parse with the official `openai` client. A `json_schema` response format gets a
structured reply; anything else gets a composed answer, and with `web_search_options` the
answer links its sources inline the way search models do, each link a `url_citation`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devtools.emulator.answers import (
    ComposedAnswer,
    compose_answer,
    count_tokens,
    invalid_messages,
    last_user_text,
    message_text,
)
from devtools.emulator.config import Provider
from devtools.emulator.routing import ProviderRoute, error_response
from devtools.emulator.state import EmulatorState
from devtools.emulator.structured import structured_reply


async def openai_chat(state: EmulatorState, request: Request, body: Any) -> Response:
    return await _chat(state, "openai", body, model_required=True)


async def azure_chat(state: EmulatorState, request: Request, body: Any) -> Response:
    if "api-version" not in request.query_params:
        # What Azure answers when the api-version query parameter is left out.
        return error_response("azure_openai", 404, "404", "Resource not found")
    return await _chat(
        state,
        "azure_openai",
        body,
        model_required=False,
        default_model=request.path_params["deployment"],
    )


async def _chat(
    state: EmulatorState,
    provider: Provider,
    body: Any,
    *,
    model_required: bool,
    default_model: str = "",
) -> Response:
    invalid = _invalid_request(body, model_required=model_required)
    if invalid is not None:
        return error_response(provider, 400, "invalid_request_error", invalid)
    messages: list[dict[str, Any]] = body["messages"]
    model = body.get("model") or default_model
    response_format = body.get("response_format")
    annotations: list[dict[str, Any]] = []
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        json_schema = response_format.get("json_schema") or {}
        reply = structured_reply(
            json_schema.get("name", ""), json_schema.get("schema") or {}, messages
        )
        content = json.dumps(reply)
    else:
        search = body.get("web_search_options")
        location = _search_country(search) if isinstance(search, dict) else "US"
        composed = await compose_answer(state.config, last_user_text(messages), location, provider)
        if isinstance(search, dict):
            content, annotations = _with_inline_citations(composed)
        else:
            content = composed.text
    prompt_tokens = count_tokens(" ".join(message_text(m.get("content")) for m in messages))
    completion_tokens = count_tokens(content)
    return JSONResponse(
        {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": None,
                        "annotations": annotations,
                    },
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
    )


def _invalid_request(body: Any, *, model_required: bool) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if model_required and not isinstance(body.get("model"), str):
        return "you must provide a model parameter"
    return invalid_messages(
        body.get("messages"),
        empty="'messages' must be a non-empty array",
        malformed="each message must be an object with a 'role'",
    )


def _search_country(search: dict[str, Any]) -> str:
    location = search.get("user_location")
    approximate = location.get("approximate") if isinstance(location, dict) else None
    country = approximate.get("country") if isinstance(approximate, dict) else None
    return country if isinstance(country, str) and country else "US"


def _with_inline_citations(composed: ComposedAnswer) -> tuple[str, list[dict[str, Any]]]:
    """Search models end their prose with `([site](url))` links, each span an annotation."""
    content = composed.text
    annotations: list[dict[str, Any]] = []
    for url, title in composed.citations:
        link = f"([{urlsplit(url).hostname or url}]({url}))"
        content += " "
        start = len(content)
        content += link
        annotations.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": url,
                    "title": title or url,
                    "start_index": start,
                    "end_index": len(content),
                },
            }
        )
    return content, annotations


ROUTES: list[ProviderRoute] = [
    ProviderRoute("/v1/chat/completions", "openai", openai_chat),
    ProviderRoute("/openai/deployments/{deployment}/chat/completions", "azure_openai", azure_chat),
]
