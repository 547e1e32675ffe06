"""The openai SDK's clients as every caller here needs them: our rate limit in the transport,
the SDK's own retries off, and its failures turned into EngineErrors.

The slot is taken in the transport, not around the SDK call: the first calls of a client first
await platform detection in a thread, which on a busy host takes 0.1–0.5 s, so requests that
took their places 100 ms apart left together and the provider answered 429. In the transport
the slot is taken when the request is ready to go. With max_retries=0 the caller decides
whether and when to ask again, from the EngineError a failure becomes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import httpx2
import openai

from app.engines.failures import connection_error, error_from_response, timeout_error
from app.engines.ratelimit import RateLimit, RateLimiter
from app.settings import Settings

OpenAIProvider = Literal["openai", "azure_openai"]

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


def openai_client(
    settings: Settings,
    provider: OpenAIProvider,
    *,
    limiter: RateLimiter,
    limiter_name: str,
    limit: RateLimit,
    timeout: float,
    azure_deployment: str | None = None,
) -> openai.AsyncOpenAI:
    """OpenAI with OPENAI_API_KEY, or Azure OpenAI with its key and endpoint; on Azure without
    `azure_deployment`, the model named in each call is the deployment addressed."""
    http_client: httpx2.AsyncClient = openai.DefaultAsyncHttpx2Client(
        transport=RateLimitedTransport(limiter, limiter_name, limit)
    )
    common: dict[str, Any] = {"timeout": timeout, "max_retries": 0, "http_client": http_client}
    if provider == "openai":
        if settings.openai_api_key is None:
            raise ValueError("OPENAI_API_KEY is not set")
        return openai.AsyncOpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            **common,
        )
    if settings.azure_openai_api_key is None or not settings.azure_openai_endpoint:
        raise ValueError("AZURE_OPENAI_API_KEY and AZURE_OPENAI_ENDPOINT must be set")
    return openai.AsyncAzureOpenAI(
        api_key=settings.azure_openai_api_key.get_secret_value(),
        azure_endpoint=settings.azure_openai_endpoint,
        azure_deployment=azure_deployment,
        api_version=settings.azure_openai_api_version,
        **common,
    )


@contextmanager
def openai_failures(provider: str, timeout: float) -> Iterator[None]:
    """Around an SDK call: a failure becomes the EngineError that says whether to retry."""
    try:
        yield
    except openai.APITimeoutError:
        raise timeout_error(provider, timeout) from None
    except openai.APIConnectionError as exc:
        raise connection_error(provider, exc) from None
    except openai.APIStatusError as exc:
        response = exc.response
        raise error_from_response(
            provider, exc.status_code, response.headers, response.content
        ) from None
