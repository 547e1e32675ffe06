"""Fan-out benchmark: how fast a batch's runs go out, and how closely a rate limit is kept.

Runs real batches through the real API and worker (moto's SQS server, a Postgres database of
its own) with every engine's real client against the engine emulator on loopback, and prints
one line per measurement (`uv run python -m bench fanout`).

Part "concurrency": 6 engines × 5 questions × 4 countries = 120 runs, each provider call
taking --latency-ms; RUN_CONCURRENCY (runs in flight per engine) varies; "serial" is what
asking one run at a time would take. Part "rate": openai only, with
OPENAI_REQUESTS_PER_MINUTE set to what the emulator allows per key; the achieved rate and the
429s are counted from the emulator's request log.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from app.context import AppContext
from app.engines.catalogue import ENGINE_IDS
from app.queue.provision import create_queue_with_dlq
from app.settings import Settings
from bench.common import Figure, report, scratch_database
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
    async with scratch_database() as database_url:
        with moto_sqs_server() as endpoint:
            base = Settings(aws_endpoint_url=endpoint, sqs_wait_seconds=1)
            name = f"bench-{uuid.uuid4().hex[:8]}"
            queue_url = create_queue_with_dlq(base, name, max_receive_count=5)
            settings = Settings.model_validate(
                {
                    "database_url": SecretStr(database_url),
                    "api_token": SecretStr(token),
                    "aws_endpoint_url": endpoint,
                    "sqs_queue_url": queue_url,
                    "sqs_wait_seconds": 1,
                    "analysis_provider": "simulated",
                    "log_level": "WARNING",
                    **overrides,
                }
            )
            async with (
                AppContext.create(settings) as context,
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
    figures = []
    notes = []
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
        figures.append(
            Figure(
                f"batch wall time, RUN_CONCURRENCY={level}",
                outcome.seconds,
                "s",
                serial,
                "asking one run at a time",
            )
        )
        notes.append(
            f"RUN_CONCURRENCY={level}: runs {outcome.completed}/{outcome.runs}, "
            f"{outcome.completed / outcome.seconds:.1f} runs/s, billed calls {len(billed)}, "
            f"peak in flight {_peak_in_flight(billed, latency_ms / 1000)}"
        )
    report(
        f"fanout: {len(ENGINE_IDS)} engines × {len(QUESTIONS)} questions × "
        f"{len(COUNTRIES)} countries, provider latency {latency_ms} ms",
        figures,
        notes,
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
    report(
        "fanout: one engine held to its rate limit",
        [
            Figure(
                "achieved request rate",
                achieved,
                "/min",
                requests_per_minute,
                "OPENAI_REQUESTS_PER_MINUTE",
                "≤ ×1.00, no 429",
            )
        ],
        [
            f"runs {outcome.completed}/{outcome.runs}, calls {len(outcome.calls)}, "
            f"429s {refused}, wall {outcome.seconds:.2f} s"
        ],
    )


async def scenario(quick: bool) -> None:
    with EmulatorServer() as emulator:
        await concurrency(emulator, 250, [32] if quick else [1, 8, 32])
        if quick:
            await rate(emulator, requests_per_minute=2400, runs=40)
        else:
            await rate(emulator, requests_per_minute=600, runs=120)
