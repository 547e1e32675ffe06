"""The HTTP client of webhook deliveries: created once per process, closed on shutdown.

Each attempt resolves and checks the endpoint's host (`app.webhooks.urls`), then connects to
the checked address itself: the URL's host is replaced by that address, while the Host header
and, over TLS, the server name (SNI) and the certificate check keep the registered name.
Connections are not kept alive, so one is never reused for another name on the same address;
redirects are not followed and proxies from the environment are not used, since either would
send the request somewhere that was not checked.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import httpx

from app.errors import describe_error
from app.settings import Settings
from app.webhooks.urls import Resolver, Target, UnsafeUrlError, check_url, system_resolver

USER_AGENT = "senso-webhooks/1"


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        *,
        resolver: Resolver = system_resolver,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._timeout = settings.webhook_timeout_seconds
        self._allow_insecure = settings.webhook_allow_insecure_urls
        self._resolver = resolver
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self._timeout),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
            verify=verify,
            headers={"User-Agent": USER_AGENT},
        )

    async def check(self, url: str) -> Target:
        """Raises UnsafeUrlError naming why the URL may not be called (registration)."""
        try:
            async with asyncio.timeout(self._timeout):
                return await self._check(url)
        except TimeoutError:
            raise UnsafeUrlError(
                f"the URL's host did not resolve within {self._timeout:g} s"
            ) from None

    async def _check(self, url: str) -> Target:
        return await check_url(url, allow_insecure=self._allow_insecure, resolver=self._resolver)

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> AttemptResult:
        """One attempt, within WEBHOOK_TIMEOUT_SECONDS from resolving to the status line.

        Never raises for what the endpoint does: refused, unreachable or slow is an error.
        """
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                target = await self._check(url)
                status_code = await self._send(target, body, headers)
        except UnsafeUrlError as exc:
            error = f"refused: {exc}"
        except TimeoutError:
            error = f"timeout: no answer within {self._timeout:g} s"
        except (httpx.HTTPError, OSError) as exc:
            error = describe_error(exc)
        if status_code is not None and not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
        duration_ms = round((time.monotonic() - started) * 1000)
        return AttemptResult(status_code=status_code, error=error, duration_ms=duration_ms)

    async def _send(self, target: Target, body: bytes, headers: dict[str, str]) -> int:
        url = target.url
        request_headers = {**headers, "Content-Type": "application/json"}
        extensions: dict[str, str] = {}
        if url.host != str(target.address):
            request_headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = url.raw_host.decode("ascii")
            url = url.copy_with(host=str(target.address))
        # Only the status line is needed: the response body is never read.
        async with self._client.stream(
            "POST", url, content=body, headers=request_headers, extensions=extensions
        ) as response:
            return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()
