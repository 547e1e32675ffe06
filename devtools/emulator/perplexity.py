"""Emulated Perplexity Agent API: `POST /v1/agent` with the web search tool.

Unknown fields are refused with 400, as Perplexity refuses them. With the web_search tool the
reply has a `search_results` item before the message; without it the answer is ungrounded.
The `response_failed` fault answers HTTP 200 with `status: "failed"`, as Perplexity may.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devtools.emulator.answers import compose_answer, count_tokens
from devtools.emulator.routing import ProviderRoute, error_response
from devtools.emulator.state import EmulatorState

SEARCH_PRICE = Decimal("0.005")
_TOKEN_PRICE = Decimal("0.000001")
_FIELDS = frozenset({"model", "input", "tools", "instructions", "max_output_tokens", "stream"})
_RESPONSE_FAULTS = frozenset({"response_failed"})


def _invalid(message: str) -> Response:
    return error_response("perplexity", 400, "invalid_request", message)


def _web_search(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    return next((t for t in tools if isinstance(t, dict) and t.get("type") == "web_search"), None)


async def agent(state: EmulatorState, _request: Request, body: Any) -> Response:
    if not isinstance(body, dict):
        return _invalid("The request body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return _invalid(f"Unknown field(s): {', '.join(unknown)}")
    question, model = body.get("input"), body.get("model")
    if not isinstance(question, str) or not question.strip():
        return _invalid("input is required")
    if not isinstance(model, str):
        return _invalid("model is required")
    response_id = f"resp_{uuid.uuid4().hex[:24]}"
    if state.take_fault("perplexity", _RESPONSE_FAULTS) is not None:
        return JSONResponse(
            {
                "id": response_id,
                "model": model,
                "status": "failed",
                "output": [],
                "error": {"code": "internal_error", "message": "The agent run failed"},
            }
        )
    search = _web_search(body)
    location = search.get("user_location") if search else None
    country = location.get("country") if isinstance(location, dict) else None
    composed = await compose_answer(
        state.config, question, country if isinstance(country, str) else "US", "perplexity"
    )
    output: list[dict[str, Any]] = []
    cost = Decimal(0)
    if search is not None:
        output.append(
            {
                "type": "search_results",
                "queries": [question],
                "results": [
                    {"url": url, "title": title or url, "snippet": "", "date": None}
                    for url, title in composed.citations
                ],
            }
        )
        cost += SEARCH_PRICE
    output.append(
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": composed.text}],
        }
    )
    input_tokens, output_tokens = count_tokens(question), count_tokens(composed.text)
    cost += (input_tokens + output_tokens) * _TOKEN_PRICE
    return JSONResponse(
        {
            "id": response_id,
            "object": "response",
            "created_at": int(time.time()),
            "model": model,
            "status": "completed",
            "output": output,
            "usage": {
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
                "cost": {"total_cost": float(cost), "currency": "USD"},
            },
        }
    )


ROUTES: list[ProviderRoute] = [ProviderRoute("/v1/agent", "perplexity", agent)]
