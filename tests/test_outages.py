"""When a dependency fails: SQS that never answers, Postgres stopped or frozen (a private server
of the tests' own), the database lost under a run's lease heartbeat, workers whose clocks
disagree. Nothing hangs, nothing answers 500, no run is asked twice, nothing is lost."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select

from app.context import AppContext
from app.db.models import QuestionRun
from app.queue.messages import EvaluateOrg
from app.settings import Settings
from devtools.emulator.config import EmulatorConfig
from devtools.emulator.routing import CLIENT_WENT_AWAY
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import emulated_engine_settings
from tests.clock import ManualClock, OffsetClock
from tests.conftest import make_settings, operator_client
from tests.factories import create_org, create_partner, expect, trigger, wait_for_batch
from tests.private_postgres import PrivatePostgres
from tests.servers import silent_server
from tests.worker_support import (
    LANES,
    eventually,
    held_calls,
    held_settings_for,
    queue_counts,
    run_rows,
    running,
    statuses,
)
from worker.runtime import Worker

# The database timeouts of these tests: a dead database is known in about a second.
DB_TIMEOUTS: dict[str, Any] = {
    "database_connect_timeout_seconds": 1.0,
    "database_statement_timeout_seconds": 1.0,
    "database_pool_timeout_seconds": 1.0,
}
# Connect + statement + pool checkout, and a margin: how long a refusal may take at most.
DB_DEADLINE = 5.0


@contextlib.asynccontextmanager
async def api_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        AppContext.create(settings) as context,
        operator_client(settings, context) as client,
    ):
        yield client


def unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": "database_unavailable",
        "detail": "the database is not answering; try again shortly",
    }
    assert response.headers["retry-after"] == "5"


# ---------------------------------------------------------------------------------------------
# SQS unresponsive
# ---------------------------------------------------------------------------------------------


async def test_a_trigger_with_sqs_unresponsive_answers_within_seconds(
    postgres_url: str, queue_url: str, sqs_endpoint: str
) -> None:
    async with silent_server() as silent:
        # Default SQS timeouts: what production would do.
        settings = make_settings(
            postgres_url, f"{silent}/123456789012/jobs", silent, redis_url=None
        )
        async with api_client(settings) as api:
            partner_id = await create_partner(api)
            setup = await create_org(api, partner_id, questions=1)
            # The client's timeout is the deadline: 5 s, or the test fails.
            response = await api.post(f"/orgs/{setup.org_id}/evaluations", timeout=5)
            accepted = expect(response, 202)
            assert accepted["status"] == "pending"  # saved, left for the reconciler
            batch = expect(await api.get(f"/batches/{accepted['batch_id']}"), 200)
            assert batch["reserved"] == "0.300000", "admitted (6 runs), waiting for its job"


# ---------------------------------------------------------------------------------------------
# Postgres stopped, frozen, and back
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def private_settings(private_database: str, queue_url: str, sqs_endpoint: str) -> Settings:
    return make_settings(private_database, queue_url, sqs_endpoint, redis_url=None, **DB_TIMEOUTS)


async def test_postgres_stopped_then_frozen_is_a_503_and_the_api_recovers_by_itself(
    private_settings: Settings, private_postgres: PrivatePostgres
) -> None:
    async with api_client(private_settings) as api:
        partner_id = await create_partner(api)
        assert expect(await api.get("/readyz"), 200)["status"] == "ready"

        private_postgres.stop()
        unavailable(await api.get(f"/partners/{partner_id}", timeout=DB_DEADLINE))
        unavailable(await api.post("/partners", json={"name": "x"}, timeout=DB_DEADLINE))
        ready = await api.get("/readyz", timeout=DB_DEADLINE)
        assert ready.status_code == 503
        assert ready.json()["detail"]["failed"] == ["database"]
        private_postgres.start()
        assert expect(await api.get(f"/partners/{partner_id}"), 200)["id"] == partner_id

        private_postgres.freeze()
        try:
            unavailable(await api.get(f"/partners/{partner_id}", timeout=DB_DEADLINE))
            unavailable(await api.get("/orgs", timeout=DB_DEADLINE))
            ready = await api.get("/readyz", timeout=DB_DEADLINE)
            assert ready.json()["detail"]["failed"] == ["database"]
        finally:
            private_postgres.thaw()
        assert expect(await api.get(f"/partners/{partner_id}"), 200)["id"] == partner_id
        assert expect(await api.get("/readyz"), 200)["status"] == "ready"


# ---------------------------------------------------------------------------------------------
# The database lost under the run-lease heartbeat
# ---------------------------------------------------------------------------------------------

LEASE = 3.0  # seconds: the keeper renews every second, retries after 0.1 and 0.2 s


@pytest.fixture
def lease_settings(
    private_database: str, queue_url: str, sqs_endpoint: str, emulator: EmulatorServer
) -> Settings:
    return held_settings_for(private_database, queue_url, sqs_endpoint, emulator).model_copy(
        update={**DB_TIMEOUTS, "run_lease_seconds": LEASE, "sqs_visibility_timeout": 300}
    )


async def leases(context: AppContext, batch_id: str) -> dict[uuid.UUID, datetime | None]:
    async with context.sessions() as session:
        rows = await session.execute(
            select(QuestionRun.id, QuestionRun.lease_expires_at).where(
                QuestionRun.batch_id == uuid.UUID(batch_id),
                QuestionRun.status == "running",
            )
        )
        return {run_id: expires for run_id, expires in rows.all()}


@contextlib.asynccontextmanager
async def lease_scene(
    settings: Settings,
) -> AsyncIterator[tuple[httpx.AsyncClient, AppContext, str]]:
    """The API and an observer on the private database, and a batch of 4 openai runs."""
    async with api_client(settings) as api, AppContext.create(settings) as observer:
        partner_id = await create_partner(api)
        setup = await create_org(api, partner_id, questions=2, engines=("openai",))
        yield api, observer, await trigger(api, setup.org_id)


async def beat(clock: ManualClock, seconds: float) -> None:
    """Let every loop of the worker go to sleep, then move the clock on."""
    await clock.wait_for_sleepers(4)  # reconciler, job timeout, visibility and lease heartbeats
    clock.advance(seconds)


async def test_a_lease_heartbeat_that_loses_the_database_for_a_while_keeps_its_runs(
    lease_settings: Settings, private_postgres: PrivatePostgres, emulator: EmulatorServer
) -> None:
    async with lease_scene(lease_settings) as (api, observer, batch_id):
        clock = ManualClock()
        async with (
            AppContext.create(lease_settings, clock) as worker_context,
            running(Worker(worker_context)),
        ):
            await held_calls(emulator, LANES)
            before = await leases(observer, batch_id)
            assert len(before) == LANES

            private_postgres.stop()
            await beat(clock, LEASE / 3)  # the heartbeat fails: the database is gone
            await beat(clock, 0.1)  # and fails again, longer than its interval in all
            private_postgres.start()
            await beat(clock, 0.2)  # the database is back: the leases are renewed

            async def renewed() -> bool:
                after = await leases(observer, batch_id)
                return after.keys() == before.keys() and all(
                    (after[run] or datetime.min) > (before[run] or datetime.max) for run in after
                )

            await eventually(renewed, what="the leases renewed after the outage")
            emulator.state.release()
            batch = await wait_for_batch(api, batch_id, limit=30)

    assert batch["status"] == "completed", batch
    assert statuses(emulator) == {200: 4}, "each run asked once, no call abandoned"
    assert {attempts for _, attempts in (await run_rows(observer, batch_id)).values()} == {1}


async def test_a_lease_that_cannot_be_renewed_stops_its_engine_calls_before_another_worker_takes_it(
    lease_settings: Settings, private_postgres: PrivatePostgres, emulator: EmulatorServer
) -> None:
    async with lease_scene(lease_settings) as (api, observer, batch_id):
        clock = ManualClock()
        settings = lease_settings.model_copy(update={"job_retry_base_seconds": 0})
        async with AppContext.create(settings, clock) as worker_context:
            worker = Worker(worker_context, worker_id="cut-off")
            task = asyncio.create_task(worker.run())
            await held_calls(emulator, LANES)
            private_postgres.stop()
            # Three failures in a row (LOOP_MAX_FAILURES): the keeper gives up, and the calls
            # in flight are abandoned before anybody else may take their runs.
            await beat(clock, LEASE / 3)
            await beat(clock, 0.1)
            await beat(clock, 0.2)
            await eventually(
                lambda: statuses(emulator) == {CLIENT_WENT_AWAY: LANES}, what="calls abandoned"
            )
            worker.request_stop()
            await asyncio.wait_for(task, 20)
        private_postgres.start()

        # Another worker takes the runs over once their leases end, and finishes the batch.
        emulator.state.release()
        async with AppContext.create(lease_settings) as other, running(Worker(other)):
            batch = await wait_for_batch(api, batch_id, limit=30)

    assert batch["status"] == "completed", batch
    counts = statuses(emulator)
    assert counts == {CLIENT_WENT_AWAY: LANES, 200: 4}, counts
    rows = await run_rows(observer, batch_id)
    assert sorted(attempts for _, attempts in rows.values()) == [1, 1, 2, 2]
    assert batch["charged_runs"] == 4


# ---------------------------------------------------------------------------------------------
# Worker clocks ten minutes apart
# ---------------------------------------------------------------------------------------------


async def test_workers_whose_clocks_are_ten_minutes_apart_never_ask_a_run_twice(
    api: httpx.AsyncClient,
    context: AppContext,
    postgres_url: str,
    queue_url: str,
    sqs_endpoint: str,
    sqs: SQSClient,
    emulator: EmulatorServer,
) -> None:
    emulator.state.configure(EmulatorConfig(latency_ms=100))
    settings = make_settings(
        postgres_url,
        queue_url,
        sqs_endpoint,
        **emulated_engine_settings(emulator.url),
        analysis_provider="simulated",
        openai_requests_per_minute=60_000,
        rate_limit_burst=100,
        run_concurrency=1,
        worker_concurrency=1,  # one copy of the job each
        redis_key_prefix=f"test-{uuid.uuid4().hex[:12]}",
    )
    partner_id = await create_partner(api)
    setup = await create_org(api, partner_id, engines=("openai",))  # 10 runs
    batch_id = await trigger(api, setup.org_id)
    # A second copy of the job: both workers work on the batch at once.
    await context.require_queue().send(
        EvaluateOrg(org_id=uuid.UUID(setup.org_id), batch_id=uuid.UUID(batch_id))
    )
    ahead, behind = OffsetClock(timedelta(minutes=5)), OffsetClock(timedelta(minutes=-5))
    async with (
        AppContext.create(settings, ahead) as first,
        AppContext.create(settings, behind) as second,
        running(Worker(first, worker_id="ahead"), Worker(second, worker_id="behind")),
    ):
        batch = await wait_for_batch(api, batch_id, limit=30)

        async def both_jobs_done() -> bool:
            # The batch can end while the other copy of its job is still finishing (on a
            # loaded machine, well after); each copy is deleted once its worker is done.
            return await queue_counts(sqs, queue_url) == (0, 0)

        await eventually(both_jobs_done, limit=30, what="both copies of the job to finish")
        # The reconciler of the worker ahead sees nothing stalled: activity is in the
        # database's time.
        await Worker(first).reconciler.run_once()

    assert batch["status"] == "completed", batch
    assert statuses(emulator) == {200: 10}, "each run asked once"
    rows = await run_rows(context, batch_id)
    assert {attempts for _, attempts in rows.values()} == {1}
    async with context.sessions() as session:
        claimants = set(await session.scalars(select(QuestionRun.claimed_by).distinct()))
    assert claimants == {"ahead", "behind"}, "both workers took part"
    assert await queue_counts(sqs, queue_url) == (0, 0), "nothing re-sent"
    assert batch["charged_runs"] == 10
