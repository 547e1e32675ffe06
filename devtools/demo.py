"""`senso demo`: the whole flow on one machine, through the real HTTP API and worker code.

With no DATABASE_URL / SQS_QUEUE_URL it is self-contained: a SQLite file in a temporary
folder, moto's SQS server in this process, the simulated engines, a random API token. With
--emulator the engines are the real provider clients, talking to the engine emulator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from app.clock import SystemClock
from app.context import AppContext
from app.db.migrate import upgrade
from app.logging import configure_logging
from app.queue.provision import create_queue_with_dlq
from app.settings import Settings
from devtools.embedded import moto_sqs_server, run_worker_task, serve_api
from devtools.emulator.config import Brand, EmulatorConfig, Fault
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import emulated_engine_settings

TERMINAL = {"completed", "failed", "cancelled"}

DEMO_QUESTIONS = (
    "What is the best product analytics platform for a B2B SaaS startup?",
    "Which analytics tools do growth teams recommend for funnel analysis?",
    "Top alternatives to Google Analytics for product teams?",
    "What software should a small company use to track user retention?",
    "Which product analytics vendors have the best privacy and GDPR compliance?",
    "Recommend a self-serve analytics tool for non-technical marketers.",
    "What are the most reliable event tracking platforms for mobile apps?",
    "Which analytics platform integrates best with a modern data warehouse?",
)


DEMO_ORG: dict[str, Any] = {
    "name": "Acme Analytics",
    "aliases": ["Acme"],
    "domains": ["acme-analytics.com"],
    "competitors": ["Mixpanel", "Amplitude", "Heap", "PostHog", "Pendo"],
}


@dataclass(frozen=True, slots=True)
class DemoOptions:
    questions: int
    engines: list[str]
    locations: list[str]
    timeout: float
    emulator: bool = False  # real engine clients against the engine emulator, in-process
    samples: int = 2
    backfill_days: int = 6  # earlier simulated days evaluated first, for the trend
    serve: bool = False  # keep the API (and the report link) up until interrupted
    port: int = 0  # the API's loopback port; 0: a free one


async def run_demo(options: DemoOptions) -> int:
    settings = Settings()
    if "LOG_LEVEL" not in os.environ:
        settings = settings.model_copy(update={"log_level": "WARNING"})
    configure_logging(settings)
    with contextlib.ExitStack() as stack:
        settings = stack.enter_context(_embedded_services(settings))
        if options.emulator:
            settings = stack.enter_context(_emulated_engines(settings))
        return await _run(settings, options)


@contextlib.contextmanager
def _embedded_services(settings: Settings) -> Iterator[Settings]:
    """Fill in whatever the environment does not provide with an in-process stand-in."""
    updates: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        if "DATABASE_URL" not in os.environ:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="senso-demo-"))
            updates["database_url"] = SecretStr(f"sqlite+aiosqlite:///{folder}/senso.db")
            _say(f"database: embedded SQLite at {folder}/senso.db")
        else:
            _say("database: DATABASE_URL")
        if settings.sqs_queue_url is None:
            endpoint = stack.enter_context(moto_sqs_server())
            updates["aws_endpoint_url"] = endpoint
            queue_settings = settings.model_copy(update={"aws_endpoint_url": endpoint})
            updates["sqs_queue_url"] = create_queue_with_dlq(
                queue_settings,
                f"senso-demo-{uuid.uuid4().hex[:8]}",
                max_receive_count=settings.job_max_attempts + 1,
            )
            _say(f"queue: in-process SQS endpoint at {endpoint}")
        else:
            _say(f"queue: {settings.sqs_queue_url}")
        _say("redis: REDIS_URL" if settings.redis_url else "redis: not used (REDIS_URL unset)")
        if settings.api_token is None:
            updates["api_token"] = SecretStr(secrets.token_urlsafe(24))
        # The demo sits in front of a person: short polls keep shutdown quick.
        updates["sqs_wait_seconds"] = min(settings.sqs_wait_seconds, 2)
        yield settings.model_copy(update=updates)


@contextlib.contextmanager
def _emulated_engines(settings: Settings) -> Iterator[Settings]:
    """Every engine and the LLM analysis through their real clients, against the emulator."""
    config = EmulatorConfig(
        brand=Brand(
            name=DEMO_ORG["name"],
            aliases=DEMO_ORG["aliases"],
            domains=DEMO_ORG["domains"],
            competitors=DEMO_ORG["competitors"],
        ),
        # Real results pages often have no AI Overview: the demo shows such runs too.
        faults=[Fault(kind="no_ai_overview", provider="dataforseo", rate=0.3)],
    )
    with EmulatorServer(config) as emulator:
        _say(f"engines: real clients against the engine emulator at {emulator.url}")
        yield settings.model_copy(update=emulated_engine_settings(emulator.url))


class DemoClock(SystemClock):
    """The system clock whose date can be moved back whole days (the backfill)."""

    def __init__(self) -> None:
        self.days_back = 0

    def today(self) -> date:
        return super().today() - timedelta(days=self.days_back)


async def _run(settings: Settings, options: DemoOptions) -> int:
    clock = DemoClock()
    async with AppContext.create(settings, clock) as context:
        await upgrade(context.db)
        async with (
            serve_api(settings, context, port=options.port) as base_url,
            run_worker_task(context) as worker,
        ):
            _say(f"api: {base_url} (OpenAPI at /docs)")
            _say(f"worker: {worker.worker_id}")
            token = settings.api_token.get_secret_value() if settings.api_token else ""
            async with httpx.AsyncClient(
                base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
            ) as client:
                outcome = await _drive(client, options, clock)
                if outcome == 0 and options.serve:
                    _say("\nserving the API and the report link; press Ctrl-C to stop")
                    await _until_interrupted()
                return outcome


async def _until_interrupted() -> None:
    """Until SIGINT or SIGTERM, handled here: the demo then stops its client, worker and API in
    order, rather than through a cancelled task after the API server has caught the signal for
    itself."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _drive(client: httpx.AsyncClient, options: DemoOptions, clock: DemoClock) -> int:
    partner = _ok(
        await client.post(
            "/partners",
            json={
                "name": f"Demo partner {uuid.uuid4().hex[:6]}",
                "balance": "100.00",
                "price_per_run": "0.05",
            },
        )
    )
    org = _ok(
        await client.post(
            "/orgs", json={"partner_id": partner["id"], **DEMO_ORG, "samples": options.samples}
        )
    )
    org_id = org["id"]
    questions = list(DEMO_QUESTIONS[: options.questions])
    _ok(await client.put(f"/orgs/{org_id}/questions", json={"questions": questions}))
    _ok(await client.put(f"/orgs/{org_id}/engines", json={"engines": options.engines}))
    _ok(await client.put(f"/orgs/{org_id}/locations", json={"locations": options.locations}))
    _say(
        f"\norg: {org['name']} ({org_id}), {org['samples']} samples per cell, "
        f"partner balance {partner['balance']}"
    )
    if options.backfill_days:
        await _backfill(client, org_id, options, clock)

    response = await client.post(
        f"/orgs/{org_id}/evaluations", json={"triggered_by": "demo", "user_id": "demo"}
    )
    accepted = _ok(response)
    _say(
        f"POST /orgs/{org_id}/evaluations → {response.status_code}, "
        f"Location: {response.headers['location']}, {accepted['total_runs']} runs"
    )
    admitted = _ok(await client.get(f"/partners/{partner['id']}"))
    _say(
        f"admitted: {admitted['reserved']} reserved of the balance {admitted['balance']}, "
        f"{admitted['available']} available"
    )
    batch = await _poll(client, accepted["batch_id"], options.timeout)
    if batch["status"] != "completed":
        _say(f"\nbatch ended {batch['status']}: {batch['error']}")
        return 1
    results = _ok(await client.get(f"/batches/{batch['batch_id']}/results", params={"limit": 1}))
    after = _ok(await client.get(f"/partners/{partner['id']}"))
    balance = f"{after['balance']} ({after['reserved']} still reserved)"
    _print_summary(batch, results, balance, options)
    await _print_trend(client, org_id, options, clock.today())
    await _print_report(client, org_id, options)
    return 0


async def _print_report(client: httpx.AsyncClient, org_id: str, options: DemoOptions) -> None:
    """A report link for the demo's days, and a copy of the page to open after the demo."""
    link = _ok(
        await client.post(
            f"/orgs/{org_id}/report-links",
            json={"days": options.backfill_days + 1, "label": "demo"},
        )
    )
    page = await client.get(link["url"], headers={"Authorization": ""})
    page.raise_for_status()
    timing = page.headers.get("server-timing", "").partition("dur=")[2]
    handle, path = tempfile.mkstemp(prefix="senso-demo-report-", suffix=".html")
    with os.fdopen(handle, "w", encoding="utf-8") as copy:
        copy.write(page.text)
    _say(f"\nreport: {link['url']}")
    _say(f"  {len(page.content) // 1024} KiB HTML built in {timing or '?'} ms; a copy: {path}")
    if not options.serve:
        _say("  the link works while the API runs: `senso demo --serve` keeps it up")


async def _backfill(
    client: httpx.AsyncClient, org_id: str, options: DemoOptions, clock: DemoClock
) -> None:
    """One batch for each earlier day, so the trend has a week to show: the API and worker
    read the same clock, whose date is moved back a day at a time."""
    _say(f"backfilling {options.backfill_days} earlier simulated days for the trend")
    try:
        for days_back in range(options.backfill_days, 0, -1):
            clock.days_back = days_back
            accepted = _ok(await client.post(f"/orgs/{org_id}/evaluations", json={}))
            batch = await _poll(client, accepted["batch_id"], options.timeout, quiet=True)
            _say(f"  {batch['batch_date']}: {batch['status']}, {batch['completed_runs']} answers")
    finally:
        clock.days_back = 0


async def _print_trend(
    client: httpx.AsyncClient, org_id: str, options: DemoOptions, today: date
) -> None:
    days = options.backfill_days + 1
    trend = _ok(
        await client.get(
            f"/orgs/{org_id}/trends",
            params={
                "metric": "visibility",
                "granularity": "day",
                "from": str(today - timedelta(days=days - 1)),
            },
        )
    )
    _say(f"\n  visibility, last {days} days (95% interval; cells / answers)")
    for point in trend["points"]:
        _say(
            f"  {point['period']['start']}  {_pct(point['value']):>5}  "
            f"{_interval(point['interval'])}  {point['cells']} / {point['answers']}"
        )
    changes = _ok(await client.get(f"/orgs/{org_id}/changes", params={"window": 3}))
    overall = changes["metrics"]["visibility"]["overall"]
    _say(
        f"  last 3 days against the 3 before: {_signed(overall['difference'])} "
        f"{_interval(overall['interval'])} → {overall['verdict']}"
    )


async def _poll(
    client: httpx.AsyncClient, batch_id: str, wait_seconds: float, *, quiet: bool = False
) -> dict[str, Any]:
    deadline = time.monotonic() + wait_seconds
    last = ""
    while True:
        batch: dict[str, Any] = _ok(await client.get(f"/batches/{batch_id}"))
        line = (
            f"  {batch['status']:<9} {batch['completed_runs']:>3}/{batch['total_runs']} completed,"
            f" {batch['failed_runs']} failed, {batch['charged_runs']} charged"
        )
        if line != last and not quiet:
            _say(line)
            last = line
        if batch["status"] in TERMINAL:
            return batch
        if time.monotonic() > deadline:
            _say(f"gave up after {wait_seconds:.0f}s")
            return batch
        await asyncio.sleep(0.25)


def _print_summary(
    batch: dict[str, Any], results: dict[str, Any], balance: str, options: DemoOptions
) -> None:
    summary = results["summary"]
    label = ""
    if results["simulated"]:
        label = " (simulated engines)"
    elif options.emulator:
        label = " (real engine clients, answers from the engine emulator)"
    _say(f"\nResults{label} — batch {batch['batch_id']}, {batch['batch_date']}")
    method = results["methodology"]
    asks = method["samples_per_cell"] or {"min": 0, "max": 0}
    _say(
        f"  {method['questions']} questions × {len(method['engines'])} engines × "
        f"{len(method['countries'])} countries, {asks['min']}–{asks['max']} asks per cell; "
        "95% intervals: bootstrap over questions"
    )
    _say(f"  visibility          {_estimate(summary['visibility'])} of answers mention the org")
    _say(
        f"  share of voice      {_estimate(summary['share_of_voice']['tracked'])} against "
        "its tracked competitors"
    )
    _say(f"  sentiment           {_sentiment(summary['sentiment'])}")
    position = summary["average_position"]
    _say(
        f"  avg list position   {_number(position['value'])} "
        f"{_interval(position['interval'], pct=False)}"
    )
    _say(
        f"  citation rate       {_estimate(summary['citation_rate'])} of answers with sources "
        "cite its domain"
    )
    _say("  top competitors     " + _names(summary["top_competitors"]))
    _say("  top cited domains   " + _names(summary["top_cited_domains"]))
    for axis, parts in (("engine", results["by_engine"]), ("location", results["by_location"])):
        _say(
            f"\n  {axis:<24}{'runs':>6}{'visibility':>12}{'voice':>8}{'avg pos':>9}"
            f"{'cited':>8}{'tone':>7}"
        )
        for name, part in parts.items():
            _row(name, part)
    steps = ", ".join(f"{s['name']}={s['status']}" for s in batch["steps"])
    _say(f"\n  steps: {steps}")
    _say(
        f"  charged {batch['charged_runs']} runs = {Decimal(batch['charged_amount'])}; "
        f"engine and analysis cost {Decimal(batch['cost'])}; partner balance now {balance}"
    )


def _row(name: str, part: dict[str, Any]) -> None:
    position = part["average_position"]["value"]
    _say(
        f"  {name:<24}{part['completed_runs']:>6}{_pct(part['visibility']['value']):>12}"
        f"{_pct(part['share_of_voice']['tracked']['value']):>8}"
        f"{_number(position):>9}"
        f"{_pct(part['citation_rate']['value']):>8}"
        f"{_score(part['sentiment']['score']['value']):>7}"
    )


def _sentiment(sentiment: dict[str, Any]) -> str:
    counts = f"{sentiment['positive']} positive, {sentiment['neutral']} neutral, "
    counts += f"{sentiment['negative']} negative"
    score = sentiment["score"]
    return (
        f"{_score(score['value'])} {_interval(score['interval'], pct=False)} "
        f"({counts}; score from -1 to +1)"
    )


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _estimate(estimate: dict[str, Any]) -> str:
    return f"{_pct(estimate['value'])} {_interval(estimate['interval'])}"


def _interval(interval: list[float] | None, *, pct: bool = True) -> str:
    if interval is None:
        return "[no interval]"
    low, high = interval
    return f"[{_pct(low)}–{_pct(high)}]" if pct else f"[{low:.2f}, {high:.2f}]"


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:+.1f} points"


def _score(score: float | None) -> str:
    return "—" if score is None else f"{score:+.2f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _names(ranked: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['name']} ({r['runs']})" for r in ranked[:5]) or "—"


def _ok(response: httpx.Response) -> Any:
    if response.is_error:
        raise SystemExit(
            f"{response.request.method} {response.request.url.path} → "
            f"{response.status_code}: {response.text}"
        )
    return response.json()


def _say(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
