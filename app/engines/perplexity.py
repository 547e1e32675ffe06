"""Perplexity: one Agent API response per ask (`POST /v1/agent`) with the web search tool.

The legacy Sonar chat completions are announced as supported only until 2026-09-27, so the
Agent API is used. The run's country goes in the web search tool's user location; the answer
is the message's output text, the citations the search results, the cost what Perplexity
reports. A run that failed can come back as HTTP 200 with `status: "failed"`.
"""

from __future__ import annotations

import time
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from app.engines.base import EngineAnswer, EngineCitation, EngineError, EngineRequest
from app.engines.costs import COST_QUANTUM
from app.engines.http import send, tls_context, unreadable
from app.engines.ratelimit import RateLimiter, call_limit
from app.settings import Settings

ENGINE_ID = "perplexity"


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Text(_Loose):
    type: str
    text: str | None = None


class _Result(_Loose):
    url: str | None = None
    title: str | None = None


class _Item(_Loose):
    type: str
    content: list[_Text] | None = None
    results: list[_Result] | None = None
    queries: list[str] | None = None


class _Cost(_Loose):
    total_cost: float | str | None = None
    currency: str | None = None


class _Usage(_Loose):
    input_tokens: int = 0
    output_tokens: int = 0
    cost: _Cost | None = None


class _Error(_Loose):
    message: str | None = None
    code: str | None = None


class _Response(_Loose):
    id: str | None = None
    model: str | None = None
    status: str | None = None
    output: list[_Item] = []
    usage: _Usage = _Usage()
    error: _Error | str | None = None


class PerplexityEngine:
    engine_id = ENGINE_ID
    batch_size = 1

    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        if settings.perplexity_api_key is None:
            raise ValueError("the perplexity engine needs PERPLEXITY_API_KEY")
        self._settings = settings
        self._limiter = limiter
        self._timeout = settings.perplexity_timeout_seconds
        self._limit = call_limit(
            max_concurrency=settings.perplexity_max_concurrency,
            requests_per_minute=settings.perplexity_requests_per_minute,
            burst=settings.rate_limit_burst,
            timeout_seconds=self._timeout,
        )
        self._client = httpx.AsyncClient(
            verify=tls_context(),
            base_url=settings.perplexity_base_url,
            timeout=self._timeout,
            headers={"Authorization": f"Bearer {settings.perplexity_api_key.get_secret_value()}"},
        )

    async def ask(self, request: EngineRequest) -> EngineAnswer:
        started = time.monotonic()
        body: dict[str, Any] = {
            "model": self._settings.perplexity_model,
            "input": request.question,
            "tools": [
                {
                    "type": "web_search",
                    "search_context_size": self._settings.perplexity_search_context_size,
                    "user_location": {"country": request.location},
                }
            ],
        }
        async with self._limiter.slot(ENGINE_ID, self._limit):
            response = await send(
                self._client, ENGINE_ID, self._timeout, "POST", "/v1/agent", json=body
            )
        try:
            parsed = _Response.model_validate_json(response.content)
        except ValidationError as exc:
            where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "body"
            raise unreadable(ENGINE_ID, f"unexpected shape ({where})") from None
        return _answer(parsed, self._settings.perplexity_model, started)

    async def aclose(self) -> None:
        await self._client.aclose()


def _answer(response: _Response, model: str, started: float) -> EngineAnswer:
    if response.status == "failed":
        error = response.error
        reason = error if isinstance(error, str) else (error.message if error else None)
        # A failed response is not billed, and Perplexity does not say which failures last.
        raise EngineError(
            f"{ENGINE_ID}: response failed: {reason or 'no reason given'}", retryable=True
        )
    text = "".join(
        block.text or ""
        for item in response.output
        if item.type == "message"
        for block in item.content or ()
        if block.type == "output_text"
    )
    searches = [item for item in response.output if item.type == "search_results"]
    found: dict[str, EngineCitation] = {}
    for item in searches:
        for result in item.results or ():
            if result.url:
                found.setdefault(result.url, EngineCitation(result.url, result.title or None))
    queries = tuple(q for item in searches for q in item.queries or () if q.strip())
    usage = response.usage
    return EngineAnswer(
        text=text,
        citations=tuple(found.values()),
        model=response.model or model,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cost=_reported_cost(usage.cost),
        latency_ms=round((time.monotonic() - started) * 1000),
        simulated=False,
        surface="api",
        # The search_results item is the web search tool's output: its absence means the
        # model answered without searching.
        searched=bool(searches),
        search_queries=queries,
        raw={
            "id": response.id,
            "model": response.model,
            "status": response.status,
            "usage": usage.model_dump(exclude_none=True),
        },
    )


def _reported_cost(cost: _Cost | None) -> Decimal:
    if cost is None or cost.total_cost is None:
        raise unreadable(ENGINE_ID, "usage.cost.total_cost is missing")
    try:
        # Through str: a float's binary expansion is not the amount Perplexity billed.
        value = Decimal(str(cost.total_cost))
    except InvalidOperation:
        raise unreadable(ENGINE_ID, "usage.cost.total_cost is not a number") from None
    return value.quantize(COST_QUANTUM)
