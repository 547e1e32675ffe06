"""Per-engine concurrency caps and requests-per-minute limits, shared by every worker process.

Each limit is a concurrency cap plus GCRA (a token bucket kept as one "theoretical arrival
time"): requests are spaced 60/rpm seconds apart, with `burst` of them allowed back to back.
In Redis both live in one Lua script that reads Redis's own clock, so processes on machines
with skewed clocks agree; slot holders carry an expiry and every key has a TTL, so a worker
that dies holding a slot frees it when the expiry passes. Without Redis the same algorithm
runs in-process.

The callers of one limit in a process wait in line (first come, first served) and only the
first of them asks: the script reserves its place in the rate and says how long until then
(the caller sleeps that long and goes, without asking again), and when every slot is held a
slot freed in this process wakes it at once, so waiting costs neither script calls nor Redis
connections — one per limit and process, however many wait. (Hundreds of waiters each polling
Redis used to exhaust its connection pool, and each refusal fell back to this process's limit.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.clock import Clock, sleep_until_set

logger = logging.getLogger(__name__)

# A full concurrency cap has no clock to wait for: a slot freed in this process wakes the first
# in line at once; one freed in another process is seen by asking again this much later.
_SLOT_RECHECK_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class RateLimit:
    max_concurrency: int
    requests_per_minute: int
    burst: int = 1
    hold_seconds: float = 120.0  # a slot not released by then is presumed abandoned

    @property
    def interval_ms(self) -> float:
        return 60_000 / self.requests_per_minute


# A slot outlives the longest its work may take by this much before it is presumed abandoned.
SLOT_GRACE_SECONDS = 10.0


def call_limit(
    *, max_concurrency: int, requests_per_minute: int, burst: int, timeout_seconds: float
) -> RateLimit:
    """The limit of an engine's calls: a slot is held for at most one call's timeout."""
    return RateLimit(
        max_concurrency=max_concurrency,
        requests_per_minute=requests_per_minute,
        burst=burst,
        hold_seconds=timeout_seconds + SLOT_GRACE_SECONDS,
    )


class RateLimiter(Protocol):
    def slot(self, name: str, limit: RateLimit) -> AbstractAsyncContextManager[None]: ...


# KEYS: slots (sorted set holder → expiry ms), tat (theoretical arrival time, ms).
# ARGV: holder, max_concurrency, interval_ms, burst, hold_ms.
# Returns {1, ms to wait before the request may go} when the slot is taken — its place in the
# rate is reserved, so the caller sleeps and goes without asking again — or {0, -1} when every
# slot is held.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local max_concurrency = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local hold = tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= max_concurrency then
  return {0, -1}
end
local tat = tonumber(redis.call('GET', KEYS[2]) or '0')
if tat < now then tat = now end
local wait = tat - (burst - 1) * interval - now
if wait < 0 then wait = 0 end
local next_tat = tat + interval
redis.call('SET', KEYS[2], string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now) + 1000)
redis.call('ZADD', KEYS[1], now + wait + hold, ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(wait + hold) + 1000)
return {1, math.ceil(wait)}
"""


@dataclass(slots=True)
class _Line:
    """The callers of one limit in this process, in order; only the first waits for it."""

    turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # FIFO: wakes the next only
    released: asyncio.Event = field(default_factory=asyncio.Event)
    holding: int = 0  # slots this process holds: with the cap full here, Redis need not say so


class RedisRateLimiter:
    def __init__(self, redis: Redis, prefix: str, clock: Clock) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._acquire = redis.register_script(_ACQUIRE)
        self._fallback = LocalRateLimiter(clock)
        self._lines: dict[str, _Line] = {}

    @asynccontextmanager
    async def slot(self, name: str, limit: RateLimit) -> AsyncIterator[None]:
        slots_key = f"{self._prefix}:ratelimit:{name}:slots"
        tat_key = f"{self._prefix}:ratelimit:{name}:tat"
        holder = uuid.uuid4().hex
        line = self._lines.setdefault(name, _Line())
        try:
            async with line.turn:
                wait_ms = await self._wait_for_slot(slots_key, tat_key, holder, limit, line)
        except RedisError as exc:
            # Availability over strictness: an unreachable Redis must not stop evaluations;
            # providers' own 429s are still retried.
            logger.warning(
                "rate limiter: Redis unavailable, limiting this process only",
                extra={"limiter": name, "error": type(exc).__name__},
            )
            async with self._fallback.slot(name, limit):
                yield
            return
        try:
            # Out of the line: the next caller reserves the following place meanwhile.
            if wait_ms > 0:
                await self._clock.sleep(wait_ms / 1000)
            yield
        finally:
            try:
                await asyncio.shield(self._redis.zrem(slots_key, holder))
            except RedisError:
                logger.warning("rate limiter: slot not released; it expires by itself")
            line.holding -= 1
            line.released.set()

    async def _wait_for_slot(
        self, slots_key: str, tat_key: str, holder: str, limit: RateLimit, line: _Line
    ) -> int:
        """Takes the slot; returns the ms its place in the rate is still ahead."""
        args: list[str | int | float] = [
            holder,
            limit.max_concurrency,
            limit.interval_ms,
            limit.burst,
            limit.hold_seconds * 1000,
        ]
        while True:
            line.released.clear()
            if line.holding >= limit.max_concurrency:
                await line.released.wait()
                continue
            taken, wait_ms = await self._acquire(keys=[slots_key, tat_key], args=args)
            if taken:
                line.holding += 1
                return int(wait_ms)
            await sleep_until_set(self._clock, line.released, _SLOT_RECHECK_SECONDS)


@dataclass(slots=True)
class _LocalState:
    holders: int = 0
    tat: float = 0.0
    turn: asyncio.Lock = field(default_factory=asyncio.Lock)  # FIFO: wakes the next only
    released: asyncio.Event = field(default_factory=asyncio.Event)


class LocalRateLimiter:
    """The same limits within one process, for when REDIS_URL is unset. Callers wait in line:
    a release wakes the first of them, not all."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._states: dict[str, _LocalState] = {}

    @asynccontextmanager
    async def slot(self, name: str, limit: RateLimit) -> AsyncIterator[None]:
        state = self._states.setdefault(name, _LocalState())
        interval = limit.interval_ms / 1000
        async with state.turn:
            while True:
                if state.holders >= limit.max_concurrency:
                    state.released.clear()
                    await state.released.wait()
                    continue
                now = self._clock.monotonic()
                tat = max(state.tat, now)
                wait = tat - (limit.burst - 1) * interval - now
                if wait > 0:
                    await self._clock.sleep(wait)
                    continue
                state.tat = tat + interval
                state.holders += 1
                break
        try:
            yield
        finally:
            state.holders -= 1
            state.released.set()
