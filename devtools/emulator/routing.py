"""What every provider endpoint of the emulator does before its own handler runs.

In order: log the request, wait the configured latency, check the key, apply the key's rate
limit (429 + Retry-After), then any fault due. Each refusal is written the way that provider
writes it, so our clients are tested against the error shapes they will really see.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from devtools.emulator.config import Fault, Provider
from devtools.emulator.state import EmulatorState, LoggedRequest, retry_after_header

logger = logging.getLogger("senso.emulator")

Handler = Callable[[EmulatorState, Request, Any], Awaitable[Response]]

REQUEST_FAULTS = frozenset(
    {"server_error", "overloaded", "rate_limited", "quota_exhausted", "key_rejected", "stall"}
)
_PROVIDER_FAULTS: dict[str, frozenset[str]] = {"gemini": frozenset({"daily_quota"})}
_REDACTED_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "x-goog-api-key"})
# Logged for a held request whose client gave up on it (nginx's "client closed request"):
# never answered, so never billed.
CLIENT_WENT_AWAY = 499
_HOLD_POLL_SECONDS = 0.01


@dataclass(frozen=True, slots=True)
class ProviderRoute:
    path: str
    provider: Provider
    handler: Handler
    methods: tuple[str, ...] = ("POST",)
    # Only billable calls count against rate limits and take faults; BrightData's progress
    # and snapshot polls are free and unlimited.
    limited: bool = True
    # Gemini's grounding redirects are public links: no key is sent, none is asked for.
    authenticated: bool = True


def api_key(provider: Provider, request: Request) -> str | None:
    headers = request.headers
    if provider == "azure_openai":
        return headers.get("api-key")
    if provider == "anthropic":
        return headers.get("x-api-key")
    if provider == "gemini":
        return headers.get("x-goog-api-key")
    scheme, _, token = headers.get("authorization", "").partition(" ")
    expected = "basic" if provider == "dataforseo" else "bearer"
    if scheme.lower() != expected:
        return None
    return token.strip() or None


_GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"


def google_error(
    status: int, message: str, details: list[dict[str, Any]] | None = None
) -> Response:
    error = {
        "code": status,
        "message": message,
        "status": _GOOGLE_STATUSES.get(status, "UNKNOWN"),
        "details": details or [],
    }
    return JSONResponse({"error": error}, status_code=status)


def dataforseo_status(status_code: int, message: str, *, http_status: int = 200) -> Response:
    """DataForSEO reports most failures as HTTP 200 with the code in the body."""
    body = {
        "version": "0.1.20260101",
        "status_code": status_code,
        "status_message": message,
        "time": "0.01 sec.",
        "cost": 0,
        "tasks_count": 0,
        "tasks_error": 1,
        "tasks": [],
    }
    return JSONResponse(body, status_code=http_status)


def error_response(
    provider: Provider,
    status: int,
    kind: str,
    message: str,
    *,
    retry_after: float | None = None,
) -> Response:
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["retry-after"] = retry_after_header(retry_after)
        if provider in ("openai", "azure_openai"):
            headers["retry-after-ms"] = str(round(retry_after * 1000))
    if provider == "gemini":
        details = (
            [{"@type": RETRY_INFO, "retryDelay": f"{retry_after:g}s"}] if retry_after else None
        )
        # Google says when to come back in the body's RetryInfo only, never in a header.
        return google_error(status, message, details)
    if provider == "dataforseo":
        code = int(kind) if kind.isdigit() else (50000 if status >= 500 else status * 100)
        response = dataforseo_status(code, message, http_status=status)
        response.headers.update(headers)
        return response
    body: dict[str, Any]
    if provider in ("openai", "azure_openai", "perplexity"):
        body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    elif provider == "anthropic":
        body = {"type": "error", "error": {"type": kind, "message": message}}
    elif provider == "linkup":
        body = {"statusCode": status, "error": {"code": kind, "message": message, "details": []}}
    else:
        body = {"error": message, "error_code": kind}
    return JSONResponse(body, status_code=status, headers=headers)


def fault_response(provider: Provider, fault: Fault, key: str) -> Response:
    if fault.kind == "key_rejected":
        # OpenAI's own wording: the key's head and tail around a mask.
        masked = f"{key[:8]}{'*' * max(4, len(key) - 12)}{key[-4:]}"
        kind = "authentication_error" if provider == "anthropic" else "invalid_api_key"
        return error_response(
            provider,
            401,
            kind,
            f"Incorrect API key provided: {masked}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
        )
    if fault.kind == "rate_limited":
        return _rate_limited(provider, fault.retry_after_seconds)
    if fault.kind == "quota_exhausted":
        return _quota_exhausted(provider)
    if fault.kind == "overloaded":
        if provider == "gemini":
            return google_error(503, "The model is overloaded. Please try again later.")
        if provider == "anthropic":
            return error_response(provider, 529, "overloaded_error", "Overloaded")
        return error_response(provider, 503, "service_unavailable", "The service is overloaded")
    if provider == "gemini":
        return google_error(500, "An internal error has occurred.")
    kind = "api_error" if provider == "anthropic" else "server_error"
    return error_response(provider, 500, kind, "The server had an error processing your request")


def _rate_limited(provider: Provider, retry_after: float) -> Response:
    kinds: dict[Provider, tuple[str, str]] = {
        "openai": ("rate_limit_exceeded", "Rate limit reached for requests"),
        "azure_openai": ("429", "Requests to the deployment have exceeded the rate limit"),
        "anthropic": ("rate_limit_error", "Number of requests has exceeded your rate limit"),
        "brightdata": ("too_many_requests", "Too many running jobs"),
        "linkup": ("TOO_MANY_REQUESTS", "Too many requests"),
        "gemini": ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
        "perplexity": ("request_rate_limit_exceeded", "Request rate limit exceeded"),
        "dataforseo": ("40202", "Rate limit per minute exceeded."),
    }
    kind, message = kinds[provider]
    return error_response(provider, 429, kind, message, retry_after=retry_after)


def _quota_exhausted(provider: Provider) -> Response:
    if provider in ("openai", "azure_openai"):
        return error_response(
            provider,
            429,
            "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details.",
        )
    if provider == "anthropic":
        return error_response(
            provider,
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
        )
    if provider == "linkup":
        return error_response(
            provider, 429, "INSUFFICIENT_FUNDS_CREDITS", "You do not have enough credits"
        )
    if provider == "gemini":
        return gemini_quota_exhausted("GenerateRequestsPerMinutePerProjectPerModel", 0)
    if provider == "perplexity":
        return error_response(
            provider, 401, "insufficient_quota", "You exceeded your current quota: add credits"
        )
    if provider == "dataforseo":
        return dataforseo_status(40210, "Insufficient funds. Please top up your account balance.")
    return error_response(provider, 402, "insufficient_funds", "Insufficient funds")


def gemini_quota_exhausted(quota_id: str, retry_after: float) -> Response:
    """Google's 429 names the quota spent and, for a per-minute one, when to come back."""
    details: list[dict[str, Any]] = [
        {
            "@type": QUOTA_FAILURE,
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/generate_requests",
                    "quotaId": quota_id,
                    "quotaDimensions": {"location": "global", "model": "gemini"},
                }
            ],
        }
    ]
    if retry_after:
        details.append({"@type": RETRY_INFO, "retryDelay": f"{retry_after:g}s"})
    return google_error(429, "You exceeded your current quota.", details)


def provider_endpoint(state: EmulatorState, route: ProviderRoute) -> Route:
    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        entry = state.record(
            route.provider,
            request.method,
            request.url.path,
            dict(request.query_params),
            {key.lower(): value for key, value in request.headers.items()},
            body,
        )
        response = await _answer(state, route, request, body, raw_is_json=not isinstance(body, str))
        _finish(entry, response)
        return response

    return Route(route.path, endpoint, methods=list(route.methods))


async def _answer(
    state: EmulatorState, route: ProviderRoute, request: Request, body: Any, *, raw_is_json: bool
) -> Response:
    provider = route.provider
    await asyncio.sleep(state.latency_seconds())
    key = api_key(provider, request) if route.authenticated else "public"
    if not key:
        kind = "authentication_error" if provider == "anthropic" else "invalid_api_key"
        return error_response(provider, 401, kind, "Missing or invalid API key")
    if not raw_is_json:
        return error_response(provider, 400, "invalid_request_error", "Body is not valid JSON")
    if route.limited:
        wait = state.retry_after_for(provider, key)
        if wait is not None:
            return _rate_limited(provider, wait)
        fault = state.take_fault(
            provider, REQUEST_FAULTS | _PROVIDER_FAULTS.get(provider, frozenset())
        )
        if fault is not None:
            if fault.kind == "daily_quota":
                return gemini_quota_exhausted("GenerateRequestsPerDayPerProjectPerModel", 0)
            if fault.kind != "stall":
                return fault_response(provider, fault, key)
            await asyncio.sleep(fault.stall_seconds)
        if not await _held_until_released(state, request):
            return Response(status_code=CLIENT_WENT_AWAY)
    return await route.handler(state, request, body)


async def _held_until_released(state: EmulatorState, request: Request) -> bool:
    """False when the client went away while its request was held."""
    if not state.holding:
        return True
    state.hold_one(+1)
    try:
        while state.holding:
            if await request.is_disconnected():
                return False
            await asyncio.sleep(_HOLD_POLL_SECONDS)
        return True
    finally:
        state.hold_one(-1)


def _finish(entry: LoggedRequest, response: Response) -> None:
    entry.status = response.status_code
    headers = {k: ("<redacted>" if k in _REDACTED_HEADERS else v) for k, v in entry.headers.items()}
    logger.info(
        "%s %s %s -> %s",
        entry.provider,
        entry.method,
        entry.path,
        response.status_code,
        extra={"seq": entry.seq, "query": entry.query, "headers": headers},
    )
