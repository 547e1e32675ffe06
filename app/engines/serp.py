"""Google's AI Overviews, read off the results page through DataForSEO's SERP API.

One live `organic/live/advanced` task per ask, for the question as the keyword in the run's
country (its location code and language). A page may have no AI Overview: that is an answer
too — a completed run with `surface_present=false`, neither an error nor a mention. DataForSEO
reports failures in the body (`status_code` 20000 is success) as often as in HTTP statuses.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from app.engines.base import EngineAnswer, EngineCitation, EngineError, EngineRequest
from app.engines.brightdata import without_text_fragment
from app.engines.costs import COST_QUANTUM
from app.engines.http import json_body, send, tls_context, unreadable
from app.engines.ratelimit import RateLimiter, call_limit
from app.engines.serp_locations import SERP_LOCATIONS
from app.settings import Settings

ENGINE_ID = "google_ai_overview"
MODEL = "google-ai-overview"
PATH = "/v3/serp/google/organic/live/advanced"
_OK = 20000
_RETRYABLE_CODES = frozenset(
    {
        40101,  # the search engine failed to answer this task
        40202,  # rate limit per minute exceeded
    }
)
_QUOTA_CODES = frozenset({40200, 40210})  # payment required, insufficient funds


class SerpEngine:
    engine_id = ENGINE_ID
    batch_size = 1

    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        if settings.dataforseo_login is None or settings.dataforseo_password is None:
            raise ValueError("the google_ai_overview engine needs DATAFORSEO_LOGIN and _PASSWORD")
        self._settings = settings
        self._limiter = limiter
        self._timeout = settings.dataforseo_timeout_seconds
        self._limit = call_limit(
            max_concurrency=settings.dataforseo_max_concurrency,
            requests_per_minute=settings.dataforseo_requests_per_minute,
            burst=settings.rate_limit_burst,
            timeout_seconds=self._timeout,
        )
        pair = (
            f"{settings.dataforseo_login.get_secret_value()}:"
            f"{settings.dataforseo_password.get_secret_value()}"
        )
        self._client = httpx.AsyncClient(
            verify=tls_context(),
            base_url=settings.dataforseo_base_url,
            timeout=self._timeout,
            headers={"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"},
        )

    async def ask(self, request: EngineRequest) -> EngineAnswer:
        started = time.monotonic()
        location = SERP_LOCATIONS.get(request.location)
        if location is None:
            # Refused when the org's locations were set; reaching here means they were set
            # before this engine was chosen or the table changed since.
            raise EngineError(
                f"{ENGINE_ID}: country {request.location} is not served", retryable=False
            )
        task: dict[str, Any] = {
            "keyword": request.question,
            "location_code": location.location_code,
            "language_code": location.language_code,
        }
        if self._settings.dataforseo_load_async_ai_overview:
            task["load_async_ai_overview"] = True
        async with self._limiter.slot(ENGINE_ID, self._limit):
            response = await send(self._client, ENGINE_ID, self._timeout, "POST", PATH, json=[task])
        result, cost, task_id = _task_result(json_body(ENGINE_ID, response))
        return _answer(result, cost, task_id, request.question, started)

    async def aclose(self) -> None:
        await self._client.aclose()


def _status_error(code: object, message: object) -> EngineError:
    detail = f"{ENGINE_ID}: status {code}: {message}"
    if code in _QUOTA_CODES:
        return EngineError(f"quota_exhausted: {detail}", retryable=False)
    retryable = code in _RETRYABLE_CODES or (isinstance(code, int) and code >= 50000)
    return EngineError(detail, retryable=retryable)


def _task_result(document: Any) -> tuple[dict[str, Any], Decimal, str | None]:
    if not isinstance(document, dict):
        raise unreadable(ENGINE_ID, "the reply is not an object")
    if document.get("status_code") != _OK:
        raise _status_error(document.get("status_code"), document.get("status_message"))
    tasks = document.get("tasks")
    if not isinstance(tasks, list) or not tasks or not isinstance(tasks[0], dict):
        raise unreadable(ENGINE_ID, "no task in the reply")
    task = tasks[0]
    if task.get("status_code") != _OK:
        raise _status_error(task.get("status_code"), task.get("status_message"))
    results = task.get("result")
    if not isinstance(results, list) or not results or not isinstance(results[0], dict):
        raise unreadable(ENGINE_ID, "the task has no result")
    return results[0], _cost(task.get("cost")), task.get("id")


def _cost(value: object) -> Decimal:
    try:
        return Decimal(str(value)).quantize(COST_QUANTUM)
    except InvalidOperation:
        raise unreadable(ENGINE_ID, "the task's cost is not a number") from None


def _answer(
    result: dict[str, Any], cost: Decimal, task_id: str | None, question: str, started: float
) -> EngineAnswer:
    items = result.get("items") or []
    overview = next(
        (i for i in items if isinstance(i, dict) and i.get("type") == "ai_overview"), None
    )
    raw: dict[str, object] = {
        "task_id": task_id,
        "check_url": result.get("check_url"),
        "item_types": result.get("item_types"),
    }
    answer = EngineAnswer(
        text="",
        citations=(),
        model=MODEL,
        input_tokens=0,
        output_tokens=0,
        cost=cost,
        latency_ms=round((time.monotonic() - started) * 1000),
        simulated=False,
        surface="serp",
        searched=None,
        surface_present=False,
        raw=raw,
    )
    if overview is None:
        return answer
    text = _overview_text(overview)
    if not text:
        # Google shows one, but it did not load in time: asking again may find it written.
        raise EngineError(f"{ENGINE_ID}: the AI Overview did not load", retryable=True)
    # An AI Overview is written from the search for the page's query.
    return dataclasses.replace(
        answer,
        text=text,
        citations=_references(overview),
        searched=True,
        search_queries=(question,),
        surface_present=True,
    )


def _overview_text(overview: dict[str, Any]) -> str:
    markdown = overview.get("markdown")
    if isinstance(markdown, str) and markdown.strip():
        return markdown
    parts = [
        element.get("markdown") or element.get("text")
        for element in overview.get("items") or ()
        if isinstance(element, dict)
    ]
    return "\n\n".join(part for part in parts if isinstance(part, str) and part.strip())


def _references(overview: dict[str, Any]) -> tuple[EngineCitation, ...]:
    """The overview's own references, then its elements', one per page, in order."""
    listed = list(overview.get("references") or ())
    for element in overview.get("items") or ():
        if isinstance(element, dict):
            listed.extend(element.get("references") or ())
    found: dict[str, EngineCitation] = {}
    for reference in listed:
        if not isinstance(reference, dict) or not isinstance(reference.get("url"), str):
            continue
        url = without_text_fragment(reference["url"].strip())
        if not url:
            continue
        title = reference.get("title") or reference.get("source")
        found.setdefault(url, EngineCitation(url, title if isinstance(title, str) else None))
    return tuple(found.values())
