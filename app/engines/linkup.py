"""Linkup: one `POST /search` with `outputType=sourcedAnswer` per run.

Linkup searches the web and answers with its sources; it has no location parameter, so the
run's location is recorded by the caller but not sent. Each `ask` is a single attempt: the
evaluation loop retries the EngineErrors marked retryable.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from app.engines.base import EngineAnswer, EngineCitation, EngineRequest
from app.engines.http import json_body, send, tls_context, unreadable
from app.engines.ratelimit import RateLimiter, call_limit
from app.settings import Settings

ENGINE_ID = "linkup"


class LinkupEngine:
    engine_id = ENGINE_ID
    batch_size = 1

    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        if settings.linkup_api_key is None:
            raise ValueError("the linkup engine needs LINKUP_API_KEY")
        self._depth = settings.linkup_depth
        self._price = settings.linkup_price_per_request
        self._timeout = settings.linkup_timeout_seconds
        self._limiter = limiter
        self._limit = call_limit(
            max_concurrency=settings.linkup_max_concurrency,
            requests_per_minute=settings.linkup_requests_per_minute,
            burst=settings.rate_limit_burst,
            timeout_seconds=self._timeout,
        )
        self._client = httpx.AsyncClient(
            verify=tls_context(),
            base_url=settings.linkup_base_url,
            headers={"Authorization": f"Bearer {settings.linkup_api_key.get_secret_value()}"},
            timeout=self._timeout,
        )

    async def ask(self, request: EngineRequest) -> EngineAnswer:
        started = time.perf_counter()
        body = {"q": request.question, "depth": self._depth, "outputType": "sourcedAnswer"}
        async with self._limiter.slot(ENGINE_ID, self._limit):
            document = await self._search(body)
        answer, sources = _sourced_answer(document)
        return EngineAnswer(
            text=answer,
            citations=tuple(_citation(source) for source in sources if _has_url(source)),
            model=f"linkup-{self._depth}",
            input_tokens=0,
            output_tokens=0,
            cost=self._price,
            latency_ms=round((time.perf_counter() - started) * 1000),
            simulated=False,
            surface="api",
            # Linkup is a search engine: every answer is written from its search.
            searched=True,
            raw={"engine": ENGINE_ID, "depth": self._depth, "sources": len(sources)},
        )

    async def _search(self, body: dict[str, str]) -> Any:
        response = await send(self._client, ENGINE_ID, self._timeout, "POST", "/search", json=body)
        return json_body(ENGINE_ID, response)

    async def aclose(self) -> None:
        await self._client.aclose()


def _sourced_answer(document: Any) -> tuple[str, list[Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("answer"), str):
        raise unreadable(ENGINE_ID, "no 'answer' string")
    sources = document.get("sources") or []
    if not isinstance(sources, list):
        raise unreadable(ENGINE_ID, "'sources' is not a list")
    return document["answer"], sources


def _has_url(source: Any) -> bool:
    return isinstance(source, dict) and isinstance(source.get("url"), str) and bool(source["url"])


def _citation(source: dict[str, Any]) -> EngineCitation:
    name = source.get("name")
    return EngineCitation(url=source["url"], title=name if isinstance(name, str) and name else None)
