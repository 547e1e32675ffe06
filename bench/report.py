"""The report page (`GET /r/{token}`) over 90 days of daily batches, and `GET /orgs/{id}/trends`
over a year of them, on Postgres.

A year of one org's history is written straight into the scenario's database (one completed
batch a day, 10 questions × 3 engines × 2 countries, each batch summarised by the code that ends
a real one: `devtools.history`), then the real API over loopback HTTP is timed: the 90-day
report against the same report over 7 days, the year's trend against the 90-day one, every
figure also against `GET /healthz` (the HTTP round trip itself). With --quick: 30 days.
"""

from __future__ import annotations

import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import httpx
from pydantic import SecretStr
from sqlalchemy import text

from app.context import AppContext
from bench.common import Figure, Matrix, bench_settings, create_orgs, report, scratch_database
from devtools.embedded import serve_api
from devtools.history import seed_history

MATRIX = Matrix(questions=10, engines=("openai", "anthropic", "gemini"), locations=("US", "GB"))
REPORT_DAYS, HISTORY_DAYS = 90, 365
BUDGET_MS, TREND_BUDGET_MS = 300, 100


async def _p50(call: Callable[[], Awaitable[httpx.Response]], times: int) -> float:
    """The median milliseconds of `times` calls, after two that warm caches up."""
    for _ in range(2):
        (await call()).raise_for_status()
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        response = await call()
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return statistics.median(samples)


async def scenario(quick: bool) -> None:
    days, history, times = (30, 30, 5) if quick else (REPORT_DAYS, HISTORY_DAYS, 15)
    async with scratch_database() as url:
        token = secrets.token_urlsafe(16)
        settings = bench_settings(url, api_token=SecretStr(token))
        async with (
            AppContext.create(settings) as context,
            serve_api(settings, context) as base,
            httpx.AsyncClient(
                base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60
            ) as api,
            httpx.AsyncClient(timeout=60) as anonymous,
        ):
            (org_id,) = await create_orgs(api, 1, MATRIX)
            today = context.clock.today()
            started = time.perf_counter()
            await seed_history(
                context, org_id, [today - timedelta(days=i) for i in range(history)][::-1]
            )
            seeded = time.perf_counter() - started
            # A database that has held its history a while has statistics on it
            # (autovacuum's ANALYZE); a fresh one would be timed with empty-table plans.
            async with context.db.begin() as connection:
                await connection.execute(text("ANALYZE"))

            async def link(span: int) -> str:
                created = await api.post(f"/orgs/{org_id}/report-links", json={"days": span})
                created.raise_for_status()
                return str(created.json()["url"])

            def trend(span: int) -> Callable[[], Awaitable[httpx.Response]]:
                since = str(today - timedelta(days=span - 1))
                params = {"metric": "visibility", "from": since}
                return lambda: api.get(f"/orgs/{org_id}/trends", params=params)

            long_link, short_link = await link(days), await link(7)
            health = await _p50(lambda: api.get("/healthz"), times)
            page = await _p50(lambda: anonymous.get(long_link), times)
            week = await _p50(lambda: anonymous.get(short_link), times)
            one = {"engine": "openai"}
            narrowed = await _p50(lambda: anonymous.get(long_link, params=one), times)
            short_trend = await _p50(trend(days), times)
            year_trend = await _p50(trend(history), times)
    report(
        "report",
        [
            Figure(
                f"report page, {days} days, p50", page, "ms", week, "7 days", f"< {BUDGET_MS} ms"
            ),
            Figure(f"report page, {days} days, one engine", narrowed, "ms", week, "7 days"),
            Figure(f"report page, {days} days (vs HTTP)", page, "ms", health, "/healthz"),
            Figure(
                f"trend, 1 metric, {history} days, p50",
                year_trend,
                "ms",
                short_trend,
                f"{days} days",
                f"< {TREND_BUDGET_MS} ms",
            ),
        ],
        [
            f"{history} daily batches seeded in {seeded:.1f} s "
            f"({history * MATRIX.runs} answers), then ANALYZE",
        ],
    )
