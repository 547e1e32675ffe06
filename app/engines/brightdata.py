"""BrightData Web Scraper API v3: AI assistants (ChatGPT, Perplexity, Gemini, Copilot, Google
AI Mode, Grok) as a browser sees them, each a row of `app.engines.scrapers.SCRAPERS`.

A trigger starts a scraping job (a snapshot) at BrightData that runs for seconds to minutes,
and only a few may run at once, so concurrent asks are batched: collected for
`brightdata_batch_window_seconds` or until `brightdata_batch_size` have arrived, sent as one
trigger, its progress polled until ready, its snapshot downloaded and each record handed to the
ask whose input it echoes. One rate-limiter slot covers a trigger from start to download, so the
concurrency cap bounds running snapshots.

A trigger, progress or download failure fails every ask of its batch and no other batch. A
record with `error` / `error_code` fails its own ask only, and retryably: BrightData bills no
error record and does not document which codes are permanent, so asking again costs nothing
but time. Log-in walls and placeholders are returned as answers, for the answer guard to reject.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit, urlunsplit

import httpx

from app.engines.base import EngineAnswer, EngineCitation, EngineError, EngineRequest
from app.engines.failures import timeout_error
from app.engines.http import json_body, send, tls_context, unreadable
from app.engines.ratelimit import RateLimiter, call_limit
from app.engines.scrapers import SCRAPERS, Scraper
from app.settings import Settings

logger = logging.getLogger(__name__)

BrightDataEngineId = str  # a key of SCRAPERS
_TITLE_FIELDS = ("title", "name", "text")
_ANSWER_LINKS = "links_attached"  # links written in the answer, not sources it searched
# Gemini and AI Mode link a page's passage with a text fragment; the page is what is cited.
_TEXT_FRAGMENT = ":~:"

_InputKey = tuple[str, str]  # (prompt, country)


@dataclass(frozen=True, slots=True)
class _Input:
    url: str
    prompt: str
    country: str  # "" for a scraper that takes none
    extra: Mapping[str, object]

    @property
    def key(self) -> _InputKey:
        return self.prompt, self.country

    def as_json(self) -> dict[str, object]:
        item: dict[str, object] = {"url": self.url, "prompt": self.prompt}
        if self.country:
            item["country"] = self.country
        return {**item, **self.extra}


@dataclass(frozen=True, slots=True)
class _Ask:
    input: _Input
    started: float  # time.perf_counter() when `ask` was called
    answer: asyncio.Future[EngineAnswer]


class BrightDataEngine:
    def __init__(
        self, engine_id: BrightDataEngineId, settings: Settings, limiter: RateLimiter
    ) -> None:
        if settings.brightdata_api_key is None:
            raise ValueError(f"the {engine_id} engine needs BRIGHTDATA_API_KEY")
        self.engine_id: str = engine_id
        self._scraper: Scraper = SCRAPERS[engine_id]
        self._dataset_id = self._scraper.dataset(settings)
        self._price = settings.brightdata_price_per_record
        self.batch_size = settings.brightdata_batch_size
        self._batch_window = settings.brightdata_batch_window_seconds
        self._poll_interval = settings.brightdata_poll_interval_seconds
        self._snapshot_timeout = settings.brightdata_snapshot_timeout_seconds
        self._timeout = settings.brightdata_timeout_seconds
        self._limiter = limiter
        self._limit = call_limit(
            max_concurrency=settings.brightdata_max_concurrency,
            requests_per_minute=settings.brightdata_requests_per_minute,
            burst=settings.rate_limit_burst,
            # A trigger's slot is held until its snapshot is downloaded.
            timeout_seconds=self._snapshot_timeout,
        )
        self._client = httpx.AsyncClient(
            verify=tls_context(),
            base_url=settings.brightdata_base_url,
            headers={"Authorization": f"Bearer {settings.brightdata_api_key.get_secret_value()}"},
            timeout=self._timeout,
        )
        self._waiting: list[_Ask] = []
        self._window: asyncio.TimerHandle | None = None
        self._batches: set[asyncio.Task[None]] = set()

    async def ask(self, request: EngineRequest) -> EngineAnswer:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        scraper = self._scraper
        country = request.location.upper() if scraper.takes_country else ""
        ask = _Ask(
            _Input(scraper.start_url, request.question, country, scraper.extra_inputs),
            started,
            loop.create_future(),
        )
        self._waiting.append(ask)
        if len(self._waiting) >= self.batch_size:
            self._flush()
        elif self._window is None:
            self._window = loop.call_later(self._batch_window, self._flush)
        # Cancelling this ask cancels its own future only; its batch goes on for the others.
        return await ask.answer

    async def aclose(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None
        for ask in self._waiting:
            _settle(ask, EngineError(f"{self.engine_id}: engine closed", retryable=True))
        self._waiting = []
        batches = list(self._batches)
        for batch in batches:
            batch.cancel()
        await asyncio.gather(*batches, return_exceptions=True)
        await self._client.aclose()

    def _flush(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None
        # An ask cancelled while it waited for the window is not worth paying for.
        batch = [ask for ask in self._waiting if not ask.answer.done()]
        self._waiting = []
        if batch:
            task = asyncio.create_task(self._run(batch), name=f"{self.engine_id} batch")
            self._batches.add(task)
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._batches.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("%s: batch crashed", self.engine_id, exc_info=exc)

    async def _run(self, batch: list[_Ask]) -> None:
        try:
            snapshot_id, records = await self._collect([ask.input for ask in batch])
            self._deliver(batch, snapshot_id, records)
        except EngineError as exc:
            for ask in batch:
                _settle(ask, _own_copy(exc))
        finally:
            # Cancelled by aclose(), or broken by a bug: no ask may be left waiting for ever.
            for ask in batch:
                _settle(ask, EngineError(f"{self.engine_id}: batch abandoned", retryable=True))

    async def _collect(self, inputs: list[_Input]) -> tuple[str, list[Any]]:
        async with self._limiter.slot(self.engine_id, self._limit):
            snapshot_id = await self._trigger(inputs)
            try:
                async with asyncio.timeout(self._snapshot_timeout):
                    return snapshot_id, await self._await_records(snapshot_id)
            except TimeoutError:
                raise timeout_error(self.engine_id, self._snapshot_timeout) from None

    async def _trigger(self, inputs: list[_Input]) -> str:
        response = await self._send(
            "POST",
            "/datasets/v3/trigger",
            params={"dataset_id": self._dataset_id, "include_errors": "true"},
            json=[item.as_json() for item in inputs],
        )
        document = self._json(response)
        snapshot_id = document.get("snapshot_id") if isinstance(document, dict) else None
        if not isinstance(snapshot_id, str) or not snapshot_id:
            raise self._malformed("the trigger reply has no snapshot_id")
        return snapshot_id

    async def _await_records(self, snapshot_id: str) -> list[Any]:
        while True:
            records = await self._records_if_ready(snapshot_id)
            if records is not None:
                return records
            await asyncio.sleep(self._poll_interval)

    async def _records_if_ready(self, snapshot_id: str) -> list[Any] | None:
        progress = await self._poll(f"/datasets/v3/progress/{snapshot_id}")
        if progress is None:
            return None
        document = self._json(progress)
        status = document.get("status") if isinstance(document, dict) else None
        if status == "failed":
            reason = document.get("error_message") or "no reason given"
            raise EngineError(
                f"{self.engine_id}: snapshot {snapshot_id} failed: {reason}", retryable=True
            )
        if status != "ready":
            return None
        snapshot = await self._poll(f"/datasets/v3/snapshot/{snapshot_id}", {"format": "json"})
        # 202: ready, but the snapshot is still being written out.
        if snapshot is None or snapshot.status_code == httpx.codes.ACCEPTED:
            return None
        records = self._json(snapshot)
        if not isinstance(records, list):
            raise self._malformed(f"snapshot {snapshot_id} is not a list of records")
        return records

    async def _poll(self, path: str, params: dict[str, str] | None = None) -> httpx.Response | None:
        """A GET whose passing failure only means "look again later": polls are free, while
        giving up would leave the job running and a new trigger would be billed again."""
        try:
            return await self._send("GET", path, params=params)
        except EngineError as exc:
            if not exc.retryable:
                raise
            logger.warning("%s: poll failed, polling on: %s", self.engine_id, exc.reason)
            return None

    async def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        return await send(self._client, self.engine_id, self._timeout, method, path, **options)

    def _json(self, response: httpx.Response) -> Any:
        return json_body(self.engine_id, response)

    def _malformed(self, problem: str) -> EngineError:
        return unreadable(self.engine_id, problem)

    def _deliver(self, batch: list[_Ask], snapshot_id: str, records: list[Any]) -> None:
        by_input = _records_by_input([ask.input for ask in batch], records)
        for ask in batch:
            queued = by_input.get(ask.input.key)
            if not queued:
                missing = f"{self.engine_id}: snapshot {snapshot_id} has no record for this prompt"
                _settle(ask, EngineError(missing, retryable=True))
                continue
            try:
                answer = self._answer(queued.popleft(), snapshot_id, ask.started)
            except EngineError as exc:
                _settle(ask, exc)
                continue
            _settle(ask, answer)

    def _answer(self, record: Any, snapshot_id: str, started: float) -> EngineAnswer:
        if not isinstance(record, dict):
            raise self._malformed(f"snapshot {snapshot_id} holds a record that is not an object")
        if record.get("error") or record.get("error_code"):
            code = record.get("error_code") or "error"
            detail = record.get("error") or "no detail"
            raise EngineError(f"{self.engine_id}: record failed ({code}): {detail}", retryable=True)
        scraper = self._scraper
        text = next(
            (record[name] for name in scraper.answer_fields if _is_text(record.get(name))), ""
        )
        citations = _citations(record, scraper.citation_fields)
        model = record.get("model")
        queries = record.get("search_queries")
        return EngineAnswer(
            text=text,
            citations=citations,
            model=model if _is_text(model) else self.engine_id,
            input_tokens=0,
            output_tokens=0,
            cost=self._price,
            latency_ms=round((time.perf_counter() - started) * 1000),
            simulated=False,
            surface="scraped_ui",
            searched=_searched(scraper, record),
            search_queries=tuple(q for q in queries if _is_text(q))
            if isinstance(queries, list)
            else (),
            raw={
                "snapshot_id": snapshot_id,
                "dataset_id": self._dataset_id,
                "web_search_triggered": record.get("web_search_triggered"),
                "timestamp": record.get("timestamp"),
                "country_applied": scraper.takes_country,
            },
        )


def _own_copy(exc: EngineError) -> EngineError:
    # Each ask raises an instance of its own, so their tracebacks do not pile up on one.
    return EngineError(exc.reason, retryable=exc.retryable, retry_after=exc.retry_after)


def _settle(ask: _Ask, outcome: EngineAnswer | EngineError) -> None:
    if ask.answer.done():  # answered already, or its asker gave up
        return
    if isinstance(outcome, EngineError):
        ask.answer.set_exception(outcome)
    else:
        ask.answer.set_result(outcome)


def _records_by_input(inputs: list[_Input], records: list[Any]) -> dict[_InputKey, deque[Any]]:
    """Records queued by the input they answer; the same prompt may be asked twice in a batch."""
    by_input: defaultdict[_InputKey, deque[Any]] = defaultdict(deque)
    for position, record in enumerate(records):
        key = _record_key(record)
        if key is None and position < len(inputs):
            # A record that does not echo its input stands where its input stood.
            key = inputs[position].key
        if key is not None:
            by_input[key].append(record)
    return by_input


def _record_key(record: Any) -> _InputKey | None:
    if not isinstance(record, dict):
        return None
    echoed = record.get("input")
    source = echoed if isinstance(echoed, dict) else record
    prompt, country = source.get("prompt"), source.get("country")
    if not isinstance(prompt, str):
        return None
    return prompt, (country.upper() if isinstance(country, str) else "")


def _searched(scraper: Scraper, record: dict[str, Any]) -> bool | None:
    """The record's own flag; else what the assistant always does; else its sources: pages
    listed as sources were found by a search (links in the answer text were not), and a record
    without any does not say."""
    if scraper.searched_field is not None:
        flag = record.get(scraper.searched_field)
        if isinstance(flag, bool):
            return flag
    if scraper.always_searches:
        return True
    sources = [f for f in scraper.citation_fields if f != _ANSWER_LINKS]
    return True if any(_citations(record, (f,)) for f in sources) else None


def _citations(record: dict[str, Any], fields: tuple[str, ...]) -> tuple[EngineCitation, ...]:
    for field in fields:
        listed = record.get(field)
        if not isinstance(listed, list):
            continue
        linked = [
            (url, item)
            for item in listed
            if isinstance(item, dict) and (url := _item_url(item)) is not None
        ]
        if linked:
            linked.sort(key=lambda pair: _position(pair[1]))
            found: dict[str, EngineCitation] = {}
            for url, item in linked:
                found.setdefault(url, EngineCitation(url, _title(item)))
            return tuple(found.values())
    return ()


def _item_url(item: dict[str, Any]) -> str | None:
    url = item.get("url")
    if not _is_text(url):
        # AI Mode sometimes puts the page's full URL in `domain` and leaves `url` out.
        domain = item.get("domain")
        url = domain if _is_text(domain) and "://" in domain else None
    return None if url is None else without_text_fragment(url.strip())


def without_text_fragment(url: str) -> str:
    parts = urlsplit(url)
    if _TEXT_FRAGMENT not in parts.fragment:
        return url
    kept = parts.fragment.split(_TEXT_FRAGMENT, 1)[0]
    return urlunsplit(parts._replace(fragment=kept))


def _position(item: dict[str, Any]) -> int:
    position = item.get("position")
    # Unnumbered items keep their listed order (the sort is stable) after the numbered ones.
    return position if isinstance(position, int) else sys.maxsize


def _title(item: dict[str, Any]) -> str | None:
    return next((item[name] for name in _TITLE_FIELDS if _is_text(item.get(name))), None)


def _is_text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())
