"""One provider call over httpx, its failures classified the same way for every engine."""

from __future__ import annotations

from typing import Any

import httpx

from app.engines.base import EngineError
from app.engines.failures import connection_error, error_from_response, timeout_error


async def send(
    client: httpx.AsyncClient,
    provider: str,
    client_timeout: float,  # the client's own: named in a timeout's error
    method: str,
    path: str,
    **options: Any,
) -> httpx.Response:
    """The response when it succeeded (2xx); otherwise the EngineError that says whether to
    retry. `options` are httpx's (`params`, `json`)."""
    try:
        response = await client.request(method, path, **options)
    except httpx.TimeoutException:
        raise timeout_error(provider, client_timeout) from None
    except httpx.TransportError as exc:
        raise connection_error(provider, exc) from None
    if not response.is_success:
        raise error_from_response(
            provider, response.status_code, response.headers, response.content
        )
    return response


def unreadable(provider: str, problem: str) -> EngineError:
    # Each retry is billed, and a reply we cannot read will not read better the second time.
    return EngineError(f"{provider}: unreadable reply: {problem}", retryable=False)


def json_body(provider: str, response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise unreadable(provider, f"{response.request.url.path} did not answer JSON") from None
