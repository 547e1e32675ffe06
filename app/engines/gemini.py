"""Gemini API: one `generateContent` call per ask, with the Google Search tool.

Search grounding in the Developer API takes no location, so the run's country is recorded but
not applied. The answer is the candidate's text parts; the citations are its grounding chunks,
whose links are expiring redirects resolved to the real page, or, when that fails, the
chunk's title (usually the bare domain) made a URL. The cost is the tokens (thinking billed as
output) plus the grounding fee: per executed search query on Gemini 3, per grounded prompt on
Gemini 2.5 (GEMINI_GROUNDING_FEE_BASIS).
"""

from __future__ import annotations

import re
import time
from decimal import Decimal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from app.engines.base import EngineAnswer, EngineCitation, EngineError, EngineRequest
from app.engines.costs import COST_QUANTUM, token_cost
from app.engines.failures import google_error
from app.engines.http import send, tls_context, unreadable
from app.engines.ratelimit import RateLimiter, call_limit
from app.engines.redirects import RedirectResolver
from app.settings import Settings

ENGINE_ID = "gemini"
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class _Part(_Model):
    text: str | None = None
    thought: bool = False  # a thought summary, not the answer


class _Content(_Model):
    parts: list[_Part] = []


class _Web(_Model):
    uri: str | None = None
    title: str | None = None


class _Chunk(_Model):
    web: _Web | None = None


class _Grounding(_Model):
    grounding_chunks: list[_Chunk] = []
    web_search_queries: list[str] = []


class _Candidate(_Model):
    content: _Content | None = None
    finish_reason: str | None = None
    grounding_metadata: _Grounding | None = None


class _Usage(_Model):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0
    total_token_count: int = 0


class _PromptFeedback(_Model):
    block_reason: str | None = None


class _Response(_Model):
    candidates: list[_Candidate] = []
    usage_metadata: _Usage = _Usage()
    model_version: str | None = None
    response_id: str | None = None
    prompt_feedback: _PromptFeedback | None = None


class GeminiEngine:
    engine_id = ENGINE_ID
    batch_size = 1

    def __init__(self, settings: Settings, limiter: RateLimiter) -> None:
        if settings.gemini_api_key is None:
            raise ValueError("the gemini engine needs GEMINI_API_KEY")
        self._settings = settings
        self._limiter = limiter
        self._timeout = settings.gemini_timeout_seconds
        self._limit = call_limit(
            max_concurrency=settings.gemini_max_concurrency,
            requests_per_minute=settings.gemini_requests_per_minute,
            burst=settings.rate_limit_burst,
            timeout_seconds=self._timeout,
        )
        self._client = httpx.AsyncClient(
            verify=tls_context(),
            base_url=settings.gemini_base_url,
            timeout=self._timeout,
            headers={"x-goog-api-key": settings.gemini_api_key.get_secret_value()},
        )
        self._redirects = RedirectResolver(
            timeout=settings.gemini_redirect_timeout_seconds,
            max_hops=settings.gemini_redirect_max_hops,
            cache_size=settings.gemini_redirect_cache_size,
        )

    async def ask(self, request: EngineRequest) -> EngineAnswer:
        started = time.monotonic()
        body = {
            "contents": [{"role": "user", "parts": [{"text": request.question}]}],
            "tools": [{"google_search": {}}],
        }
        path = f"/v1beta/models/{self._settings.gemini_model}:generateContent"
        async with self._limiter.slot(ENGINE_ID, self._limit):
            response = await send(
                self._client,
                ENGINE_ID,
                self._timeout,
                "POST",
                path,
                errors=google_error,
                json=body,
            )
        try:
            parsed = _Response.model_validate_json(response.content)
        except ValidationError as exc:
            where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "body"
            raise unreadable(ENGINE_ID, f"unexpected shape ({where})") from None
        # Resolving the redirects is not a Gemini call: it holds no slot of Gemini's limit.
        return await self._answer(parsed, started)

    async def _answer(self, response: _Response, started: float) -> EngineAnswer:
        if not response.candidates:
            blocked = response.prompt_feedback.block_reason if response.prompt_feedback else None
            # A blocked prompt is blocked again when asked again.
            raise EngineError(
                f"{ENGINE_ID}: no candidates (blockReason={blocked})", retryable=False
            )
        candidate = response.candidates[0]
        parts = candidate.content.parts if candidate.content else []
        text = "".join(part.text or "" for part in parts if not part.thought)
        if not text.strip():
            raise EngineError(
                f"{ENGINE_ID}: no answer text (finishReason={candidate.finish_reason})",
                retryable=False,
            )
        grounding = candidate.grounding_metadata or _Grounding()
        queries = tuple(q.strip() for q in grounding.web_search_queries if q.strip())
        citations, unresolved = await self._citations(grounding.grounding_chunks)
        searched = bool(queries or grounding.grounding_chunks)
        usage = response.usage_metadata
        input_tokens = usage.prompt_token_count + usage.tool_use_prompt_token_count
        output_tokens = usage.candidates_token_count + usage.thoughts_token_count
        model = response.model_version or self._settings.gemini_model
        return EngineAnswer(
            text=text,
            citations=citations,
            model=model,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost=self._cost(input_tokens, output_tokens, searched, len(queries)),
            latency_ms=round((time.monotonic() - started) * 1000),
            simulated=False,
            surface="api",
            searched=searched,
            search_queries=queries,
            raw={
                "response_id": response.response_id,
                "model": model,
                "finish_reason": candidate.finish_reason,
                "usage": usage.model_dump(),
                "grounding_chunks": len(grounding.grounding_chunks),
                "unresolved_redirects": unresolved,
                # Search grounding takes no location: the run's country was not sent.
                "location_applied": False,
            },
        )

    async def _citations(self, chunks: list[_Chunk]) -> tuple[tuple[EngineCitation, ...], int]:
        webs = [chunk.web for chunk in chunks if chunk.web is not None and chunk.web.uri]
        resolved = await self._redirects.resolve_all([web.uri or "" for web in webs])
        found: dict[str, EngineCitation] = {}
        unresolved = 0
        for web, url in zip(webs, resolved, strict=True):
            title = (web.title or "").strip() or None
            if url is None:
                unresolved += 1
                url = _domain_url(title)
                if url is None:
                    # Neither page nor domain is known: citing the redirect host would credit
                    # Google for every source.
                    continue
            found.setdefault(url, EngineCitation(url, title))
        return tuple(found.values()), unresolved

    def _cost(self, input_tokens: int, output_tokens: int, searched: bool, queries: int) -> Decimal:
        settings = self._settings
        tokens = token_cost(
            input_tokens,
            output_tokens,
            settings.gemini_input_price_per_mtok,
            settings.gemini_output_price_per_mtok,
        )
        if settings.gemini_grounding_fee_basis == "per_query":
            fee = queries * settings.gemini_grounding_fee
        else:
            fee = settings.gemini_grounding_fee if searched else Decimal(0)
        return (tokens + fee).quantize(COST_QUANTUM)

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._redirects.aclose()


def _domain_url(title: str | None) -> str | None:
    """A grounding chunk's title is usually the bare domain of its page."""
    host = (title or "").strip().lower().rstrip(".")
    return f"https://{host}/" if _DOMAIN.match(host) else None
