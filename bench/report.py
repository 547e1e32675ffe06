"""Report benchmark: how long `GET /r/{token}` takes for 90 days of daily batches on Postgres,
and `GET /orgs/{id}/trends` over a year of them.

Seeds a year of an org's history straight into a new Postgres database (one completed batch a
day, questions × engines × countries answers, summarised by the code that ends a real batch),
serves the real API on loopback and times the report page against baselines measured in the
same run: the same report over 7 days, one metric's trend over the 90 days and over the year,
and `GET /healthz` (the HTTP round trip itself).

    uv run python bench/report.py                 # about a minute
    uv run python bench/report.py --quick         # 30 days of history, fewer requests
    POSTGRES_ADMIN_URL=postgresql://postgres@db.internal/postgres uv run python bench/report.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import httpx
from pydantic import SecretStr
from sqlalchemy import text

from app.clock import SystemClock
from app.context import AppContext
from app.db.migrate import upgrade
from app.logging import configure_logging
from app.settings import Settings
from devtools.embedded import serve_api
from devtools.history import seed_history

ADMIN_URL = os.environ.get("POSTGRES_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = "bench-operator-token"  # noqa: S105 - a loopback API of this run only
QUESTIONS = [f"Which vendor is best for use case {n}?" for n in range(1, 11)]
ENGINES = ["openai", "anthropic", "gemini"]
COUNTRIES = ["US", "GB"]
BUDGET_MS = 300.0  # the 90-day report
TREND_BUDGET_MS = 100.0  # a year's trend of one metric


async def _timed(call: Callable[[], Awaitable[httpx.Response]], times: int) -> list[float]:
    """Milliseconds of each of `times` calls, after two that warm caches up."""
    for _ in range(2):
        (await call()).raise_for_status()
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        response = await call()
        samples.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return samples


def _line(name: str, samples: list[float], baseline: list[float] | None = None) -> str:
    p50 = statistics.median(samples)
    p95 = sorted(samples)[max(0, int(len(samples) * 0.95) - 1)]
    ratio = f"  ×{p50 / statistics.median(baseline):.2f} of baseline" if baseline else ""
    return f"  {name:<44} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms{ratio}"


async def run(days: int, history: int, requests: int) -> int:
    name = f"senso_bench_report_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_URL, timeout=10)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
        settings = Settings(
            database_url=SecretStr(f"{base}/{name}"),
            api_token=SecretStr(TOKEN),
            log_level="WARNING",
        )
        configure_logging(settings)
        async with AppContext.create(settings, SystemClock()) as context:
            await upgrade(context.db)
            async with (
                serve_api(settings, context) as url,
                httpx.AsyncClient(
                    base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
                ) as api,
            ):
                return await _measure(api, context, days, history, requests)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _measure(
    api: httpx.AsyncClient, context: AppContext, days: int, history: int, requests: int
) -> int:
    partner = (
        await api.post("/partners", json={"name": f"bench-{uuid.uuid4().hex[:6]}", "balance": 1})
    ).json()
    org = (
        await api.post(
            "/orgs",
            json={
                "partner_id": partner["id"],
                "name": "Acme Analytics",
                "aliases": ["Acme"],
                "domains": ["acme-analytics.com"],
                "competitors": ["Mixpanel", "Amplitude", "Heap", "PostHog"],
            },
        )
    ).json()
    org_id = org["id"]
    await api.put(f"/orgs/{org_id}/questions", json={"questions": QUESTIONS})
    await api.put(f"/orgs/{org_id}/engines", json={"engines": ENGINES})
    await api.put(f"/orgs/{org_id}/locations", json={"locations": COUNTRIES})
    today = context.clock.today()
    started = time.perf_counter()
    await seed_history(
        context, org_id, [today - timedelta(days=i) for i in range(history - 1, -1, -1)]
    )
    # A database that has held its history for a while has statistics on it (autovacuum's
    # ANALYZE); a fresh one would be timed with plans made for empty tables.
    async with context.db.begin() as connection:
        await connection.execute(text("ANALYZE"))
    runs = history * len(QUESTIONS) * len(ENGINES) * len(COUNTRIES)
    print(
        f"seeded {history} daily batches, {runs} answers, in {time.perf_counter() - started:.1f} s "
        f"({len(QUESTIONS)} questions × {len(ENGINES)} engines × {len(COUNTRIES)} countries)"
    )

    async def link(span: int) -> str:
        created = await api.post(f"/orgs/{org_id}/report-links", json={"days": span})
        created.raise_for_status()
        return str(created.json()["url"])

    long_link, short_link = await link(days), await link(7)
    async with httpx.AsyncClient(timeout=60) as anonymous:
        report = await _timed(lambda: anonymous.get(long_link), requests)
        short = await _timed(lambda: anonymous.get(short_link), requests)
        selected = await _timed(
            lambda: anonymous.get(long_link, params={"engine": "openai"}), requests
        )

    def trend_of(span: int) -> Callable[[], Awaitable[httpx.Response]]:
        since = str(today - timedelta(days=span - 1))
        params = {"metric": "visibility", "from": since}
        return lambda: api.get(f"/orgs/{org_id}/trends", params=params)

    trend = await _timed(trend_of(days), requests)
    year = await _timed(trend_of(history), requests)
    health = await _timed(lambda: api.get("/healthz"), requests)
    print(f"GET /r/{{token}} ({requests} requests each, after 2 warm-ups)")
    print(_line("GET /healthz (baseline: the round trip)", health))
    print(_line(f"GET /orgs/{{id}}/trends, 1 metric, {days} days", trend, health))
    print(_line("report, 7 days", short, health))
    print(_line(f"report, {days} days", report, health))
    print(_line(f"report, {days} days, one engine", selected, health))
    p50 = statistics.median(report)
    print(
        f"  report over {days} days against the 7-day one: ×{p50 / statistics.median(short):.2f}; "
        f"against the trend of one metric: ×{p50 / statistics.median(trend):.2f}"
    )
    print(_line(f"GET /orgs/{{id}}/trends, 1 metric, {history} days", year, health))
    year_p50 = statistics.median(year)
    print(
        f"  the {history}-day trend against the {days}-day one: "
        f"×{year_p50 / statistics.median(trend):.2f}"
    )
    within = p50 < BUDGET_MS and year_p50 < TREND_BUDGET_MS
    for what, value, budget in (
        (f"{days}-day report", p50, BUDGET_MS),
        (f"{history}-day trend", year_p50, TREND_BUDGET_MS),
    ):
        verdict = "within" if value < budget else "OVER"
        print(f"  {what} p50 {value:.0f} ms: {verdict} the {budget:.0f} ms budget")
    return 0 if within else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--days", type=int, default=90, help="days the report shows (90)")
    parser.add_argument("--history", type=int, default=365, help="daily batches seeded (365)")
    parser.add_argument("--requests", type=int, default=20, help="timed requests per figure")
    parser.add_argument("--quick", action="store_true", help="30 days of 30, 5 requests")
    args = parser.parse_args(argv)
    if args.quick:
        return asyncio.run(run(30, 30, 5))
    return asyncio.run(run(args.days, max(args.history, args.days), args.requests))


if __name__ == "__main__":
    sys.exit(main())
