"""Request counters for the API's rate limits, shared by every API process through Redis.

A window opens with a key's first request and lasts `window` seconds; up to `limit` requests
fit in it. In Redis one script counts and reads the window's remaining time on Redis's own
clock, so processes whose clocks disagree still share one window. Without Redis (REDIS_URL
unset) each process counts on its own, on the injected clock.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.clock import Clock

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Window:
    limit: int
    count: int
    reset_seconds: int  # until the window closes and the count starts again

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


class Counter(Protocol):
    async def hit(self, key: str, limit: int, window_seconds: int) -> Window:
        """Count one request."""

    async def peek(self, key: str, limit: int, window_seconds: int) -> Window:
        """The window as it stands, counting nothing."""


# KEYS: the counter. ARGV: window ms, increment (0 to peek). Returns {count, ms left}.
_HIT = """
local count
if tonumber(ARGV[2]) > 0 then
  count = redis.call('INCRBY', KEYS[1], ARGV[2])
else
  count = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 and count > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if ttl < 0 then ttl = tonumber(ARGV[1]) end
return {count, ttl}
"""


class RedisCounter:
    def __init__(self, redis: Redis, prefix: str, fallback: Counter) -> None:
        self._prefix = prefix
        self._script = redis.register_script(_HIT)
        self._fallback = fallback

    async def hit(self, key: str, limit: int, window_seconds: int) -> Window:
        return await self._count(key, limit, window_seconds, 1)

    async def peek(self, key: str, limit: int, window_seconds: int) -> Window:
        return await self._count(key, limit, window_seconds, 0)

    async def _count(self, key: str, limit: int, window_seconds: int, increment: int) -> Window:
        try:
            count, ttl_ms = await self._script(
                keys=[f"{self._prefix}:api-limit:{key}"], args=[window_seconds * 1000, increment]
            )
        except RedisError as exc:
            # Availability over strictness: an unreachable Redis limits each process alone.
            logger.warning(
                "API rate limit: Redis unavailable, counting in this process",
                extra={"error": type(exc).__name__},
            )
            if increment:
                return await self._fallback.hit(key, limit, window_seconds)
            return await self._fallback.peek(key, limit, window_seconds)
        return Window(limit, int(count), math.ceil(int(ttl_ms) / 1000))


class LocalCounter:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._windows: dict[str, tuple[int, float]] = {}  # key → (count, closes at)

    async def hit(self, key: str, limit: int, window_seconds: int) -> Window:
        return self._count(key, limit, window_seconds, 1)

    async def peek(self, key: str, limit: int, window_seconds: int) -> Window:
        return self._count(key, limit, window_seconds, 0)

    def _count(self, key: str, limit: int, window_seconds: int, increment: int) -> Window:
        now = self._clock.monotonic()
        if len(self._windows) > 10_000:
            self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
        count, closes_at = self._windows.get(key, (0, now + window_seconds))
        if closes_at <= now:
            count, closes_at = 0, now + window_seconds
        count += increment
        if count:
            self._windows[key] = (count, closes_at)
        return Window(limit, count, math.ceil(closes_at - now))


def create_counter(redis: Redis | None, prefix: str, clock: Clock) -> Counter:
    local = LocalCounter(clock)
    return local if redis is None else RedisCounter(redis, prefix, local)
