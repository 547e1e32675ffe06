"""One provider call over httpx, its failures classified the same way for every engine."""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from app.engines.base import EngineError
from app.engines.failures import connection_error, error_from_response, timeout_error

# provider, status, headers, body → the EngineError of a failed reply
ErrorReader = Callable[[str, int, Mapping[str, str], bytes], EngineError]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every engine client of the process: each httpx client otherwise
    loads the CA bundle anew, a tenth of a second apiece on a busy host, at every start."""
    # httpx's own default (certifi's bundle, SSL_CERT_FILE honoured), made once.
    return httpx.create_ssl_context()


async def send(
    client: httpx.AsyncClient,
    provider: str,
    client_timeout: float,  # the client's own: named in a timeout's error
    method: str,
    path: str,
    *,
    errors: ErrorReader = error_from_response,
    **options: Any,
) -> httpx.Response:
    """The response when it succeeded (2xx); otherwise the EngineError that says whether to
    retry, as `errors` reads the provider's error body. `options` are httpx's (`params`,
    `json`)."""
    try:
        response = await client.request(method, path, **options)
    except httpx.TimeoutException:
        raise timeout_error(provider, client_timeout) from None
    except httpx.TransportError as exc:
        raise connection_error(provider, exc) from None
    if not response.is_success:
        raise errors(provider, response.status_code, response.headers, response.content)
    return response


def unreadable(provider: str, problem: str) -> EngineError:
    # Each retry is billed, and a reply we cannot read will not read better the second time.
    return EngineError(f"{provider}: unreadable reply: {problem}", retryable=False)


def json_body(provider: str, response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise unreadable(provider, f"{response.request.url.path} did not answer JSON") from None
