"""Anthropic: one Messages API call per ask, over httpx, optionally with the web search tool."""

from __future__ import annotations

import time
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from app.engines.base import EngineAnswer, EngineCitation, EngineRequest
from app.engines.costs import COST_QUANTUM, token_cost
from app.engines.http import send, tls_context, unreadable
from app.engines.ratelimit import RateLimiter, call_limit
from app.settings import Settings

_WEB_SEARCH_TOOL = "web_search_20250305"


class _Cited(BaseModel):
    """A text block's citation or a web search result: both carry the page's url and title."""

    type: str
    url: str | None = None
    title: str | None = None


class _Block(BaseModel):
    type: str
    text: str | None = None
    citations: list[_Cited] | None = None
    # A web_search_tool_result's results, or its error object when the search failed; loosely
    # typed because other block types' content is never read and must not fail the parse.
    content: list[_Cited] | dict[str, Any] | str | None = None
    name: str | None = None  # a server_tool_use's tool
    input: dict[str, Any] | None = None  # and what it was asked (`query` for web_search)


class _ServerToolUse(BaseModel):
    web_search_requests: int = 0


class _Usage(BaseModel):
    input_tokens: int
    output_tokens: int
    server_tool_use: _ServerToolUse | None = None


class _Message(BaseModel):
    id: str
    model: str
    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage


class AnthropicEngine:
    engine_id = "anthropic"
    batch_size = 1

    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        if settings.anthropic_api_key is None:
            raise ValueError("ANTHROPIC_API_KEY is not set")
        self._settings = settings
        self._limiter = limiter
        self._timeout = settings.anthropic_timeout_seconds
        self._limit = call_limit(
            max_concurrency=settings.anthropic_max_concurrency,
            requests_per_minute=settings.anthropic_requests_per_minute,
            burst=settings.rate_limit_burst,
            timeout_seconds=self._timeout,
        )
        self._client = httpx.AsyncClient(
            verify=tls_context(),
            base_url=settings.anthropic_base_url,
            timeout=httpx.Timeout(self._timeout),
            headers={
                "x-api-key": settings.anthropic_api_key.get_secret_value(),
                "anthropic-version": settings.anthropic_version,
            },
        )

    async def ask(self, request: EngineRequest) -> EngineAnswer:
        async with self._limiter.slot(self.engine_id, self._limit):
            started = time.monotonic()
            response = await send(
                self._client,
                self.engine_id,
                self._timeout,
                "POST",
                "/v1/messages",
                json=self._body(request),
            )
            latency_ms = round((time.monotonic() - started) * 1000)
        try:
            message = _Message.model_validate_json(response.content)
        except ValidationError as exc:
            where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "body"
            raise unreadable(
                self.engine_id, f"unexpected shape ({where}: {exc.errors()[0]['msg']})"
            ) from None
        return self._answer(message, latency_ms)

    def _body(self, request: EngineRequest) -> dict[str, object]:
        settings = self._settings
        body: dict[str, object] = {
            "model": settings.anthropic_model,
            "max_tokens": settings.anthropic_max_tokens,
            "messages": [{"role": "user", "content": request.question}],
        }
        if settings.anthropic_web_search:
            body["tools"] = [
                {
                    "type": _WEB_SEARCH_TOOL,
                    "name": "web_search",
                    "max_uses": settings.anthropic_web_search_max_uses,
                    "user_location": {"type": "approximate", "country": request.location},
                }
            ]
        return body

    def _answer(self, message: _Message, latency_ms: int) -> EngineAnswer:
        settings = self._settings
        usage = message.usage
        searches = usage.server_tool_use.web_search_requests if usage.server_tool_use else 0
        cost = (
            token_cost(
                usage.input_tokens,
                usage.output_tokens,
                settings.anthropic_input_price_per_mtok,
                settings.anthropic_output_price_per_mtok,
            )
            + searches * settings.anthropic_price_per_web_search
        )
        return EngineAnswer(
            text="".join(block.text or "" for block in message.content if block.type == "text"),
            citations=_citations(message.content),
            model=message.model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=cost.quantize(COST_QUANTUM),
            latency_ms=latency_ms,
            simulated=False,
            surface="api",
            # The web search tool's use is counted by Anthropic: 0 means it chose not to.
            searched=searches > 0,
            search_queries=_queries(message.content),
            raw={
                "id": message.id,
                "model": message.model,
                "stop_reason": message.stop_reason,
                "usage": usage.model_dump(exclude_none=True),
                "web_search": settings.anthropic_web_search,
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _queries(blocks: list[_Block]) -> tuple[str, ...]:
    return tuple(
        query
        for block in blocks
        if block.type == "server_tool_use" and block.name == "web_search" and block.input
        if isinstance(query := block.input.get("query"), str) and query.strip()
    )


def _citations(blocks: list[_Block]) -> tuple[EngineCitation, ...]:
    """What the text cites, one per URL in order; failing that, every page the search read."""
    cited = [
        citation
        for block in blocks
        if block.type == "text"
        for citation in block.citations or ()
        if citation.type == "web_search_result_location"
    ]
    if not cited:
        cited = [
            result
            for block in blocks
            if block.type == "web_search_tool_result" and isinstance(block.content, list)
            for result in block.content
            if result.type == "web_search_result"
        ]
    found: dict[str, EngineCitation] = {}
    for page in cited:
        if page.url:
            found.setdefault(page.url, EngineCitation(page.url, page.title or None))
    return tuple(found.values())
