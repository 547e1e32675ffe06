"""The shared rate limiter: concurrency caps, request spacing, expiry of abandoned slots, and
the same limits in one process without Redis — over a real Redis connection."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.engines.ratelimit import LocalRateLimiter, RateLimit, RateLimiter, RedisRateLimiter
from tests.conftest import REDIS_URL


@pytest.fixture
async def redis_clients() -> AsyncIterator[tuple[Redis, Redis]]:
    """Two connections, as two worker processes would have."""
    first, second = Redis.from_url(REDIS_URL), Redis.from_url(REDIS_URL)
    yield first, second
    await first.aclose()
    await second.aclose()


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def _peak_concurrency(limiters: list[RateLimiter], limit: RateLimit, tasks: int) -> int:
    running = 0
    peak = 0

    async def hold(limiter: RateLimiter) -> None:
        nonlocal running, peak
        async with limiter.slot("engine", limit):
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.03)
            running -= 1

    await asyncio.gather(*(hold(limiters[i % len(limiters)]) for i in range(tasks)))
    return peak


async def _start_times(limiters: list[RateLimiter], limit: RateLimit, tasks: int) -> list[float]:
    started: list[float] = []

    async def take(limiter: RateLimiter) -> None:
        async with limiter.slot("engine", limit):
            started.append(time.monotonic())

    await asyncio.gather(*(take(limiters[i % len(limiters)]) for i in range(tasks)))
    return sorted(started)


async def test_local_limiter_caps_concurrency() -> None:
    limit = RateLimit(max_concurrency=3, requests_per_minute=60_000)
    assert await _peak_concurrency([LocalRateLimiter()], limit, tasks=12) == 3


async def test_redis_limiter_caps_concurrency_across_processes(
    redis_clients: tuple[Redis, Redis], prefix: str
) -> None:
    limiters: list[RateLimiter] = [RedisRateLimiter(client, prefix) for client in redis_clients]
    limit = RateLimit(max_concurrency=3, requests_per_minute=60_000)
    assert await _peak_concurrency(limiters, limit, tasks=12) == 3


@pytest.mark.parametrize("shared", [False, True])
async def test_requests_are_spaced_by_the_rate(
    redis_clients: tuple[Redis, Redis], prefix: str, shared: bool
) -> None:
    limiters: list[RateLimiter] = (
        [RedisRateLimiter(client, prefix) for client in redis_clients]
        if shared
        else [LocalRateLimiter()]
    )
    limit = RateLimit(max_concurrency=10, requests_per_minute=1200)  # one every 50 ms
    started = await _start_times(limiters, limit, tasks=8)
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert min(gaps) >= 0.045, gaps
    # Spaced, not throttled harder than asked: 8 requests take about 7 intervals.
    assert started[-1] - started[0] < 0.5


@pytest.mark.parametrize("shared", [False, True])
async def test_burst_lets_that_many_go_at_once(
    redis_clients: tuple[Redis, Redis], prefix: str, shared: bool
) -> None:
    limiters: list[RateLimiter] = (
        [RedisRateLimiter(redis_clients[0], prefix)] if shared else [LocalRateLimiter()]
    )
    limit = RateLimit(max_concurrency=10, requests_per_minute=600, burst=3)  # 100 ms apart
    started = await _start_times(limiters, limit, tasks=4)
    assert started[2] - started[0] < 0.05
    assert started[3] - started[0] >= 0.095


async def test_an_abandoned_slot_frees_itself_when_its_hold_ends(
    redis_clients: tuple[Redis, Redis], prefix: str
) -> None:
    """A worker killed while holding a slot cannot release it; its expiry does."""
    dead, alive = (RedisRateLimiter(client, prefix) for client in redis_clients)
    limit = RateLimit(max_concurrency=1, requests_per_minute=60_000, hold_seconds=0.3)
    abandoned = dead.slot("engine", limit)
    await abandoned.__aenter__()  # never exited: the holder "died"
    began = time.monotonic()
    async with alive.slot("engine", limit):
        waited = time.monotonic() - began
    assert 0.2 <= waited < 1.0, waited


async def test_every_key_expires(redis_clients: tuple[Redis, Redis], prefix: str) -> None:
    client = redis_clients[0]
    limit = RateLimit(max_concurrency=2, requests_per_minute=60, hold_seconds=5)
    async with RedisRateLimiter(client, prefix).slot("engine", limit):
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        assert len(keys) == 2
        for key in keys:
            assert 0 < await client.pttl(key) <= 7_000


async def test_released_slot_is_free_at_once(
    redis_clients: tuple[Redis, Redis], prefix: str
) -> None:
    limiter = RedisRateLimiter(redis_clients[0], prefix)
    limit = RateLimit(max_concurrency=1, requests_per_minute=60_000, hold_seconds=60)
    async with limiter.slot("engine", limit):
        pass
    began = time.monotonic()
    async with limiter.slot("engine", limit):
        assert time.monotonic() - began < 0.05


async def test_unreachable_redis_falls_back_to_limiting_this_process(prefix: str) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    try:
        limiter = RedisRateLimiter(unreachable, prefix)
        limit = RateLimit(max_concurrency=2, requests_per_minute=60_000)
        assert await _peak_concurrency([limiter], limit, tasks=6) == 2
    finally:
        await unreachable.aclose()
