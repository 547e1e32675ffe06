"""Emulated Gemini API: `POST /v1beta/models/{model}:generateContent`, and the grounding
redirect links its answers cite.

With the `google_search` tool the reply carries grounding metadata as Gemini writes it: the
queries it searched (an empty string among them, as Gemini sometimes reports), one chunk per
source whose `uri` is a redirect link on this server and whose `title` is the bare domain,
and supports tying answer segments to chunks. `GET /grounding-api-redirect/{token}` answers
302 to the page; a link made under the `redirect_expired` fault answers 404, as an expired one
does. Search grounding takes no location: answers are written for the United States.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from devtools.emulator.answers import compose_answer, count_tokens
from devtools.emulator.routing import ProviderRoute, google_error
from devtools.emulator.state import EmulatorState

REDIRECT_PREFIX = "/grounding-api-redirect/"
_EXPIRED = "expired-"
_LOCATION = "US"
_REDIRECT_FAULTS = frozenset({"redirect_expired"})


def _invalid(message: str) -> Response:
    return google_error(400, message)


def _question(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("contents"), list):
        return None
    texts = [
        part["text"]
        for content in body["contents"]
        if isinstance(content, dict) and content.get("role", "user") == "user"
        for part in content.get("parts") or ()
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    ]
    return texts[-1] if texts else None


def _searches(body: dict[str, Any]) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and any(
        isinstance(tool, dict) and "google_search" in tool for tool in tools
    )


def _redirect_token(state: EmulatorState, url: str) -> str:
    token = base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")
    if state.take_fault("gemini", _REDIRECT_FAULTS) is not None:
        return _EXPIRED + token
    return token


async def generate_content(state: EmulatorState, request: Request, body: Any) -> Response:
    question = _question(body)
    if question is None:
        return _invalid("* GenerateContentRequest.contents: contents is not specified")
    model = request.path_params["model"]
    composed = await compose_answer(state.config, question, _LOCATION, "gemini")
    candidate: dict[str, Any] = {
        "content": {"role": "model", "parts": [{"text": composed.text}]},
        "finishReason": "STOP",
        "index": 0,
    }
    searched = _searches(body)
    tool_tokens = 0
    if searched:
        base = str(request.base_url).rstrip("/")
        chunks = [
            {
                "web": {
                    "uri": f"{base}{REDIRECT_PREFIX}{_redirect_token(state, url)}",
                    "title": urlsplit(url).hostname or url,
                }
            }
            for url, _title in composed.citations
        ]
        first_line = composed.text.split("\n", 1)[0]
        candidate["groundingMetadata"] = {
            "webSearchQueries": [question, ""],
            "searchEntryPoint": {"renderedContent": "<div>…</div>"},
            "groundingChunks": chunks,
            "groundingSupports": [
                {
                    "segment": {"startIndex": 0, "endIndex": len(first_line), "text": first_line},
                    "groundingChunkIndices": list(range(len(chunks))),
                }
            ]
            if chunks
            else [],
        }
        tool_tokens = sum(count_tokens(url) for url, _title in composed.citations) + 40
    prompt_tokens = count_tokens(question)
    output_tokens = count_tokens(composed.text)
    thoughts = output_tokens // 2
    return JSONResponse(
        {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": output_tokens,
                "thoughtsTokenCount": thoughts,
                "toolUsePromptTokenCount": tool_tokens,
                "totalTokenCount": prompt_tokens + output_tokens + thoughts + tool_tokens,
            },
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:22],
        }
    )


async def grounding_redirect(_state: EmulatorState, request: Request, _body: Any) -> Response:
    token: str = request.path_params["token"]
    if token.startswith(_EXPIRED):
        return Response("Not Found", status_code=404)
    try:
        target = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return Response("Not Found", status_code=404)
    return RedirectResponse(target, status_code=302)


ROUTES: list[ProviderRoute] = [
    ProviderRoute("/v1beta/models/{model}:generateContent", "gemini", generate_content),
    ProviderRoute(
        REDIRECT_PREFIX + "{token}",
        "gemini",
        grounding_redirect,
        methods=("GET",),
        limited=False,
        authenticated=False,
    ),
]
