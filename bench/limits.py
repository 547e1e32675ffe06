"""The rate limiters under many waiters, and the claim lanes of a batch with a slow engine.

"ratelimit": WAITERS asks of one shared (Redis) limit in one process — script calls per
grant, and grants that fell back to the process's own limit because Redis refused (its
connection pool exhausted) — and the in-process limiter's wakeups per grant. The baselines are
the ideal: one script call and one wakeup per grant, no fallback.

"lanes": orgs of 125 runs (5 engines × 25) with engines answering in 500 ms, three batches run
one after another by the worker's pipeline (one with --quick): the median batch's time beside
its lane floor (each engine's runs in rounds of
RUN_CONCURRENCY, a round as long as the engine's mean answer — the simulated engines'
latencies vary by a quarter, so the mean is of the latencies the runs recorded), and the claim
statements beside the runs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import statistics
import time
import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import event, select

from app.clock import SystemClock
from app.db.models import QuestionRun
from app.engines.ratelimit import LocalRateLimiter, RateLimit, RedisRateLimiter
from bench.common import Figure, Matrix, report
from bench.worker import run_batches, triggered_batches

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
LANE_BATCHES = 3  # measured one after another; the median is the figure
WAITERS = 160  # the worker's default 4 jobs × 5 engines × 8 lanes
POOL = 16  # Redis connections the process may open
LANES = Matrix(
    questions=5,
    engines=("openai", "anthropic", "gemini", "perplexity", "linkup"),
    locations=("US", "GB", "DE", "FR", "ES"),
)
LATENCY_MS = 500


class _Fallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Redis unavailable" in record.getMessage():
            self.count += 1


async def _shared(grants: int) -> tuple[float, int]:
    """Script calls per grant and grants that fell back, WAITERS asks at once."""
    client = Redis.from_url(REDIS_URL, max_connections=POOL, socket_timeout=5)
    limiter = RedisRateLimiter(client, f"bench-{uuid.uuid4().hex[:8]}", SystemClock())
    calls = 0
    script = limiter._acquire

    async def counted(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await script(**kwargs)

    limiter._acquire = counted  # type: ignore[assignment]
    fallbacks = _Fallbacks()
    logging.getLogger("app.engines.ratelimit").addHandler(fallbacks)
    # A provider's limit: 8 at once, 6,000 a minute (one every 10 ms).
    limit = RateLimit(max_concurrency=8, requests_per_minute=6_000)
    pending = grants

    async def waiter() -> None:
        nonlocal pending
        while pending > 0:
            pending -= 1
            async with limiter.slot("engine", limit):
                await asyncio.sleep(0.005)

    try:
        await asyncio.gather(*(waiter() for _ in range(WAITERS)))
    finally:
        logging.getLogger("app.engines.ratelimit").removeHandler(fallbacks)
        await client.aclose()
    return calls / grants, fallbacks.count


async def _local_wakeups(waiters: int) -> float:
    """Wakeups of waiting asks per grant, with the cap full."""
    limiter = LocalRateLimiter(SystemClock())
    limit = RateLimit(max_concurrency=4, requests_per_minute=600_000, burst=1000)
    wakeups = 0
    wait = asyncio.Event.wait

    async def counted(self: asyncio.Event) -> bool:
        nonlocal wakeups
        woken = await wait(self)
        wakeups += 1
        return woken

    async def ask() -> None:
        async with limiter.slot("engine", limit):
            await asyncio.sleep(0.001)

    setattr(asyncio.Event, "wait", counted)  # noqa: B010 - counted for the bench's run only
    try:
        await asyncio.gather(*(ask() for _ in range(waiters)))
    finally:
        setattr(asyncio.Event, "wait", wait)  # noqa: B010
    return wakeups / waiters


async def ratelimit(quick: bool) -> None:
    grants = 200 if quick else 400
    per_grant, fallbacks = await _shared(grants)
    wakeups = await _local_wakeups(512)
    report(
        f"ratelimit: {WAITERS} waiters on one limit, a pool of {POOL} Redis connections",
        [
            Figure("script calls per granted slot", per_grant, "calls", 1, "one per grant"),
            Figure(
                "grants taken without the shared limit",
                fallbacks,
                "grants",
                0,
                "none",
                f"0 of {grants}",
            ),
            Figure("in-process wakeups per grant, 512 waiters", wakeups, "wakeups", 1, "one"),
        ],
    )


def _lane_floor(latencies: Sequence[tuple[str, int | None]], width: int) -> float:
    """The least time the runs take in lanes of `width` per engine: each engine's runs in
    rounds of `width`, a round as long as the engine's mean answer."""
    by_engine: dict[str, list[float]] = {}
    for engine_id, latency_ms in latencies:
        by_engine.setdefault(engine_id, []).append((latency_ms or 0) / 1000)
    return max(
        math.ceil(len(times) / width) * statistics.fmean(times) for times in by_engine.values()
    )


async def lanes(quick: bool) -> None:
    repeat = 1 if quick else LANE_BATCHES
    claims = 0

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        nonlocal claims
        if statement.startswith("UPDATE question_runs SET status") and "claimed_by=" in statement:
            claims += 1

    timed: list[tuple[float, float]] = []  # each batch's seconds and lane floor
    runs = 0
    async with triggered_batches([(LANES, repeat)], simulated_latency_ms=LATENCY_MS) as (
        context,
        triggered,
    ):
        width = context.settings.run_concurrency
        event.listen(context.db.sync_engine, "before_cursor_execute", count)
        for batch in triggered[LANES]:
            started = time.monotonic()
            measured = await run_batches(context, [batch])
            seconds = time.monotonic() - started
            runs += measured.runs
            async with context.sessions() as session:
                latencies = (
                    await session.execute(
                        select(QuestionRun.engine_id, QuestionRun.latency_ms).where(
                            QuestionRun.batch_id == batch.batch_id
                        )
                    )
                ).all()
            timed.append((seconds, _lane_floor(latencies, width)))
        event.remove(context.db.sync_engine, "before_cursor_execute", count)
    per_engine = LANES.runs // len(LANES.engines)
    # The batch of the median ratio: one batch's wall time is at the mercy of a busy moment.
    seconds, floor = sorted(timed, key=lambda pair: pair[0] / pair[1])[len(timed) // 2]
    report(
        f"lanes: orgs of {LANES.runs} runs, engines answering in {LATENCY_MS} ms",
        [
            Figure("batch time, the median batch", seconds, "s", floor, "its lane floor", "≤ ×1.2"),
            Figure("claim statements", claims, "claims", runs, "runs", "≤ ×1"),
        ],
        [
            f"{per_engine} runs per engine in lanes of RUN_CONCURRENCY={width}; batches one after "
            f"another at {', '.join(f'×{s / f:.2f}' for s, f in timed)} of their floors"
        ],
    )
