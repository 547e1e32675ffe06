"""Emulated Linkup search: `POST /v1/search` in its three output types.

Linkup takes no location, so generated answers are written for the United States.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devtools.emulator.answers import ComposedAnswer, compose_answer
from devtools.emulator.routing import ProviderRoute, error_response
from devtools.emulator.state import EmulatorState
from devtools.emulator.structured import minimal_instance

DEPTHS = frozenset({"fast", "standard", "deep"})
OUTPUT_TYPES = frozenset({"sourcedAnswer", "searchResults", "structured"})
_LOCATION = "US"


def _bad_request(message: str) -> Response:
    return error_response("linkup", 400, "VALIDATION_ERROR", message)


def _request_error(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "Body must be a JSON object"
    query = body.get("q")
    if not isinstance(query, str) or not query.strip():
        return "q must be a non-empty string"
    if body.get("depth") not in DEPTHS:
        return f"depth must be one of {', '.join(sorted(DEPTHS))}"
    if body.get("outputType") not in OUTPUT_TYPES:
        return f"outputType must be one of {', '.join(sorted(OUTPUT_TYPES))}"
    return None


def _source_name(url: str, title: str | None) -> str:
    return title or urlsplit(url).hostname or url


async def search(state: EmulatorState, _request: Request, body: Any) -> Response:
    problem = _request_error(body)
    if problem is not None:
        return _bad_request(problem)
    if body["outputType"] == "structured":
        return _structured(body.get("structuredOutputSchema"))
    answer = await compose_answer(state.config, body["q"], _LOCATION, "linkup")
    if body["outputType"] == "searchResults":
        return JSONResponse({"results": _results(answer)})
    sources = [
        {"name": _source_name(url, title), "url": url, "snippet": title or ""}
        for url, title in answer.citations
    ]
    return JSONResponse({"answer": answer.text, "sources": sources})


def _results(answer: ComposedAnswer) -> list[dict[str, str]]:
    return [
        {"type": "text", "name": _source_name(url, title), "url": url, "content": answer.text}
        for url, title in answer.citations
    ]


def _structured(schema_text: Any) -> Response:
    """Linkup takes the schema as a JSON string; the reply is the smallest instance of it."""
    try:
        schema = json.loads(schema_text) if isinstance(schema_text, str) else None
    except ValueError:
        schema = None
    if not isinstance(schema, dict):
        return _bad_request("structuredOutputSchema must be a JSON schema, as a string")
    return JSONResponse(minimal_instance(schema))


ROUTES: list[ProviderRoute] = [ProviderRoute("/v1/search", "linkup", search)]
