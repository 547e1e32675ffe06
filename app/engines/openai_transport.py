"""The openai SDK's HTTP client with our rate limit applied as each request leaves.

Taking the slot around the SDK call is too early: the first calls of a client first await
platform detection in a thread, which on a busy host takes 0.1–0.5 s, so requests that took
their places 100 ms apart left together and the provider answered 429. In the transport the
slot is taken when the request is ready to go.
"""

from __future__ import annotations

import httpx2
import openai

from app.engines.ratelimit import RateLimit, RateLimiter

# The SDK's own connection limits (openai._constants), which a custom transport must restate.
_CONNECTION_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)


class RateLimitedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, limiter: RateLimiter, name: str, limit: RateLimit) -> None:
        self._inner = httpx2.AsyncHTTPTransport(limits=_CONNECTION_LIMITS)
        self._limiter = limiter
        self._name = name
        self._limit = limit

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        async with self._limiter.slot(self._name, self._limit):
            return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def rate_limited_http_client(
    limiter: RateLimiter, name: str, limit: RateLimit
) -> httpx2.AsyncClient:
    client: httpx2.AsyncClient = openai.DefaultAsyncHttpx2Client(
        transport=RateLimitedTransport(limiter, name, limit)
    )
    return client
