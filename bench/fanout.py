"""Fan-out benchmark: how fast a batch's runs go out, and how closely a rate limit is kept.

Runs real batches through the real API and worker (in-process SQS; SQLite unless DATABASE_URL
names a database) with every engine's real client against the engine emulator on loopback, and
prints one line per scenario:

    uv run python bench/fanout.py            # about a minute
    uv run python bench/fanout.py --quick    # a few seconds
    DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1/bench uv run python bench/fanout.py

Scenario "concurrency": 6 engines × 5 questions × 4 countries = 120 runs, each provider call
taking --latency-ms; RUN_CONCURRENCY (runs in flight per engine) varies; "serial" is what
asking one run at a time would take. Scenario "rate": openai only, with
OPENAI_REQUESTS_PER_MINUTE set to what the emulator allows per key; the achieved rate and the
429s are counted from the emulator's request log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from app.context import AppContext
from app.db.migrate import upgrade
from app.engines.catalogue import ENGINE_IDS
from app.logging import configure_logging
from app.queue.provision import create_queue_with_dlq
from app.settings import Settings
from devtools.embedded import moto_sqs_server, run_worker_task, serve_api
from devtools.emulator.config import PROVIDERS, EmulatorConfig, RateLimitRule
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import emulated_engine_settings

QUESTIONS = [f"Which vendor is best for use case {n}?" for n in range(1, 6)]
COUNTRIES = ["US", "GB", "DE", "FR"]
_POLL_PATHS = ("/datasets/v3/progress/", "/datasets/v3/snapshot/")
UNLIMITED = 100_000  # requests per minute: the concurrency scenario measures concurrency only


@dataclass(frozen=True, slots=True)
class Outcome:
    runs: int
    completed: int
    seconds: float
    calls: list[dict[str, Any]]


@contextlib.asynccontextmanager
async def _service(overrides: dict[str, object]) -> AsyncIterator[httpx.AsyncClient]:
    token = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as folder, moto_sqs_server() as endpoint:
        base = Settings(aws_endpoint_url=endpoint, sqs_wait_seconds=1)
        name = f"bench-{uuid.uuid4().hex[:8]}"
        queue_url = create_queue_with_dlq(base, name, max_receive_count=5)
        settings = Settings.model_validate(
            {
                "database_url": SecretStr(
                    os.environ.get("DATABASE_URL", f"sqlite+aiosqlite:///{folder}/bench.db")
                ),
                "api_token": SecretStr(token),
                "aws_endpoint_url": endpoint,
                "sqs_queue_url": queue_url,
                "sqs_wait_seconds": 1,
                "analysis_provider": "simulated",
                "log_level": "WARNING",
                **overrides,
            }
        )
        async with AppContext.create(settings) as context:
            await upgrade(context.db)
            async with (
                serve_api(settings, context) as url,
                run_worker_task(context),
                httpx.AsyncClient(
                    base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
                ) as client,
            ):
                yield client


async def _batch(
    overrides: dict[str, object], engines: list[str], questions: list[str], emulator: EmulatorServer
) -> Outcome:
    async with _service(overrides) as api:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        partner = _ok(await api.post("/partners", json={"name": name, "balance": "1000"}))
        org = _ok(
            await api.post("/orgs", json={"partner_id": partner["id"], "name": "Acme Analytics"})
        )
        _ok(await api.put(f"/orgs/{org['id']}/questions", json={"questions": questions}))
        _ok(await api.put(f"/orgs/{org['id']}/engines", json={"engines": engines}))
        _ok(await api.put(f"/orgs/{org['id']}/locations", json={"locations": COUNTRIES}))
        emulator.state.clear_log()
        started = time.monotonic()
        accepted = _ok(await api.post(f"/orgs/{org['id']}/evaluations", json={}))
        while True:
            batch = _ok(await api.get(f"/batches/{accepted['batch_id']}"))
            if batch["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
        seconds = time.monotonic() - started
    calls = [entry.as_json() for entry in emulator.state.logged()]
    return Outcome(batch["total_runs"], batch["completed_runs"], seconds, calls)


def _ok(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()


def _peak_in_flight(calls: list[dict[str, Any]], latency: float) -> int:
    """Calls whose [arrival, arrival + latency) overlap, at the most."""
    events = sorted([(c["at"], 1) for c in calls] + [(c["at"] + latency, -1) for c in calls])
    peak = current = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


async def concurrency(emulator: EmulatorServer, latency_ms: int, levels: list[int]) -> None:
    emulator.state.configure(EmulatorConfig(latency_ms=latency_ms))
    limits = {f"{p}_requests_per_minute": UNLIMITED for p in PROVIDERS}
    for level in levels:
        overrides = {
            **emulated_engine_settings(emulator.url),
            **limits,
            **{f"{p}_max_concurrency": level for p in PROVIDERS},
            "run_concurrency": level,
        }
        outcome = await _batch(overrides, list(ENGINE_IDS), QUESTIONS, emulator)
        serial = outcome.runs * latency_ms / 1000
        # BrightData's progress and snapshot polls are free and take no time to answer.
        billed = [c for c in outcome.calls if not c["path"].startswith(_POLL_PATHS)]
        print(
            f"concurrency  RUN_CONCURRENCY={level:<3} runs={outcome.completed}/{outcome.runs}"
            f"  wall={outcome.seconds:6.2f}s  runs/s={outcome.completed / outcome.seconds:6.1f}"
            f"  serial={serial:5.1f}s  billed calls={len(billed)}"
            f"  peak in flight={_peak_in_flight(billed, latency_ms / 1000)}",
            flush=True,
        )


async def rate(emulator: EmulatorServer, requests_per_minute: int, runs: int) -> None:
    rule = RateLimitRule(requests_per_minute=requests_per_minute, burst=2)
    emulator.state.configure(EmulatorConfig(latency_ms=20, rate_limits={"openai": rule}))
    overrides = {
        **emulated_engine_settings(emulator.url),
        "openai_requests_per_minute": requests_per_minute,
        "openai_max_concurrency": 16,
        "run_concurrency": 16,
    }
    questions = [f"Question {n} about vendors?" for n in range(runs // len(COUNTRIES))]
    outcome = await _batch(overrides, ["openai"], questions, emulator)
    arrivals = sorted(c["at"] for c in outcome.calls)
    achieved = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) * 60
    refused = sum(1 for c in outcome.calls if c["status"] == 429)
    print(
        f"rate         OPENAI_REQUESTS_PER_MINUTE={requests_per_minute}"
        f"  runs={outcome.completed}/{outcome.runs}  calls={len(outcome.calls)}"
        f"  achieved={achieved:6.1f}/min ({achieved / requests_per_minute:.1%})"
        f"  429s={refused}  wall={outcome.seconds:5.2f}s",
        flush=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small scenarios, a few seconds")
    parser.add_argument("--latency-ms", type=int, default=250, help="provider latency (250)")
    args = parser.parse_args()
    configure_logging(Settings(log_level="WARNING"))
    with EmulatorServer() as emulator:
        levels = [8, 32] if args.quick else [1, 8, 32]
        await concurrency(emulator, args.latency_ms, levels)
        if args.quick:
            await rate(emulator, requests_per_minute=1200, runs=40)
        else:
            await rate(emulator, requests_per_minute=600, runs=120)


if __name__ == "__main__":
    asyncio.run(main())
