"""Emulated BrightData Web Scraper API v3: trigger a snapshot, poll its progress, download it.

A snapshot's records are composed at trigger time, so the faults a test configures land on the
inputs of the trigger that takes them: a log-in wall or a "Loading..." placeholder stored as the
answer, or a record carrying `error` / `error_code` instead of one (dropped from the snapshot,
as BrightData drops it, unless the trigger asked `include_errors=true`).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.engines.scrapers import SCRAPERS, Scraper
from devtools.emulator.answers import compose_answer
from devtools.emulator.routing import ProviderRoute, error_response
from devtools.emulator.state import EmulatorState

# Each scraper's records as its dataset writes them; an unknown `gd_` dataset answers as
# ChatGPT's does.
_BY_DATASET: dict[str, Scraper] = {s.dataset_id: s for s in SCRAPERS.values()}
_DEFAULT_SCRAPER = SCRAPERS["brightdata_chatgpt"]
_TEXT_FRAGMENT = "#:~:text=top%20picks"
AUTH_WALL_TEXT = "Log in or sign up to get smarter responses, upload files and images, and more."
NOT_READY_TEXT = "Loading..."
RECORD_ERROR_CODE = "dead_page"

_RECORD_FAULTS = frozenset({"auth_wall", "not_ready", "record_error"})
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SNAPSHOT_FAULTS = frozenset({"snapshot_failed"})
_MAX_INPUTS = 1000  # the emulator's own cap, not BrightData's
# Oldest snapshots are forgotten first, so a long-running emulator's memory stays bounded.
_MAX_SNAPSHOTS = 10_000
_MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    dataset_id: str
    created: float  # time.monotonic() at trigger
    ready_after: float
    records: list[Record]
    error_message: str | None  # set when the snapshot is to fail

    def status(self) -> str:
        if time.monotonic() - self.created < self.ready_after:
            return "running"
        return "ready" if self.error_message is None else "failed"


def _bad_request(message: str) -> Response:
    return error_response("brightdata", 400, "validation_error", message)


def _input_error(body: Any, scraper: Scraper) -> str | None:
    if not isinstance(body, list) or not 1 <= len(body) <= _MAX_INPUTS:
        return f"Body must be a JSON array of 1 to {_MAX_INPUTS} inputs"
    for index, item in enumerate(body):
        if not isinstance(item, dict):
            return f"Input {index} is not an object"
        for name in ("url", "prompt"):
            if not isinstance(item.get(name), str) or not item[name].strip():
                return f"Input {index}: '{name}' is required"
        country = item.get("country", "")
        if not isinstance(country, str):
            return f"Input {index}: 'country' must be a string"
        if country.upper() in scraper.unserved_countries:
            return f"Input {index}: country '{country}' is not supported by this dataset"
    return None


async def trigger(state: EmulatorState, request: Request, body: Any) -> Response:
    dataset_id = request.query_params.get("dataset_id", "")
    if not dataset_id.startswith("gd_"):
        return _bad_request(f"Unknown dataset_id '{dataset_id}'")
    include_errors = request.query_params.get("include_errors", "false")
    if include_errors not in ("true", "false"):
        return _bad_request("include_errors must be true or false")
    scraper = _BY_DATASET.get(dataset_id, _DEFAULT_SCRAPER)
    problem = _input_error(body, scraper)
    if problem is not None:
        return _bad_request(problem)
    failed = state.take_fault("brightdata", _SNAPSHOT_FAULTS)
    records = [await _record(state, scraper, item) for item in body]
    if include_errors == "false":
        records = [record for record in records if "error" not in record]
    snapshot_id = f"s_{uuid.uuid4().hex[:18]}"
    store = state.snapshots
    store[snapshot_id] = Snapshot(
        dataset_id=dataset_id,
        created=time.monotonic(),
        ready_after=state.config.snapshot_ready_after_seconds,
        records=records,
        error_message=None if failed is None else "Collection failed: the crawler was blocked",
    )
    while len(store) > _MAX_SNAPSHOTS:
        del store[next(iter(store))]
    return JSONResponse({"snapshot_id": snapshot_id})


async def _record(state: EmulatorState, scraper: Scraper, item: dict[str, Any]) -> Record:
    country = str(item.get("country") or "US").upper()
    prompt: str = item["prompt"]
    common: Record = {
        "input": dict(item),
        "url": item["url"],
        "prompt": prompt,
        "country": country,
        "timestamp": datetime.now(UTC).isoformat(),
    }
    fault = state.take_fault("brightdata", _RECORD_FAULTS)
    if fault is not None and fault.kind == "record_error":
        return {**common, "error": "Page did not load: dead page", "error_code": RECORD_ERROR_CODE}
    if fault is not None:
        text = AUTH_WALL_TEXT if fault.kind == "auth_wall" else NOT_READY_TEXT
        return {**common, **_answer_fields(text, (), scraper)}
    answer = await compose_answer(state.config, prompt, country, scraper.engine_id)
    return {**common, **_answer_fields(answer.text, answer.citations, scraper)}


def _answer_fields(
    markdown: str, citations: tuple[tuple[str, str | None], ...], scraper: Scraper
) -> Record:
    engine_id = scraper.engine_id
    if engine_id in ("brightdata_chatgpt", "brightdata_perplexity"):
        return _chat_fields(markdown, citations, perplexity=engine_id == "brightdata_perplexity")
    cited: list[Record] = []
    for position, (url, title) in enumerate(citations, 1):
        link = (
            url + _TEXT_FRAGMENT
            if engine_id in ("brightdata_gemini", "brightdata_ai_mode")
            else url
        )
        citation: Record = {"title": title, "url": link, "domain": urlsplit(url).hostname}
        if engine_id == "brightdata_ai_mode" and position == 1:
            # As some AI Mode records do: the page's URL in `domain`, no `url`.
            citation = {"title": title, "domain": link}
        cited.append(citation)
    plain = _MARKDOWN_LINK.sub(r"\1", markdown).replace("**", "")
    fields: Record = {
        "answer_text_markdown": markdown,
        "links_attached": [
            {"text": match[1], "url": match[2]} for match in _MARKDOWN_LINK.finditer(markdown)
        ],
    }
    # Some AI Mode examples call the plain answer `answer`.
    fields["answer" if engine_id == "brightdata_ai_mode" else "answer_text"] = plain
    # Copilot lists its sources as `sources`.
    fields["sources" if engine_id == "brightdata_copilot" else "citations"] = cited
    if scraper.searched_field is not None:
        fields[scraper.searched_field] = bool(cited)
    return fields


def _chat_fields(
    markdown: str, citations: tuple[tuple[str, str | None], ...], *, perplexity: bool
) -> Record:
    cited: list[Record] = []
    for position, (url, title) in enumerate(citations, 1):
        citation: Record = {"title": title, "url": url, "position": position}
        if perplexity:
            citation["domain"] = urlsplit(url).hostname
        cited.append(citation)
    links = [
        {"text": match[1], "url": match[2], "position": position}
        for position, match in enumerate(_MARKDOWN_LINK.finditer(markdown), 1)
    ]
    fields: Record = {
        "answer_text": _MARKDOWN_LINK.sub(r"\1", markdown).replace("**", ""),
        "answer_text_markdown": markdown,
        # ChatGPT reports no citations at all (null) when it did not search the web.
        "citations": cited or (None if not perplexity else []),
        "links_attached": links,
        "web_search_triggered": bool(cited),
    }
    if not perplexity:
        fields["model"] = "gpt-4o"
    return fields


def _known_snapshot(state: EmulatorState, request: Request) -> Snapshot | Response:
    snapshot = state.snapshots.get(request.path_params["snapshot_id"])
    if snapshot is None:
        return error_response("brightdata", 404, "not_found", "Snapshot not found")
    return snapshot


async def progress(state: EmulatorState, request: Request, _body: Any) -> Response:
    snapshot = _known_snapshot(state, request)
    if isinstance(snapshot, Response):
        return snapshot
    status = snapshot.status()
    document: dict[str, Any] = {
        "snapshot_id": request.path_params["snapshot_id"],
        "dataset_id": snapshot.dataset_id,
        "status": status,
    }
    if status == "failed":
        document["error_message"] = snapshot.error_message
    return JSONResponse(document)


async def download(state: EmulatorState, request: Request, _body: Any) -> Response:
    snapshot = _known_snapshot(state, request)
    if isinstance(snapshot, Response):
        return snapshot
    if request.query_params.get("format", "json") != "json":
        return _bad_request("The emulator serves snapshots as format=json only")
    status = snapshot.status()
    if status == "running":
        building = {"status": "building", "message": "Snapshot is building, try again in 10s"}
        return JSONResponse(building, status_code=202)
    if status == "failed":
        return _bad_request(f"Snapshot failed: {snapshot.error_message}")
    if not snapshot.records:
        return _bad_request("Snapshot is empty")
    return _ScrapedJSON(snapshot.records)


class _ScrapedJSON(JSONResponse):
    """Records as a browser's JSON.stringify writes them: UTF-8, with a lone surrogate (scraped
    text cut inside an emoji) escaped as `\\udXXX`, which UTF-8 alone cannot carry."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode()


ROUTES: list[ProviderRoute] = [
    ProviderRoute("/datasets/v3/trigger", "brightdata", trigger),
    ProviderRoute(
        "/datasets/v3/progress/{snapshot_id}",
        "brightdata",
        progress,
        methods=("GET",),
        limited=False,
    ),
    ProviderRoute(
        "/datasets/v3/snapshot/{snapshot_id}",
        "brightdata",
        download,
        methods=("GET",),
        limited=False,
    ),
]
