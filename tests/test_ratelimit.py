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

from app.clock import SystemClock
from app.engines.ratelimit import LocalRateLimiter, RateLimit, RateLimiter, RedisRateLimiter
from tests.clock import ManualClock, RecordingClock
from tests.conftest import REDIS_URL
from tests.worker_support import eventually


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


class PlacesClock(SystemClock):
    """The system's clock, keeping for each task that sleeps the time it meant to wake at: its
    place in the rate, however late a loaded machine wakes it."""

    def __init__(self) -> None:
        self.places: dict[asyncio.Task[object] | None, float] = {}

    async def sleep(self, seconds: float) -> None:
        self.places[asyncio.current_task()] = self.monotonic() + seconds
        await super().sleep(seconds)


async def _places(
    limiters: list[RateLimiter], clock: PlacesClock, limit: RateLimit, tasks: int
) -> list[float]:
    """Each ask's place in the rate, sorted: when it meant to wake, or, for an ask that did not
    wait, when it entered."""
    places: list[float] = []

    async def take(limiter: RateLimiter) -> None:
        async with limiter.slot("engine", limit):
            places.append(clock.places.pop(asyncio.current_task(), clock.monotonic()))

    await asyncio.gather(*(take(limiters[i % len(limiters)]) for i in range(tasks)))
    return sorted(places)


async def test_local_limiter_caps_concurrency() -> None:
    limit = RateLimit(max_concurrency=3, requests_per_minute=60_000)
    assert await _peak_concurrency([LocalRateLimiter(SystemClock())], limit, tasks=12) == 3


async def test_redis_limiter_caps_concurrency_across_processes(
    redis_clients: tuple[Redis, Redis], prefix: str
) -> None:
    limiters: list[RateLimiter] = [
        RedisRateLimiter(client, prefix, SystemClock()) for client in redis_clients
    ]
    limit = RateLimit(max_concurrency=3, requests_per_minute=60_000)
    assert await _peak_concurrency(limiters, limit, tasks=12) == 3


async def _grant_times(
    limiter: RateLimiter, clock: ManualClock, limit: RateLimit, tasks: int
) -> list[float]:
    """When each of `tasks` concurrent asks got its slot, on a clock moved only when the ask
    first in line sleeps (one interval at a time); the others wait behind it."""
    granted: list[float] = []

    async def take() -> None:
        async with limiter.slot("engine", limit):
            granted.append(clock.monotonic())

    asks = [asyncio.create_task(take()) for _ in range(tasks)]
    while len(granted) < tasks:
        # The first ask in line sleeps until its place in the rate, or every ask has its slot.
        await eventually(lambda: clock.sleepers == 1 or len(granted) == tasks, what="settled")
        wake = clock.next_wake()
        if wake is not None:
            clock.advance(wake)
    await asyncio.gather(*asks)
    return granted


async def test_requests_are_spaced_by_the_rate_and_no_more() -> None:
    clock = ManualClock()
    limit = RateLimit(max_concurrency=10, requests_per_minute=1200)  # one every 50 ms
    granted = await _grant_times(LocalRateLimiter(clock), clock, limit, tasks=8)
    assert granted == pytest.approx([0.05 * n for n in range(8)])


async def test_burst_lets_that_many_go_at_once() -> None:
    clock = ManualClock()
    limit = RateLimit(max_concurrency=10, requests_per_minute=600, burst=3)  # 100 ms apart
    granted = await _grant_times(LocalRateLimiter(clock), clock, limit, tasks=5)
    assert granted == pytest.approx([0, 0, 0, 0.1, 0.2])


async def test_shared_requests_are_spaced_by_the_rate_across_processes(
    redis_clients: tuple[Redis, Redis], prefix: str
) -> None:
    """Redis's own clock decides; places are never closer together than asked. They are read
    as each caller meant to wake (a loaded machine wakes several at once after a stall), so
    only the moment each caller read Redis's answer may shift them, later, by a few
    milliseconds: any two places n apart are at least n × 50 ms apart, less half a slot."""
    clock = PlacesClock()
    limiters = [RedisRateLimiter(client, prefix, clock) for client in redis_clients]
    limit = RateLimit(max_concurrency=10, requests_per_minute=1200)  # one every 50 ms
    places = await _places(list(limiters), clock, limit, tasks=8)
    too_close = [
        (i, j, places[j] - places[i])
        for i, j in itertools.combinations(range(len(places)), 2)
        if places[j] - places[i] < 0.05 * (j - i) - 0.025
    ]
    assert not too_close, places


async def test_a_shared_burst_goes_at_once_then_waits(
    redis_clients: tuple[Redis, Redis], prefix: str
) -> None:
    clock = RecordingClock()
    limiter = RedisRateLimiter(redis_clients[0], prefix, clock)
    limit = RateLimit(max_concurrency=10, requests_per_minute=60, burst=3)  # a second apart
    for _ in range(3):
        async with limiter.slot("engine", limit):
            pass
    assert clock.sleeps == [], "the burst never waits"
    fourth = asyncio.create_task(_enter_and_leave(limiter, limit))
    await eventually(lambda: bool(clock.sleeps), what="the fourth to wait")
    fourth.cancel()
    await asyncio.gather(fourth, return_exceptions=True)
    assert 0.9 <= clock.sleeps[0] <= 1.0, "told to wait for the next place in the rate"


async def _enter_and_leave(limiter: RateLimiter, limit: RateLimit) -> None:
    async with limiter.slot("engine", limit):
        pass


async def test_an_abandoned_slot_frees_itself_when_its_hold_ends(
    redis_clients: tuple[Redis, Redis], prefix: str
) -> None:
    """A worker killed while holding a slot cannot release it; its expiry does."""
    dead = RedisRateLimiter(redis_clients[0], prefix, SystemClock())
    clock = RecordingClock()
    alive = RedisRateLimiter(redis_clients[1], prefix, clock)
    limit = RateLimit(max_concurrency=1, requests_per_minute=60_000, hold_seconds=0.3)
    abandoned = dead.slot("engine", limit)
    await abandoned.__aenter__()  # never exited: the holder "died"
    began = time.monotonic()
    async with asyncio.timeout(10), alive.slot("engine", limit):
        waited = time.monotonic() - began
    assert clock.sleeps, "it waited for the abandoned slot"
    assert waited >= 0.25, waited  # no sooner than the hold ends (on Redis's clock)


async def test_every_key_expires(redis_clients: tuple[Redis, Redis], prefix: str) -> None:
    client = redis_clients[0]
    limit = RateLimit(max_concurrency=2, requests_per_minute=60, hold_seconds=5)
    async with RedisRateLimiter(client, prefix, SystemClock()).slot("engine", limit):
        keys = [key async for key in client.scan_iter(f"{prefix}:*")]
        assert len(keys) == 2
        for key in keys:
            assert 0 < await client.pttl(key) <= 7_000


async def test_released_slot_is_free_at_once(
    redis_clients: tuple[Redis, Redis], prefix: str
) -> None:
    clock = RecordingClock()
    limiter = RedisRateLimiter(redis_clients[0], prefix, clock)
    # One slot, and a burst so the rate never asks to wait: only the slot could.
    limit = RateLimit(max_concurrency=1, requests_per_minute=60_000, burst=10, hold_seconds=60)
    async with limiter.slot("engine", limit):
        pass
    async with limiter.slot("engine", limit):
        pass
    assert clock.sleeps == [], "the second ask did not wait"


async def test_many_waiters_share_a_few_redis_connections_and_keep_the_shared_limit(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's default 4 jobs × 5 engines × 8 lanes waiting on one limit: they wait in
    line, so the pool is never exhausted and no grant falls back to this process's limit."""
    client = Redis.from_url(REDIS_URL, max_connections=12)
    try:
        limiters: list[RateLimiter] = [RedisRateLimiter(client, prefix, SystemClock())]
        limit = RateLimit(max_concurrency=8, requests_per_minute=600_000, burst=8)
        assert await _peak_concurrency(limiters, limit, tasks=160) == 8
    finally:
        await client.aclose()
    assert not [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert not [r for r in caplog.records if "not released" in r.getMessage()]


async def test_a_release_wakes_the_next_in_line_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cap full, the asks waiting behind the first do not wake on every release."""
    limiter = LocalRateLimiter(SystemClock())
    limit = RateLimit(max_concurrency=1, requests_per_minute=60_000, burst=100)
    wakeups = 0
    event_wait = asyncio.Event.wait

    async def counted_wait(event: asyncio.Event) -> bool:
        nonlocal wakeups
        result = await event_wait(event)
        wakeups += 1
        return result

    monkeypatch.setattr(asyncio.Event, "wait", counted_wait)
    order: list[int] = []

    async def take(n: int) -> None:
        async with limiter.slot("engine", limit):
            order.append(n)
            await asyncio.sleep(0.001)

    await asyncio.gather(*(take(n) for n in range(64)))
    monkeypatch.undo()
    assert order == list(range(64)), "first come, first served"
    assert 0 < wakeups <= 64, f"{wakeups} wakeups for 64 grants"


async def test_unreachable_redis_falls_back_to_limiting_this_process(prefix: str) -> None:
    unreachable = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    try:
        limiter = RedisRateLimiter(unreachable, prefix, SystemClock())
        limit = RateLimit(max_concurrency=2, requests_per_minute=60_000)
        assert await _peak_concurrency([limiter], limit, tasks=6) == 2
    finally:
        await unreachable.aclose()
