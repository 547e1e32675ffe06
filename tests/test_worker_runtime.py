"""The SQS worker runtime (DESIGN §5) in this process, over moto's SQS server and Postgres, with
time injected: heartbeats, backoffs, timeouts and drains happen when the test moves the clock.

What is checked: failures are counted with the job's work (not by SQS receives) and back off
through the message's visibility; exhausted jobs are recorded and deleted; a job past its
timeout is cancelled and its runs handed back; a drain starts nothing new; graceful restarts
never use up a batch's retries; the visibility heartbeat keeps a job's message hidden and stops
the job when it cannot; malformed messages reach the DLQ; concurrency is bounded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select, update

from app.context import AppContext
from app.db.clock import db_now
from app.db.models import EvaluationBatch, QuestionRun
from app.evaluations.jobs import evaluate_org_kind
from app.jobs import JobControl, JobKind
from app.logging import JsonFormatter
from app.queue.messages import EvaluateOrg
from app.settings import Settings
from devtools.emulator.config import EmulatorConfig
from devtools.emulator.routing import CLIENT_WENT_AWAY
from devtools.emulator.server import EmulatorServer
from tests.clock import ManualClock
from tests.conftest import MAX_RECEIVE_COUNT, make_settings
from tests.db_checks import run_stats
from tests.factories import create_org, create_partner, expect, trigger, wait_for_batch
from tests.worker_support import (
    LANES,
    RecordingQueue,
    answered,
    dlq_url,
    evaluate_job,
    eventually,
    held_calls,
    held_settings_for,
    make_visible,
    queue_counts,
    recording_context,
    run_rows,
    running,
    statuses,
    wait_queue_empty,
)
from worker.runtime import Worker

Handler = Callable[[AppContext, EvaluateOrg, JobControl], Coroutine[Any, Any, None]]


@dataclass
class Calls:
    """What a test handler saw."""

    jobs: list[EvaluateOrg] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    finished: int = 0
    cancelled: int = 0


def job_kind(
    handle: Handler,
    *,
    max_attempts: int = 3,
    timeout: float = 600,
    exhausted: list[tuple[EvaluateOrg, str]] | None = None,
) -> JobKind[EvaluateOrg]:
    """A job kind whose failures are counted here, per batch id."""
    failures: Counter[uuid.UUID] = Counter()

    async def record_failure(context: AppContext, job: EvaluateOrg, error: str) -> int:
        failures[job.batch_id] += 1
        return failures[job.batch_id]

    async def on_exhausted(context: AppContext, job: EvaluateOrg, error: str) -> None:
        assert exhausted is not None, f"on_exhausted must not run: {error}"
        exhausted.append((job, error))

    async def keep(context: AppContext, job: EvaluateOrg) -> bool:
        return True

    async def nothing(context: AppContext) -> None:
        return

    return JobKind(
        type="evaluate_org",
        handle=handle,
        timeout=timeout,
        max_attempts=max_attempts,
        record_failure=record_failure,
        on_exhausted=on_exhausted,
        on_dead_letter=keep,
        reconcile=nothing,
    )


def gated(calls: Calls, gate: asyncio.Event) -> Handler:
    """A handler that runs until the test opens the gate."""

    async def handle(context: AppContext, job: EvaluateOrg, control: JobControl) -> None:
        calls.jobs.append(job)
        calls.running += 1
        calls.max_running = max(calls.max_running, calls.running)
        try:
            await gate.wait()
        except asyncio.CancelledError:
            calls.cancelled += 1
            raise
        finally:
            calls.running -= 1
        calls.finished += 1

    return handle


def backoff_bounds(settings: Settings, failures: int) -> tuple[float, float]:
    """The jittered backoff after `failures` failures: [half its ceiling, its ceiling]."""
    ceiling = min(
        settings.job_retry_max_seconds, settings.job_retry_base_seconds * 2 ** (failures - 1)
    )
    return ceiling / 2, float(ceiling)


async def job_failures(context: AppContext, batch_id: str) -> int:
    async with context.sessions() as session:
        failures = await session.scalar(
            select(EvaluationBatch.job_failures).where(EvaluationBatch.id == uuid.UUID(batch_id))
        )
    assert failures is not None
    return failures


# ---------------------------------------------------------------------------------------------
# Failures, retries, exhaustion
# ---------------------------------------------------------------------------------------------


async def test_a_failure_backs_off_through_visibility_then_the_job_succeeds(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    attempts: list[EvaluateOrg] = []

    async def flaky(context: AppContext, job: EvaluateOrg, control: JobControl) -> None:
        attempts.append(job)
        if len(attempts) <= 2:
            raise RuntimeError(f"transient failure {len(attempts)}")

    async with recording_context(
        make_settings(
            postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=4, job_max_attempts=3
        )
    ) as (context, queue):
        job = evaluate_job()
        message_id = await queue.send(job)
        async with running(Worker(context, kinds={"evaluate_org": job_kind(flaky)})):
            for failures in (1, 2):

                async def hidden(failures: int = failures) -> bool:
                    return len(queue.receipts_of(message_id)) == failures and bool(
                        queue.visibility_of(queue.receipts_of(message_id)[-1])
                    )

                await eventually(hidden, what=f"the backoff after failure {failures}")
                receipt = queue.receipts_of(message_id)[-1]
                [delay] = queue.visibility_of(receipt)
                low, high = backoff_bounds(context.settings, failures)
                assert low <= delay <= high, (failures, delay)
                # SQS would show it again after `delay`; the test does not wait for that.
                await make_visible(sqs, queue_url, receipt)

            async def deleted() -> bool:
                return len(queue.deleted) == 1

            await eventually(deleted, what="the job to succeed and be deleted")

    assert attempts == [job, job, job]
    receipts = queue.receipts_of(message_id)
    assert [m.receive_count for m in receipts] == [1, 2, 3]
    assert queue.deleted == [receipts[-1].receipt_handle], "deleted with the latest receipt"
    assert await queue_counts(sqs, queue_url) == (0, 0)
    assert await queue_counts(sqs, dlq_url(sqs, queue_url)) == (0, 0)


async def test_exhausted_attempts_call_on_exhausted_once_and_delete_the_message(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    exhausted: list[tuple[EvaluateOrg, str]] = []
    attempts: list[EvaluateOrg] = []

    async def broken(context: AppContext, job: EvaluateOrg, control: JobControl) -> None:
        attempts.append(job)
        raise ValueError(f"boom {len(attempts)}")

    async with recording_context(
        make_settings(
            postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=0, job_max_attempts=3
        )
    ) as (context, queue):
        job = evaluate_job()
        message_id = await queue.send(job)
        kind = job_kind(broken, exhausted=exhausted)
        async with running(Worker(context, kinds={"evaluate_org": kind})):

            async def recorded() -> bool:
                return bool(exhausted) and bool(queue.deleted)

            await eventually(recorded, what="on_exhausted and the delete")

    assert len(attempts) == 3
    assert exhausted == [(job, "ValueError: boom 3")]
    receipts = queue.receipts_of(message_id)
    assert [m.receive_count for m in receipts] == [1, 2, 3]
    assert queue.deleted == [receipts[-1].receipt_handle]
    assert await queue_counts(sqs, queue_url) == (0, 0)
    assert await queue_counts(sqs, dlq_url(sqs, queue_url)) == (0, 0), "not left for the DLQ"


async def test_exhausted_real_job_marks_the_batch_failed_counting_failures_on_the_batch(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id, questions=1, engines=("openai",), locations=("US",))
    attempts: list[EvaluateOrg] = []

    async def broken(context: AppContext, job: EvaluateOrg, control: JobControl) -> None:
        attempts.append(job)
        raise RuntimeError("engine fleet unavailable")

    fast = settings.model_copy(update={"job_retry_base_seconds": 0})
    kind = dataclasses.replace(evaluate_org_kind(fast), handle=broken)
    batch_id = await trigger(api, setup.org_id)
    async with (
        AppContext.create(fast) as worker_context,
        running(Worker(worker_context, kinds={"evaluate_org": kind})),
    ):
        await wait_for_batch(api, batch_id, statuses=("failed",), limit=20)
        await wait_queue_empty(sqs, str(settings.sqs_queue_url))
    # Read once the message is gone: the failure's step is recorded before the delete.
    batch = expect(await api.get(f"/batches/{batch_id}"), 200)

    assert len(attempts) == settings.job_max_attempts == 3
    assert batch["error"] == "retries_exhausted: RuntimeError: engine fleet unavailable", batch
    assert batch["job_failures"] == 3
    steps = {step["name"]: step for step in batch["steps"]}
    assert steps["mark_batch_failed"]["status"] == "completed", steps
    assert batch["charged_runs"] == 0
    assert batch["reserved"] == "0.000000", "a failed batch gives its reservation back"
    partner = expect(await api.get(f"/partners/{partner_id}"), 200)
    assert (partner["balance"], partner["reserved"]) == ("10.000000", "0.000000")
    assert await queue_counts(sqs, dlq_url(sqs, str(settings.sqs_queue_url))) == (0, 0)


class CapturedLines(logging.Handler):
    """JSON lines exactly as LOG_JSON=true would print them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def captured() -> Any:
    handler = CapturedLines()
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    root.setLevel(logging.INFO)
    yield handler
    root.setLevel(previous)
    root.removeHandler(handler)


async def test_job_failure_log_lines_carry_org_batch_and_message_ids(
    postgres_url: str, queue_url: str, sqs_endpoint: str, captured: CapturedLines
) -> None:
    exhausted: list[tuple[EvaluateOrg, str]] = []

    async def broken(context: AppContext, job: EvaluateOrg, control: JobControl) -> None:
        raise RuntimeError("transient failure")

    async with recording_context(
        make_settings(
            postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=0, job_max_attempts=2
        )
    ) as (context, queue):
        job = evaluate_job()
        message_id = await queue.send(job)
        kind = job_kind(broken, max_attempts=2, exhausted=exhausted)
        async with running(Worker(context, kinds={"evaluate_org": kind})):

            async def done() -> bool:
                return bool(exhausted) and bool(queue.deleted)

            await eventually(done, what="the job to be exhausted")

    failures = [line for line in captured.lines if line["msg"].startswith("job failed")]
    assert [line["msg"] for line in failures] == [
        "job failed; retrying",
        "job failed; attempts exhausted",
    ]
    assert [line["failures"] for line in failures] == [1, 2]
    for line in failures:
        assert line.get("sqs_message_id") == message_id, line
        assert line.get("org_id") == str(job.org_id), f"no org_id on a job event: {line}"
        assert line.get("batch_id") == str(job.batch_id), f"no batch_id on a job event: {line}"
        assert line["error"] == "RuntimeError: transient failure"


# ---------------------------------------------------------------------------------------------
# Malformed messages
# ---------------------------------------------------------------------------------------------

MALFORMED_BODIES = (
    "not json",
    '{"type":"evaluate_org"}',
    '{"type":"unknown"}',
    json.dumps(
        {
            "type": "evaluate_org",
            "version": 2,
            "org_id": str(uuid.uuid4()),
            "batch_id": str(uuid.uuid4()),
        }
    ),
)


async def test_malformed_messages_go_to_the_dlq_and_the_worker_keeps_working(
    api: httpx.AsyncClient,
    postgres_url: str,
    queue_url: str,
    sqs_endpoint: str,
    sqs: SQSClient,
) -> None:
    dead_letters = dlq_url(sqs, queue_url)
    malformed_ids = set()
    for body in MALFORMED_BODIES:
        sent = await asyncio.to_thread(sqs.send_message, QueueUrl=queue_url, MessageBody=body)
        malformed_ids.add(sent["MessageId"])

    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id, questions=2, engines=("openai",), locations=("US",))

    # The real job kinds; malformed messages come straight back (JOB_RETRY_BASE_SECONDS=0).
    async with (
        recording_context(
            make_settings(postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=0)
        ) as (worker_context, queue),
        running(Worker(worker_context)),
    ):
        batch_id = await trigger(api, setup.org_id)
        batch = await wait_for_batch(api, batch_id, limit=20)
        assert batch["status"] == "completed", batch
        assert batch["completed_runs"] == batch["charged_runs"] == 2

        # Each malformed message is received MAX_RECEIVE_COUNT times, then redriven.
        async def all_dead_lettered() -> bool:
            return await queue_counts(sqs, dead_letters) == (len(MALFORMED_BODIES), 0)

        await eventually(all_dead_lettered, limit=30, what="malformed messages in the DLQ")
        await wait_queue_empty(sqs, queue_url)

    for message_id in malformed_ids:
        receipts = queue.receipts_of(message_id)
        assert [m.receive_count for m in receipts] == list(range(1, MAX_RECEIVE_COUNT + 1))
        assert not {m.receipt_handle for m in receipts} & set(queue.deleted), "deleted by worker"
    assert len(queue.deleted) == 1, "only the valid job's message is deleted"


# ---------------------------------------------------------------------------------------------
# The visibility heartbeat, timeouts, concurrency (time injected)
# ---------------------------------------------------------------------------------------------


async def test_the_heartbeat_keeps_a_long_job_hidden_on_schedule(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    clock = ManualClock()
    calls, gate = Calls(), asyncio.Event()
    visibility = 30
    settings = make_settings(
        postgres_url, queue_url, sqs_endpoint, sqs_visibility_timeout=visibility
    )
    async with recording_context(settings, clock) as (context, queue):
        message_id = await queue.send(evaluate_job())
        worker = Worker(context, kinds={"evaluate_org": job_kind(gated(calls, gate))})
        async with running(worker):

            async def started() -> bool:
                return calls.running == 1

            await eventually(started, what="the job to start")
            [receipt] = queue.receipts_of(message_id)
            for beat in range(1, 4):
                # Reconciler, heartbeat and timeout sleep on the clock.
                await clock.wait_for_sleepers(3)
                clock.advance(visibility / 3)

                async def extended(beat: int = beat) -> bool:
                    return len(queue.visibility_of(receipt)) == beat

                await eventually(extended, what=f"heartbeat {beat}")
            assert queue.visibility_of(receipt) == [visibility] * 3
            assert await queue_counts(sqs, queue_url) == (0, 1), "hidden all along"
            gate.set()
            await eventually(lambda: len(queue.deleted) == 1, what="the delete")

    assert (calls.finished, calls.cancelled) == (1, 0)
    assert [m.receive_count for m in queue.receipts_of(message_id)] == [1]


def beats_at_least(queue: RecordingQueue, beats: int) -> bool:
    return len(queue.visibility) >= beats


class UnreachableVisibility(RecordingQueue):
    """SQS answers receives but not visibility changes (a network partition on that call)."""

    async def change_visibility(self, receipt_handle: str, timeout_seconds: int) -> None:
        self.visibility.append((receipt_handle, timeout_seconds))
        raise ConnectionError("SQS is unreachable")


async def test_a_heartbeat_that_keeps_failing_stops_its_job_before_the_message_reappears(
    postgres_url: str, queue_url: str, sqs_endpoint: str, captured: CapturedLines
) -> None:
    clock = ManualClock()
    calls, gate = Calls(), asyncio.Event()
    visibility = 30
    settings = make_settings(
        postgres_url, queue_url, sqs_endpoint, sqs_visibility_timeout=visibility
    )
    async with recording_context(settings, clock, queue_type=UnreachableVisibility) as (
        context,
        queue,
    ):
        await queue.send(evaluate_job())
        worker = Worker(context, kinds={"evaluate_org": job_kind(gated(calls, gate))})
        async with running(worker):
            await eventually(lambda: calls.running == 1, what="the job to start")
            # The first beat fails, then retries after 1 s and 2 s: the third failure in a row
            # (LOOP_MAX_FAILURES) gives up, long before the 30 s visibility runs out.
            for beat, wait in enumerate((visibility / 3, 1.0, 2.0), start=1):
                await clock.wait_for_sleepers(3)
                clock.advance(wait)
                await eventually(partial(beats_at_least, queue, beat), what=f"beat {beat}")
            await eventually(lambda: calls.cancelled == 1, what="the job to be stopped")

    assert calls.finished == 0
    assert clock.monotonic() < visibility
    loop_lines = [line for line in captured.lines if line.get("loop") == "sqs_visibility_heartbeat"]
    assert [line["msg"] for line in loop_lines] == [
        "background loop iteration failed; retrying",
        "background loop iteration failed; retrying",
        "background loop gave up",
    ]
    assert all(line["error"] == "ConnectionError: SQS is unreachable" for line in loop_lines)
    assert [line["failures"] for line in loop_lines] == [1, 2, 3]
    assert [line.get("retry_in_seconds") for line in loop_lines] == [1.0, 2.0, None]
    assert any(
        line["msg"] == "job interrupted; message released" and line["why"] == "visibility"
        for line in captured.lines
    )


async def test_concurrency_is_bounded_by_worker_concurrency(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    calls, gate = Calls(), asyncio.Event()
    async with recording_context(
        make_settings(postgres_url, queue_url, sqs_endpoint, worker_concurrency=2)
    ) as (context, queue):
        jobs = [evaluate_job() for _ in range(5)]
        for job in jobs:
            await queue.send(job)
        worker = Worker(context, kinds={"evaluate_org": job_kind(gated(calls, gate))})
        async with running(worker):

            async def two_running() -> bool:
                return calls.running == 2

            await eventually(two_running, what="two jobs running")
            assert len(queue.received) == 2, "nothing more is received while both slots are busy"
            gate.set()

            async def all_done() -> bool:
                return calls.finished == 5 and len(queue.deleted) == 5

            await eventually(all_done, what="5 jobs")

    assert calls.max_running == 2, f"{calls.max_running} handlers ran at once"
    assert sorted(str(j.batch_id) for j in calls.jobs) == sorted(str(j.batch_id) for j in jobs)
    assert await queue_counts(sqs, queue_url) == (0, 0)
    assert all(m.receive_count == 1 for m in queue.received), "each job was received once"


# ---------------------------------------------------------------------------------------------
# The real job against held engine calls: timeout, drain, restarts
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def held_settings(
    postgres_url: str, queue_url: str, sqs_endpoint: str, emulator: EmulatorServer
) -> Settings:
    return held_settings_for(postgres_url, queue_url, sqs_endpoint, emulator)


async def test_a_job_past_its_timeout_is_cancelled_its_runs_handed_back_and_it_retries(
    api: httpx.AsyncClient,
    context: AppContext,
    held_settings: Settings,
    emulator: EmulatorServer,
    sqs: SQSClient,
) -> None:
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id, questions=3, engines=("openai",), locations=("US",))
    batch_id = await trigger(api, setup.org_id)
    clock = ManualClock()
    # Heartbeats every 100 s (a third of the visibility and of the lease), timeout at 300 s.
    settings = held_settings.model_copy(
        update={
            "job_timeout_seconds": 300,
            "sqs_visibility_timeout": 300,
            "run_lease_seconds": 300,
        }
    )
    async with (
        recording_context(settings, clock) as (worker_context, queue),
        running(Worker(worker_context)),
    ):
        await held_calls(emulator, LANES)
        for _ in range(3):
            # Reconciler, visibility heartbeat, lease heartbeat and timeout sleep on the clock.
            await clock.wait_for_sleepers(4)
            clock.advance(100)

        async def handed_back() -> bool:
            # The runs are handed back before the retry's delay is set: wait for both, or a
            # busy host sees the runs pending while the last visibility is still a heartbeat.
            retried = bool(queue.visibility) and queue.visibility[-1][1] < 300
            rows = await run_rows(context, batch_id)
            return retried and all(s == "pending" for s, _ in rows.values())

        await eventually(handed_back, what="the timed-out job's runs to be handed back")
        [receipt] = queue.received
        *heartbeats, delay = queue.visibility_of(receipt)
        assert len(heartbeats) >= 2, "hidden until it timed out"
        assert set(heartbeats) == {300}
        low, high = backoff_bounds(worker_context.settings, 1)
        assert low <= delay <= high
        assert await job_failures(context, batch_id) == 1
        # The held calls were abandoned, never answered (never paid).
        await eventually(
            lambda: statuses(emulator) == {CLIENT_WENT_AWAY: LANES}, what="calls abandoned"
        )

        # Once the backoff is over, the job runs again and completes.
        emulator.state.release()
        await make_visible(sqs, str(settings.sqs_queue_url), receipt)
        batch = await wait_for_batch(api, batch_id, limit=20)

    assert batch["status"] == "completed", batch
    assert batch["job_failures"] == 1
    assert sum(answered(emulator).values()) == 3 == batch["charged_runs"]
    assert (await run_stats(context, batch_id))["max_attempts"] <= 2


async def test_a_drain_starts_no_run_after_the_stop(
    api: httpx.AsyncClient,
    context: AppContext,
    held_settings: Settings,
    emulator: EmulatorServer,
    sqs: SQSClient,
) -> None:
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id, questions=5, engines=("openai",), locations=("US",))
    batch_id = await trigger(api, setup.org_id)
    clock = ManualClock()
    async with AppContext.create(held_settings, clock) as worker_context:
        worker = Worker(worker_context)
        task = asyncio.create_task(worker.run())
        await held_calls(emulator, LANES)
        worker.request_stop()
        emulator.state.release()  # the runs in flight finish within the drain period
        await asyncio.wait_for(task, 20)

    rows = await run_rows(context, batch_id)
    statuses = Counter(status for status, _ in rows.values())
    assert statuses == {"completed": LANES, "pending": 5 - LANES}, statuses
    assert sum(answered(emulator).values()) == LANES, "no engine call after the stop"
    assert len(emulator.state.logged("openai")) == LANES
    assert all(attempts == 0 for status, attempts in rows.values() if status == "pending")
    batch = expect(await api.get(f"/batches/{batch_id}"), 200)
    assert (batch["status"], batch["job_failures"]) == ("running", 0)
    # Released for another worker at once: visible again.
    assert await queue_counts(sqs, str(held_settings.sqs_queue_url)) == (1, 0)


async def test_four_graceful_restarts_then_one_transient_error_and_the_batch_completes(
    api: httpx.AsyncClient,
    context: AppContext,
    held_settings: Settings,
    emulator: EmulatorServer,
    sqs: SQSClient,
) -> None:
    """Restarts use up the queue's maxReceiveCount (4), so SQS moves the message to the DLQ;
    the reconciler sends it back at once. One transient failure is the batch's first of 3,
    and the retry completes it: no restart counted against it."""
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    # 10 runs: each restart finishes the 2 in flight (RUN_CONCURRENCY), 2 are left at the end.
    setup = await create_org(api, partner_id, questions=5, engines=("openai",))
    batch_id = await trigger(api, setup.org_id)
    settings = held_settings.model_copy(update={"job_retry_base_seconds": 0})

    for restart in range(4):
        emulator.state.configure(EmulatorConfig(hold=True))
        async with AppContext.create(settings, ManualClock()) as worker_context:
            worker = Worker(worker_context, worker_id=f"restart-{restart}")
            task = asyncio.create_task(worker.run())
            await held_or_redriven(emulator, worker)
            worker.request_stop()  # SIGTERM: the runs in flight finish, the rest waits
            emulator.state.release()
            await asyncio.wait_for(task, 20)
    assert await job_failures(context, batch_id) == 0, "restarts are not failures"
    assert expect(await api.get(f"/batches/{batch_id}"), 200)["status"] == "running"

    flaked: list[str] = []
    real = evaluate_org_kind(settings)

    async def once_flaky(context: AppContext, job: EvaluateOrg, control: JobControl) -> None:
        if not flaked:
            flaked.append(str(job.batch_id))
            raise ConnectionResetError("connection reset by peer")
        await real.handle(context, job, control)

    kind = dataclasses.replace(real, handle=once_flaky)
    async with AppContext.create(settings) as worker_context:
        worker = Worker(worker_context, kinds={"evaluate_org": kind})
        async with running(worker):

            async def finished() -> bool:
                await worker.reconciler.redrive_dead_letters()
                status: str = expect(await api.get(f"/batches/{batch_id}"), 200)["status"]
                return status != "running"

            await eventually(finished, what="the batch to finish")
            batch = expect(await api.get(f"/batches/{batch_id}"), 200)

    assert flaked == [batch_id]
    assert batch["status"] == "completed", batch
    assert batch["job_failures"] == 1
    assert batch["completed_runs"] == batch["charged_runs"] == 10
    assert len(emulator.state.logged("openai")) == 10, "every run asked once"
    async with context.sessions() as session:
        redrives = await session.scalar(
            select(EvaluationBatch.job_redrives).where(EvaluationBatch.id == uuid.UUID(batch_id))
        )
    assert redrives is not None
    assert redrives >= 1, "the restarts took the message to the DLQ at least once"


async def held_or_redriven(emulator: EmulatorServer, worker: Worker) -> None:
    """Until the worker's job holds engine calls; a message the restarts took to the DLQ is
    sent back as the reconciler does."""

    async def held() -> bool:
        if emulator.state.held > 0:
            return True
        await worker.reconciler.redrive_dead_letters()
        return False

    await eventually(held, what="engine calls held")


# ---------------------------------------------------------------------------------------------
# The reconciler: stranded batches and dead letters
# ---------------------------------------------------------------------------------------------


async def test_the_reconciler_sends_a_batch_whose_enqueue_failed(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance="10.00")
    setup = await create_org(api, partner_id, questions=1)
    batch_id = await trigger(api, setup.org_id)
    queue_url = str(settings.sqs_queue_url)
    # The job was never sent (as when SQS failed after the commit) ...
    await asyncio.to_thread(sqs.purge_queue, QueueUrl=queue_url)
    worker = Worker(context)
    await worker.reconciler.run_once()
    assert await queue_counts(sqs, queue_url) == (0, 0), "not stalled yet"
    # ... and the stall window has passed on the database's clock.
    async with context.sessions() as session:
        await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == uuid.UUID(batch_id))
            .values(last_enqueued_at=db_now(-2 * settings.stall_after_seconds))
        )
        await session.commit()
    await worker.reconciler.run_once()
    await worker.reconciler.run_once()  # a second pass sends nothing more
    assert await queue_counts(sqs, queue_url) == (1, 0)
    async with running(Worker(context)):
        batch = await wait_for_batch(api, batch_id)
    assert batch["status"] == "completed"
    assert batch["charged_runs"] == setup.runs


async def test_a_batch_whose_job_still_waits_in_the_queue_is_not_sent_again(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance="10.00")
    setup = await create_org(api, partner_id, questions=1)
    batch_id = await trigger(api, setup.org_id)
    queue_url = str(settings.sqs_queue_url)
    # A backlog longer than the stall window: the job has waited that long, unreceived.
    async with context.sessions() as session:
        await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == uuid.UUID(batch_id))
            .values(last_enqueued_at=db_now(-2 * settings.stall_after_seconds))
        )
        await session.commit()
    worker = Worker(context)
    await worker.reconciler.run_once()
    assert await queue_counts(sqs, queue_url) == (1, 0), "its job is still there: not re-sent"
    # Once no job waits in the queue, a batch nobody took up has lost its job: it is sent.
    await asyncio.to_thread(sqs.purge_queue, QueueUrl=queue_url)
    await worker.reconciler.run_once()
    assert await queue_counts(sqs, queue_url) == (1, 0)
    async with running(Worker(context)):
        batch = await wait_for_batch(api, batch_id)
    assert batch["status"] == "completed"


async def test_dead_letters_of_unfinished_batches_are_redriven_the_others_dropped(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    queue_url = str(settings.sqs_queue_url)
    dead_letters = dlq_url(sqs, queue_url)
    partner_id = await create_partner(api, balance="10.00")
    live = await create_org(api, partner_id, questions=1, name="Live")
    finished = await create_org(api, partner_id, questions=1, name="Finished")
    live_batch = await trigger(api, live.org_id)
    finished_batch = await trigger(api, finished.org_id)
    async with running(Worker(context)):
        await wait_for_batch(api, live_batch)
        await wait_for_batch(api, finished_batch)
    # The live batch is resumed (pending again) while an old copy of its job sits in the DLQ.
    async with context.sessions() as session:
        await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == uuid.UUID(live_batch))
            .values(status="pending")
        )
        await session.commit()
    for org_id, batch_id in ((live.org_id, live_batch), (finished.org_id, finished_batch)):
        job = EvaluateOrg(org_id=uuid.UUID(org_id), batch_id=uuid.UUID(batch_id))
        await asyncio.to_thread(
            sqs.send_message, QueueUrl=dead_letters, MessageBody=job.model_dump_json()
        )
    await asyncio.to_thread(sqs.send_message, QueueUrl=dead_letters, MessageBody="not json")

    worker = Worker(context)
    assert await worker.reconciler.redrive_dead_letters() == 1
    response = await asyncio.to_thread(
        sqs.receive_message, QueueUrl=queue_url, MaxNumberOfMessages=10
    )
    [redriven] = response["Messages"]
    assert json.loads(redriven["Body"])["batch_id"] == live_batch
    # The unreadable one stays in the DLQ for people to read (hidden for an hour).
    assert await queue_counts(sqs, dead_letters) == (0, 1)


async def test_a_worker_that_waited_long_for_another_still_keeps_the_leases_it_takes(
    api: httpx.AsyncClient,
    context: AppContext,
    held_settings: Settings,
    emulator: EmulatorServer,
) -> None:
    """While another worker holds the runs, this one waits; when it takes them over later, its
    lease heartbeat counts from then, not from when its job began."""
    partner_id = await create_partner(api, balance="10.00", price="0.05")
    setup = await create_org(api, partner_id, questions=2, engines=("openai",), locations=("US",))
    batch_id = await trigger(api, setup.org_id)
    async with context.sessions() as session:
        await session.execute(
            update(QuestionRun)
            .where(QuestionRun.batch_id == uuid.UUID(batch_id))
            .values(status="running", claimed_by="other", attempts=1, lease_expires_at=db_now(3600))
        )
        await session.commit()
    clock = ManualClock()
    # Leases renewed every 10 s; the message's visibility every 100 s.
    settings = held_settings.model_copy(
        update={"run_lease_seconds": 30, "sqs_visibility_timeout": 300}
    )
    async with (
        AppContext.create(settings, clock) as worker_context,
        running(Worker(worker_context)),
    ):
        # Reconciler, job timeout, visibility heartbeat, and the wait for the other worker.
        for _ in range(40):  # longer than the lease: a keeper made at the start would be stale
            await clock.wait_for_sleepers(4)
            clock.advance(1)
        async with context.sessions() as session:
            await session.execute(
                update(QuestionRun)
                .where(QuestionRun.batch_id == uuid.UUID(batch_id))
                .values(lease_expires_at=db_now(-1))
            )
            await session.commit()
        await clock.wait_for_sleepers(4)
        clock.advance(1)
        await held_calls(emulator, LANES)
        for _ in range(2):  # two lease heartbeats while the calls are held
            await clock.wait_for_sleepers(4)
            clock.advance(10)
        await clock.wait_for_sleepers(4)
        assert statuses(emulator) == {None: LANES}, "nothing abandoned"
        emulator.state.release()
        batch = await wait_for_batch(api, batch_id, limit=20)

    assert batch["status"] == "completed", batch
    assert sum(answered(emulator).values()) == 2
