"""The API's edge, as ASGI middleware around the routes.

Outermost, `EdgeMiddleware`: a request id (X-Request-ID honoured when sane, else generated, and
returned), trusted hosts, the header size limit, security headers on every response, the
access log (one JSON line per request) and the HTTP metrics. Then CORS, when configured. Then
`GuardMiddleware`: authentication of every protected route before anything reads the body
(401), the stricter per-address limit on failed authentication, the per-principal rate limit
(anonymous requests: per address), and the body size limit (413). Route handlers only check
scopes (`app.api.deps`), from the principal this layer found.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import routing
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import database_unavailable_response, domain_error_response, error_response
from app.api.throttle import Counter, Window
from app.apikeys.scopes import required_scope
from app.auth import Principal, authenticate, bearer_token
from app.context import AppContext
from app.db.errors import database_unavailable
from app.errors import ForbiddenError, UnauthorizedError, describe_error
from app.metrics import HTTP_LATENCY, HTTP_REQUESTS, RATE_LIMIT_REFUSALS
from app.settings import Settings

logger = logging.getLogger(__name__)
access_logger = logging.getLogger("senso.access")

# Routes anyone may call; /metrics joins them when METRICS_REQUIRE_TOKEN is false. A report
# page's token is its own credential (app.reports), checked by its route.
PUBLIC_ROUTES = frozenset(
    {
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/docs/assets",
        "/r/{token}",
    }
)
METRICS_ROUTE = "/metrics"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CACHEABLE_PREFIX = "/docs/assets/"


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.setdefault("state", {})
    return state


def _context(scope: Scope) -> AppContext:
    context: AppContext = scope["app"].state.context
    return context


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._security_headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if settings.hsts_max_age_seconds:
            value = f"max-age={settings.hsts_max_age_seconds}; includeSubDomains"
            self._security_headers.append((b"strict-transport-security", value.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        # A UUID in its canonical form: log scrubbing takes 32 bare hex digits for a credential,
        # and a request id it redacts can no longer be found in the access log.
        request_id = given if _REQUEST_ID.match(given) else str(uuid.uuid4())
        state = _state(scope)
        state["request_id"] = request_id
        status = 500
        path: str = scope["path"]

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [(b"x-request-id", request_id.encode()), *self._security_headers]
                if not path.startswith(_CACHEABLE_PREFIX):
                    extra.append((b"cache-control", b"no-store"))
                for name, value in state.get("rate_limit_headers", {}).items():
                    extra.append((name.lower().encode(), value.encode()))
                existing = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((n, v) for n, v in extra if n not in existing),
                ]
            await send(message)

        try:
            refusal = self._refusal(scope, headers)
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            self._record(scope, status, time.perf_counter() - started)

    def _refusal(self, scope: Scope, headers: Headers) -> JSONResponse | None:
        size = sum(len(name) + len(value) for name, value in scope["headers"])
        if size > self.settings.max_header_bytes:
            return error_response(
                431,
                "headers_too_large",
                f"the request's headers are {size} bytes; at most "
                f"{self.settings.max_header_bytes} are accepted",
            )
        if not _trusted(headers.get("host", ""), self.settings.trusted_host_patterns):
            # The host is not repeated back: nothing is built from a forged Host.
            return error_response(400, "invalid_host", "this service does not answer that Host")
        return None

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        state = _state(scope)
        template = state.get("route") or "unmatched"
        method = scope["method"] if scope["method"] in _METHODS else "other"
        HTTP_REQUESTS.labels(method, template, str(status)).inc()
        HTTP_LATENCY.labels(method, template).observe(seconds)
        principal: Principal | None = state.get("principal")
        client = scope.get("client")
        access_logger.info(
            "request",
            extra={
                "principal": principal.actor if principal is not None else "anonymous",
                "api_key_id": str(principal.key_id) if principal and principal.key_id else None,
                "method": method,
                "route": template,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                "request_id": state["request_id"],
                "client": client[0] if client else None,
            },
        )


def _trusted(host_header: str, trusted: Iterable[str]) -> bool:
    host = host_header.rsplit(":", 1)[0] if not host_header.endswith("]") else host_header
    host = host.lower()
    for pattern in trusted:
        pattern = pattern.lower()
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class GuardMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, counter_of: Callable[[], Counter]) -> None:
        self.app = app
        self.settings = settings
        # The counter is made with the app's context, when the app starts.
        self._counter_of = counter_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = _state(scope)
        route = self._route_of(scope)
        state["route"] = route
        counter: Counter = self._counter_of()
        client = scope.get("client")
        address = client[0] if client else "unknown"
        try:
            if route is None or route in PUBLIC_ROUTES or self._metrics_public(route):
                refusal = await self._anonymous(state, counter, address)
            else:
                refusal = await self._authenticate(scope, state, counter, address, route)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            logger.warning("database unavailable", extra={"error": describe_error(exc)})
            refusal = database_unavailable_response()
        if refusal is None:
            refusal = self._body_refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, self._limited(receive, state), self._replacing(send, state))

    def _metrics_public(self, route: str) -> bool:
        return route == METRICS_ROUTE and not self.settings.metrics_require_token

    @staticmethod
    def _route_of(scope: Scope) -> str | None:
        """The template of the route the request is for (a wrong method still names it)."""
        partial: str | None = None
        for route in routing.iter_route_contexts(scope["app"].routes):
            regex = getattr(route, "path_regex", None)
            if regex is None or not regex.match(scope["path"]):
                continue
            methods = route.methods
            if methods is None or scope["method"] in methods:
                return str(route.path)
            partial = partial or str(route.path)
        return partial

    async def _authenticate(
        self, scope: Scope, state: dict[str, Any], counter: Counter, address: str, route: str
    ) -> JSONResponse | None:
        settings = self.settings
        authorization = Headers(scope=scope).get("authorization")
        presented = bearer_token(authorization) is not None
        failures_key = f"auth-failures:{address}"
        if presented:
            failures = await counter.peek(
                failures_key, settings.auth_failure_limit, settings.auth_failure_window_seconds
            )
            if failures.count >= settings.auth_failure_limit:
                return self._refuse(state, failures, "auth_failures")
        # Without a token the request is anonymous: counted per address, then the 401 below.
        elif (refusal := await self._anonymous(state, counter, address)) is not None:
            return refusal
        context = _context(scope)
        try:
            async with context.sessions() as session:
                principal = await authenticate(
                    session, authorization, settings.api_token, context.clock.now()
                )
        except UnauthorizedError as exc:
            if presented:
                failures = await counter.hit(
                    failures_key, settings.auth_failure_limit, settings.auth_failure_window_seconds
                )
                state["rate_limit_headers"] = failures.headers()
            return domain_error_response(exc)
        state["principal"] = principal
        if not (principal.is_admin and settings.rate_limit_exempt_operator):
            window = await counter.hit(
                "operator" if principal.is_admin else f"partner:{principal.partner_id}",
                settings.rate_limit_requests,
                settings.rate_limit_window_seconds,
            )
            if (refusal := self._over(state, window, "principal")) is not None:
                return refusal
        try:
            principal.require_scope(required_scope(scope["method"], route))
        except ForbiddenError as exc:
            return domain_error_response(exc)
        return None

    async def _anonymous(
        self, state: dict[str, Any], counter: Counter, address: str
    ) -> JSONResponse | None:
        window = await counter.hit(
            f"anonymous:{address}",
            self.settings.rate_limit_anonymous_requests,
            self.settings.rate_limit_window_seconds,
        )
        return self._over(state, window, "anonymous")

    def _over(self, state: dict[str, Any], window: Window, limit: str) -> JSONResponse | None:
        state["rate_limit_headers"] = window.headers()
        return self._refuse(state, window, limit) if window.exceeded else None

    @staticmethod
    def _refuse(state: dict[str, Any], window: Window, limit: str) -> JSONResponse:
        RATE_LIMIT_REFUSALS.labels(limit).inc()
        retry_after = max(1, window.reset_seconds)
        state["rate_limit_headers"] = {**window.headers(), "X-RateLimit-Remaining": "0"}
        message = (
            "too many failed authentications from this address"
            if limit == "auth_failures"
            else "too many requests"
        )
        return error_response(
            429,
            "rate_limited",
            {"message": message, "limit": window.limit, "retry_after_seconds": retry_after},
            {"Retry-After": str(retry_after)},
        )

    def _body_refusal(self, scope: Scope) -> JSONResponse | None:
        length = Headers(scope=scope).get("content-length")
        if length is None:
            return None
        if not length.isdigit():
            return error_response(400, "invalid_content_length", "Content-Length is not a number")
        if int(length) > self.settings.max_body_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> JSONResponse:
        return error_response(
            413,
            "body_too_large",
            f"the request body is over the limit of {self.settings.max_body_bytes} bytes",
        )

    def _limited(self, receive: Receive, state: dict[str, Any]) -> Receive:
        """A body sent without Content-Length (chunked) is cut off at the limit too."""
        limit = self.settings.max_body_bytes
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    state["body_too_large"] = True
                    return {"type": "http.disconnect"}
            return message

        return limited

    def _replacing(self, send: Send, state: dict[str, Any]) -> Send:
        """Once the body was cut off, whatever the app answers becomes the 413."""
        replaced = False

        async def replacing(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return
            if message["type"] == "http.response.start" and state.get("body_too_large"):
                replaced = True
                response = self._too_large()
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status_code,
                        "headers": response.raw_headers,
                    }
                )
                await send({"type": "http.response.body", "body": response.body})
                return
            await send(message)

        return replacing
