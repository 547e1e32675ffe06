"""Three `senso worker` processes sharing one Redis against a provider limited to R requests a
minute per key, configured 5 % under it as the README advises: together they stay under the
provider's limit (no 429 from the emulator) and still use at least 90 % of their own.

The emulator runs as its own `senso emulator` process, as a provider is another host: in this
process its arrival times would also measure this process's own pauses.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from app.context import AppContext
from app.db.models import QuestionRun, RunStatus
from app.settings import Settings
from devtools.embedded import free_port
from devtools.emulator.config import EmulatorConfig, RateLimitRule
from devtools.emulator.wiring import EMULATOR_KEYS, emulated_engine_settings
from tests.conftest import REDIS_URL, make_settings
from tests.factories import create_org, create_partner, expect, wait_for_batch
from tests.processes import REPO_ROOT, WorkerProcess, worker_environment, worker_process

# Runs processes of its own: never beside another test that does (see pyproject.toml).
pytestmark = pytest.mark.xdist_group("processes")

PROVIDER_PER_MINUTE = 600  # one every 100 ms
# Calls spaced at exactly the provider's rate leave its bucket nothing to refill with: once a
# delayed call lands right before the next one, every later call is a few ms from a 429.
REQUESTS_PER_MINUTE = 570
# The workers' start is not what is measured: their rate is taken from this call on.
STEADY_FROM = 10
WORKERS = 3
ORGS = 3
LOCATIONS = ("US", "GB", "DE", "FR", "CA", "AU")
QUESTIONS = 5
RUNS = ORGS * QUESTIONS * len(LOCATIONS)


@pytest.fixture
async def emulator_url() -> AsyncIterator[str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "senso",
        "emulator",
        "--port",
        str(port),
        cwd=REPO_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.TransportError):
                    await client.get("/_emulator/config")
                    break
                await asyncio.sleep(0.05)
            # Its first answer is slow (lazy imports): not what the test measures.
            await client.post(
                "/v1/chat/completions",
                headers={"Authorization": "Bearer warm-up"},
                json={"model": "m", "messages": [{"role": "user", "content": "warm up"}]},
            )
            await client.delete("/_emulator/requests")
        yield url
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)


@pytest.fixture
def settings(postgres_url: str, queue_url: str, sqs_endpoint: str, emulator_url: str) -> Settings:
    return make_settings(
        postgres_url,
        queue_url,
        sqs_endpoint,
        **emulated_engine_settings(emulator_url),
        analysis_provider="simulated",
        redis_key_prefix=f"test-{uuid.uuid4().hex[:12]}",
    )


async def _started(worker: WorkerProcess, limit: float = 90) -> None:
    # Three processes import and connect at once; on two loaded cores that has taken over 30 s.
    deadline = time.monotonic() + limit
    while not any("worker started" in line for line in worker.stderr):
        assert worker.process.returncode is None, worker.output()
        assert time.monotonic() < deadline, worker.output()
        await asyncio.sleep(0.05)


async def test_three_workers_share_the_providers_rate_limit(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, emulator_url: str
) -> None:
    # A process's first call carries its cold start (a new connection, lazy imports) after it
    # took its place in the rate, so it can land right before the next process's call: the
    # provider's bucket lets one request per process through back to back.
    rule = RateLimitRule(requests_per_minute=PROVIDER_PER_MINUTE, burst=WORKERS)
    config = EmulatorConfig(latency_ms=40, rate_limits={"openai": rule})
    async with httpx.AsyncClient(base_url=emulator_url) as emulator:
        expect(await emulator.put("/_emulator/config", content=config.model_dump_json()), 200)
        await _run_three_workers(api, settings)
        calls = expect(await emulator.get("/_emulator/requests?provider=openai"), 200)
    refused = [call for call in calls if call["status"] == 429]
    first = calls[0]["at"]
    timeline = " ".join(f"{c['at'] - first:.3f}s:{c['status']}" for c in calls)
    assert not refused, f"{len(refused)} of {len(calls)} refused: {timeline}"
    assert len(calls) == RUNS
    steady = calls[STEADY_FROM:]
    per_minute = (len(steady) - 1) / (steady[-1]["at"] - steady[0]["at"]) * 60
    assert per_minute >= 0.9 * REQUESTS_PER_MINUTE, timeline
    async with context.sessions() as session:
        claimants = await session.scalar(
            select(func.count(func.distinct(QuestionRun.claimed_by))).where(
                QuestionRun.status == RunStatus.COMPLETED
            )
        )
    assert claimants == WORKERS, "every worker process took part"


async def _run_three_workers(api: httpx.AsyncClient, settings: Settings) -> None:
    env = worker_environment(
        settings,
        REDIS_URL=REDIS_URL,
        REDIS_KEY_PREFIX=settings.redis_key_prefix,
        ENGINE_MODE="real",
        OPENAI_API_KEY=EMULATOR_KEYS["openai_api_key"],
        OPENAI_BASE_URL=settings.openai_base_url,
        OPENAI_REQUESTS_PER_MINUTE=str(REQUESTS_PER_MINUTE),
        OPENAI_MAX_CONCURRENCY="16",
        ANALYSIS_PROVIDER="simulated",
        SQS_MAX_MESSAGES="1",
        WORKER_CONCURRENCY="1",
        RUN_CONCURRENCY="8",
        LOG_LEVEL="INFO",
    )
    partner_id = await create_partner(api)
    orgs = [
        await create_org(
            api, partner_id, questions=QUESTIONS, engines=("openai",), locations=LOCATIONS
        )
        for _ in range(ORGS)
    ]
    async with contextlib.AsyncExitStack() as stack:
        workers = [await stack.enter_async_context(worker_process(env)) for _ in range(WORKERS)]
        await asyncio.gather(*(_started(worker) for worker in workers))
        batch_ids = [
            expect(await api.post(f"/orgs/{org.org_id}/evaluations", json={}), 202)["batch_id"]
            for org in orgs
        ]
        for batch_id in batch_ids:
            batch = await wait_for_batch(api, batch_id, limit=90)
            assert batch["status"] == "completed", batch
        for worker in workers:
            worker.process.terminate()
