"""Grounding redirect links resolved to the page they point at: bounded hops, a timeout, and
an in-process cache, since a redirect link expires while the page it named does not."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from urllib.parse import urljoin, urlsplit

import httpx

from app.engines.http import tls_context

logger = logging.getLogger(__name__)

REDIRECT_PATH = "/grounding-api-redirect/"


def is_grounding_redirect(url: str) -> bool:
    return REDIRECT_PATH in urlsplit(url).path


class RedirectResolver:
    def __init__(self, *, timeout: float, max_hops: int, cache_size: int) -> None:
        # A client of its own: the provider's key must never travel to a redirect's host.
        self._client = httpx.AsyncClient(
            verify=tls_context(), timeout=timeout, follow_redirects=False
        )
        self._max_hops = max_hops
        self._cache_size = cache_size
        self._cache: OrderedDict[str, str] = OrderedDict()

    async def resolve_all(self, urls: list[str]) -> list[str | None]:
        return list(await asyncio.gather(*(self.resolve(url) for url in urls)))

    async def resolve(self, url: str) -> str | None:
        """The page `url` redirects to; `url` itself when it is no redirect link; None when the
        link does not lead out of the redirects within the hops (expired, down, a loop)."""
        if not is_grounding_redirect(url):
            return url
        cached = self._cache.get(url)
        if cached is not None:
            self._cache.move_to_end(url)
            return cached
        current = url
        for _ in range(self._max_hops):
            location = await self._location(current)
            if location is None:
                return None
            current = urljoin(current, location)
            if not is_grounding_redirect(current):
                self._remember(url, current)
                return current
        return None

    async def _location(self, url: str) -> str | None:
        # Only the redirect's Location is read: the page itself is never downloaded.
        try:
            async with self._client.stream("GET", url) as response:
                return response.headers.get("location") if response.is_redirect else None
        except httpx.HTTPError as exc:
            logger.info("grounding redirect not resolved", extra={"error": type(exc).__name__})
            return None

    def _remember(self, url: str, target: str) -> None:
        if self._cache_size == 0:
            return
        self._cache[url] = target
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def aclose(self) -> None:
        await self._client.aclose()
