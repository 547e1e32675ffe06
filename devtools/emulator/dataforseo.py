"""Emulated DataForSEO SERP API: `POST /v3/serp/google/organic/live/advanced`.

A results page for the task's keyword in the country of its location code: organic results
and, unless the `no_ai_overview` fault lands on it, an `ai_overview` item with markdown,
elements and references (their URLs carrying `#:~:text=` fragments, as Google links them).
Failures come back as DataForSEO writes them: HTTP 200 with the code in the body.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.engines.serp_locations import SERP_LOCATIONS
from devtools.emulator.answers import compose_answer
from devtools.emulator.routing import ProviderRoute, dataforseo_status
from devtools.emulator.state import EmulatorState

PAGE_COST = Decimal("0.002")
ASYNC_OVERVIEW_COST = Decimal("0.002")
_COUNTRIES = {location.location_code: country for country, location in SERP_LOCATIONS.items()}
_OVERVIEW_FAULTS = frozenset({"no_ai_overview"})


def _task_error(task: Any) -> str | None:
    if not isinstance(task, dict):
        return "Invalid Field: the task must be an object."
    if not isinstance(task.get("keyword"), str) or not task["keyword"].strip():
        return "Invalid Field: 'keyword'."
    if task.get("location_code") not in _COUNTRIES:
        return "Invalid Field: 'location_code'."
    if not isinstance(task.get("language_code"), str):
        return "Invalid Field: 'language_code'."
    return None


async def organic_live_advanced(state: EmulatorState, _request: Request, body: Any) -> Response:
    if not isinstance(body, list) or len(body) != 1:
        return dataforseo_status(40501, "Invalid Field: live mode takes exactly one task.")
    task = body[0]
    problem = _task_error(task)
    if problem is not None:
        return dataforseo_status(40501, problem)
    country = _COUNTRIES[task["location_code"]]
    keyword: str = task["keyword"]
    items: list[dict[str, Any]] = []
    cost = PAGE_COST
    if task.get("load_async_ai_overview") is True:
        cost += ASYNC_OVERVIEW_COST
    composed = await compose_answer(state.config, keyword, country, "google_ai_overview")
    if state.take_fault("dataforseo", _OVERVIEW_FAULTS) is None:
        items.append(_overview(composed.text, composed.citations))
    for rank, (url, title) in enumerate(composed.citations, 1):
        items.append(
            {
                "type": "organic",
                "rank_group": rank,
                "rank_absolute": rank + 1,
                "domain": urlsplit(url).hostname,
                "title": title or url,
                "url": url,
            }
        )
    task_id = str(uuid.uuid4())
    result = {
        "keyword": keyword,
        "type": "organic",
        "se_domain": "google.com",
        "location_code": task["location_code"],
        "language_code": task["language_code"],
        "check_url": f"https://www.google.com/search?q={quote(keyword)}",
        "item_types": sorted({item["type"] for item in items}),
        "items_count": len(items),
        "items": items,
    }
    return JSONResponse(
        {
            "version": "0.1.20260101",
            "status_code": 20000,
            "status_message": "Ok.",
            "time": "1.2 sec.",
            "cost": float(cost),
            "tasks_count": 1,
            "tasks_error": 0,
            "tasks": [
                {
                    "id": task_id,
                    "status_code": 20000,
                    "status_message": "Ok.",
                    "cost": float(cost),
                    "result_count": 1,
                    "path": ["v3", "serp", "google", "organic", "live", "advanced"],
                    "data": task,
                    "result": [result],
                }
            ],
        }
    )


def _overview(markdown: str, citations: tuple[tuple[str, str | None], ...]) -> dict[str, Any]:
    references = [
        {
            "type": "ai_overview_reference",
            "source": urlsplit(url).hostname,
            "domain": urlsplit(url).hostname,
            "url": f"{url}#:~:text=best%20choice",
            "title": title or url,
            "text": None,
        }
        for url, title in citations
    ]
    paragraphs = [p for p in markdown.split("\n\n") if p.strip()]
    return {
        "type": "ai_overview",
        "rank_group": 1,
        "rank_absolute": 1,
        "asynchronous_ai_overview": False,
        "markdown": markdown,
        "items": [
            {"type": "ai_overview_element", "title": None, "text": p, "markdown": p}
            for p in paragraphs
        ],
        "references": references,
    }


ROUTES: list[ProviderRoute] = [
    ProviderRoute("/v3/serp/google/organic/live/advanced", "dataforseo", organic_live_advanced)
]
