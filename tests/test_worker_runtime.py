"""The SQS worker runtime (DESIGN §5) over real connections: moto's SQS server, Postgres, and
`senso worker` as a real process for SIGTERM.

What is checked: a SIGTERM drains and releases work so nothing is lost, JSON log lines carry
the job's ids, malformed messages reach the DLQ through the redrive policy while the worker
keeps going, retries back off through the message's visibility, exhausted jobs are recorded
and deleted, the heartbeat keeps a long job's message hidden, and concurrency is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
from mypy_boto3_sqs import SQSClient
from sqlalchemy import select

from app.context import AppContext
from app.db.models import QuestionRun
from app.evaluations.pipeline import fail_exhausted_job
from app.logging import JsonFormatter
from app.queue.messages import EvaluateOrg, Message
from app.queue.sqs import ReceivedMessage, SqsQueue
from app.settings import Settings
from devtools.embedded import run_worker_task
from tests.conftest import MAX_RECEIVE_COUNT, make_settings
from tests.db_checks import balance, run_stats
from tests.factories import OrgSetup, create_org, create_partner, expect, wait_for_batch
from tests.processes import WorkerProcess, worker_environment, worker_process
from worker.registry import JobKind
from worker.runtime import Worker

PRICE = Decimal("0.05")
START_BALANCE = Decimal("10.00")
# Settings of the `senso worker` subprocess: slow engines so a SIGTERM lands mid-job.
SUBPROCESS_LATENCY_MS = 500
SUBPROCESS_RUN_CONCURRENCY = 1


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


async def eventually(
    check: Callable[[], Awaitable[bool]], *, limit: float, what: str, interval: float = 0.05
) -> None:
    """Poll `check` until it holds; fail after `limit` seconds."""
    deadline = time.monotonic() + limit
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {limit}s waiting for {what}"
        await asyncio.sleep(interval)


async def queue_counts(sqs: SQSClient, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages on the queue."""
    response = await asyncio.to_thread(
        sqs.get_queue_attributes,
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )
    attributes = response["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


async def wait_queue_empty(sqs: SQSClient, queue_url: str, *, limit: float = 5) -> None:
    async def empty() -> bool:
        return await queue_counts(sqs, queue_url) == (0, 0)

    await eventually(empty, limit=limit, what=f"{queue_url} to be empty")


def dlq_url(sqs: SQSClient, queue_url: str) -> str:
    name = queue_url.rstrip("/").rsplit("/", 1)[1]
    return sqs.get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"]


async def run_rows(context: AppContext, batch_id: str) -> dict[uuid.UUID, tuple[str, int]]:
    """Every run of the batch: id → (status, attempts)."""
    async with context.sessions() as session:
        rows = (
            await session.execute(
                select(QuestionRun.id, QuestionRun.status, QuestionRun.attempts).where(
                    QuestionRun.batch_id == uuid.UUID(batch_id)
                )
            )
        ).all()
    return {run_id: (str(status), attempts) for run_id, status, attempts in rows}


async def trigger(api: httpx.AsyncClient, org_id: str) -> str:
    accepted = expect(await api.post(f"/orgs/{org_id}/evaluations"), 202)
    return str(accepted["batch_id"])


class RecordingQueue(SqsQueue):
    """The real SQS client, recording what the worker receives, deletes and hides."""

    def __init__(self, settings: Settings, queue_url: str) -> None:
        super().__init__(settings, queue_url)
        self.received: list[tuple[float, ReceivedMessage]] = []
        self.deleted: list[str] = []
        self.visibility: list[tuple[float, str, int]] = []

    async def receive(self, max_messages: int | None = None) -> list[ReceivedMessage]:
        messages = await super().receive(max_messages)
        now = time.monotonic()
        self.received.extend((now, message) for message in messages)
        return messages

    async def delete(self, receipt_handle: str) -> None:
        await super().delete(receipt_handle)
        self.deleted.append(receipt_handle)

    async def change_visibility(self, receipt_handle: str, timeout_seconds: int) -> None:
        self.visibility.append((time.monotonic(), receipt_handle, timeout_seconds))
        await super().change_visibility(receipt_handle, timeout_seconds)

    def receipts_of(self, message_id: str) -> list[ReceivedMessage]:
        return [m for _, m in self.received if m.message_id == message_id]


@contextlib.asynccontextmanager
async def recording_context(
    postgres_url: str, queue_url: str, sqs_endpoint: str, **overrides: object
) -> AsyncIterator[tuple[AppContext, RecordingQueue]]:
    settings = make_settings(postgres_url, queue_url, sqs_endpoint, **overrides)
    async with AppContext.create(settings) as context:
        context.require_queue().close()
        queue = RecordingQueue(settings, queue_url)
        context.queue = queue
        yield context, queue


@contextlib.asynccontextmanager
async def running(*workers: Worker) -> AsyncIterator[list[asyncio.Task[None]]]:
    """Run worker loops; on exit stop them as SIGTERM would and make sure they ended cleanly."""
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        yield tasks
    finally:
        for worker in workers:
            worker.request_stop()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert not pending, "a worker loop did not stop within 30 s"
        for task in done:
            task.result()  # re-raises if a worker loop crashed


def evaluate_job() -> EvaluateOrg:
    return EvaluateOrg(org_id=uuid.uuid4(), batch_id=uuid.uuid4(), reason="test")


@dataclass
class Calls:
    """What a custom handler saw."""

    at: list[float] = field(default_factory=list)
    jobs: list[Message] = field(default_factory=list)
    running: int = 0
    max_running: int = 0
    finished: int = 0


# ---------------------------------------------------------------------------------------------
# `senso worker` as a real process
# ---------------------------------------------------------------------------------------------


def subprocess_environment(settings: Settings, **overrides: str) -> dict[str, str]:
    return worker_environment(
        settings,
        SIMULATED_LATENCY_MS=str(SUBPROCESS_LATENCY_MS),
        RUN_CONCURRENCY=str(SUBPROCESS_RUN_CONCURRENCY),
        **overrides,
    )


async def wait_for_completed_runs(
    context: AppContext, batch_id: str, worker: WorkerProcess, *, at_least: int
) -> None:
    async def progressed() -> bool:
        assert worker.process.returncode is None, (
            f"worker exited early ({worker.process.returncode}):\n{worker.output()}"
        )
        return (await run_stats(context, batch_id))["completed"] >= at_least

    await eventually(progressed, limit=30, what=f"{at_least} completed runs")


async def sigterm_and_wait(worker: WorkerProcess, *, limit: float) -> tuple[int, float]:
    signalled = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.wait_for(worker.process.wait(), limit)
    except TimeoutError:
        raise AssertionError(
            f"worker still running {limit}s after SIGTERM:\n{worker.output()}"
        ) from None
    return code, time.monotonic() - signalled


def assert_job_lines_carry_ids(
    lines: list[dict[str, Any]], *, org_id: str, batch_id: str, sqs_message_id: str | None
) -> None:
    """Every line written while a job ran (pipeline and step events) names org, batch, message."""
    job_lines = [
        line for line in lines if str(line.get("logger", "")).startswith("app.evaluations")
    ]
    assert job_lines, "no job event was logged"
    assert {line["msg"] for line in job_lines} >= {"step started", "step completed"}
    for line in job_lines:
        assert line.get("org_id") == org_id, line
        assert line.get("batch_id") == batch_id, line
        assert line.get("sqs_message_id"), line
    message_ids = {line["sqs_message_id"] for line in job_lines}
    assert len(message_ids) == 1, message_ids
    if sqs_message_id is not None:
        assert message_ids == {sqs_message_id}
    started = {line["step"] for line in job_lines if line["msg"] == "step started"}
    assert {"get_or_create_batch", "check_balance", "start_batch", "run_question_matrix"} <= started
    assert all(line["level"] in {"DEBUG", "INFO", "WARNING", "ERROR"} for line in lines)
    assert any(line["msg"] == "worker started" for line in lines)
    assert any(line["msg"] == "stop requested; draining" for line in lines)
    assert any(line["msg"] == "worker stopped" for line in lines)


async def test_sigterm_mid_job_releases_work_and_a_new_worker_finishes_it(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance=str(START_BALANCE), price=str(PRICE))
    setup = await create_org(api, partner_id)  # 5 questions x 3 engines x 2 locations
    assert setup.runs == 30
    batch_id = await trigger(api, setup.org_id)
    queue_url = str(settings.sqs_queue_url)

    env = subprocess_environment(settings, WORKER_DRAIN_SECONDS="1")
    async with worker_process(env) as worker:
        await wait_for_completed_runs(context, batch_id, worker, at_least=2)
        code, took = await sigterm_and_wait(worker, limit=15)
    # Stop = the long poll in progress (≤ 1 s) + the drain period (1 s) + releasing.
    assert code == 0, worker.output()
    assert took < 8, f"SIGTERM to exit took {took:.1f}s"
    lines = worker.json_lines()
    assert any(line["msg"] == "drain period over; releasing unfinished jobs" for line in lines)

    # The message was released (visibility 0): visible again at once, nothing in flight.
    assert await queue_counts(sqs, queue_url) == (1, 0)
    received = await asyncio.to_thread(
        sqs.receive_message,
        QueueUrl=queue_url,
        MaxNumberOfMessages=1,
        WaitTimeSeconds=0,
        MessageSystemAttributeNames=["ApproximateReceiveCount"],
    )
    [message] = received["Messages"]
    assert json.loads(message["Body"])["batch_id"] == batch_id
    assert message["Attributes"]["ApproximateReceiveCount"] == "2"  # the worker's, then ours
    await asyncio.to_thread(
        sqs.change_message_visibility,
        QueueUrl=queue_url,
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    assert_job_lines_carry_ids(
        lines, org_id=setup.org_id, batch_id=batch_id, sqs_message_id=message["MessageId"]
    )

    # Unfinished runs were handed back: none is left `running` under the dead worker's lease.
    before = await run_rows(context, batch_id)
    statuses = Counter(status for status, _ in before.values())
    assert statuses["running"] == 0, statuses
    assert statuses["failed"] == 0, statuses
    assert statuses["completed"] >= 2, statuses
    assert statuses["pending"] > 0, f"the job finished before SIGTERM landed: {statuses}"
    assert statuses["completed"] + statuses["pending"] == 30
    released = {
        run for run, (status, attempts) in before.items() if status == "pending" and attempts
    }
    in_flight = SUBPROCESS_RUN_CONCURRENCY * 3  # a lane of RUN_CONCURRENCY per engine
    assert len(released) <= in_flight, "only in-flight runs may be repeated"
    assert all(attempts == 1 for status, attempts in before.values() if status == "completed"), (
        before
    )
    stats = await run_stats(context, batch_id)
    assert stats["ledger"] == 0
    assert await balance(context, partner_id) == START_BALANCE
    interrupted = expect(await api.get(f"/batches/{batch_id}"), 200)
    assert interrupted["status"] == "running", interrupted

    # A fresh worker picks the released message up and finishes the batch, repeating nothing.
    async with run_worker_task(context):
        batch = await wait_for_batch(api, batch_id, limit=30)
        await wait_queue_empty(sqs, queue_url)
    assert batch["status"] == "completed", batch
    after = await run_rows(context, batch_id)
    assert {status for status, _ in after.values()} == {"completed"}
    for run, (_, attempts) in after.items():
        assert attempts == (2 if run in released else 1), (run, attempts, run in released)
    stats = await run_stats(context, batch_id)
    assert stats["total"] == stats["completed"] == stats["ledger"] == 30
    assert batch["charged_runs"] == 30
    assert await balance(context, partner_id) == START_BALANCE - 30 * PRICE


async def test_sigterm_with_a_long_drain_lets_the_job_finish_and_deletes_the_message(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance=str(START_BALANCE), price=str(PRICE))
    setup: OrgSetup = await create_org(
        api, partner_id, questions=3, engines=("openai",), locations=("US", "GB")
    )
    batch_id = await trigger(api, setup.org_id)
    queue_url = str(settings.sqs_queue_url)

    env = subprocess_environment(settings, WORKER_DRAIN_SECONDS="30")
    async with worker_process(env) as worker:
        await wait_for_completed_runs(context, batch_id, worker, at_least=1)
        code, took = await sigterm_and_wait(worker, limit=20)
    assert code == 0, worker.output()
    assert took < 15, f"SIGTERM to exit took {took:.1f}s"

    batch = expect(await api.get(f"/batches/{batch_id}"), 200)
    assert batch["status"] == "completed", batch
    assert batch["completed_runs"] == batch["charged_runs"] == setup.runs == 6
    assert await queue_counts(sqs, queue_url) == (0, 0), "the finished job's message is deleted"
    stats = await run_stats(context, batch_id)
    assert stats["max_attempts"] == 1
    assert stats["ledger"] == 6
    assert await balance(context, partner_id) == START_BALANCE - 6 * PRICE

    lines = worker.json_lines()
    assert not any(line["msg"].startswith("drain period over") for line in lines)
    assert_job_lines_carry_ids(lines, org_id=setup.org_id, batch_id=batch_id, sqs_message_id=None)
    completed = [line for line in lines if line["msg"] == "batch completed"]
    assert len(completed) == 1, completed
    assert completed[0]["batch_id"] == batch_id, completed


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
    context: AppContext,
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

    partner_id = await create_partner(api, balance=str(START_BALANCE), price=str(PRICE))
    setup = await create_org(api, partner_id, questions=2, engines=("openai",), locations=("US",))

    # The real registry; malformed messages come back after JOB_RETRY_BASE_SECONDS=1.
    async with (
        recording_context(postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=1) as (
            worker_context,
            queue,
        ),
        running(Worker(worker_context)),
    ):

        async def malformed_seen() -> bool:
            return {m.message_id for _, m in queue.received} >= malformed_ids

        await eventually(malformed_seen, limit=10, what="the malformed messages to be received")
        batch_id = await trigger(api, setup.org_id)  # a valid job, sent after them
        batch = await wait_for_batch(api, batch_id, limit=20)
        assert batch["status"] == "completed", batch
        assert batch["completed_runs"] == batch["charged_runs"] == 2

        # Each malformed message is received MAX_RECEIVE_COUNT times, then redriven.
        async def all_dead_lettered() -> bool:
            return await queue_counts(sqs, dead_letters) == (len(MALFORMED_BODIES), 0)

        await eventually(
            all_dead_lettered, limit=30, interval=0.25, what="malformed messages in the DLQ"
        )
        await wait_queue_empty(sqs, queue_url)

    for message_id in malformed_ids:
        receipts = queue.receipts_of(message_id)
        assert [m.receive_count for m in receipts] == list(range(1, MAX_RECEIVE_COUNT + 1))
        assert not {m.receipt_handle for m in receipts} & set(queue.deleted), "deleted by worker"
    assert len(queue.deleted) == 1, "only the valid job's message is deleted"

    bodies: list[str] = []
    for _ in range(3):
        response = await asyncio.to_thread(
            sqs.receive_message, QueueUrl=dead_letters, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        bodies.extend(m["Body"] for m in response.get("Messages", []))
        if len(bodies) >= len(MALFORMED_BODIES):
            break
    assert sorted(bodies) == sorted(MALFORMED_BODIES)


# ---------------------------------------------------------------------------------------------
# Retries through visibility, exhausted attempts
# ---------------------------------------------------------------------------------------------


def backoff_ceiling(settings: Settings, receive_count: int) -> float:
    """The ceiling of the capped exponential backoff after the `receive_count`-th attempt."""
    return float(
        min(
            settings.job_retry_max_seconds,
            settings.job_retry_base_seconds * 2 ** (receive_count - 1),
        )
    )


def backoff_floor(settings: Settings, receive_count: int) -> float:
    """The lower bound of the jittered backoff the runtime promises: half its ceiling."""
    return backoff_ceiling(settings, receive_count) / 2


async def test_retryable_failure_backs_off_through_visibility_then_succeeds(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    calls = Calls()
    failures = 2

    async def flaky(context: AppContext, job: Message, worker_id: str) -> None:
        calls.at.append(time.monotonic())
        calls.jobs.append(job)
        if len(calls.at) <= failures:
            raise RuntimeError(f"transient failure {len(calls.at)}")
        calls.finished += 1

    async def never(context: AppContext, job: Message, error: str) -> None:
        raise AssertionError(f"on_exhausted must not run: {error}")

    async with recording_context(
        postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=2, job_max_attempts=3
    ) as (context, queue):
        worker = Worker(
            context, registry={"evaluate_org": JobKind(handle=flaky, on_exhausted=never)}
        )
        job = evaluate_job()
        message_id = await queue.send(job)
        async with running(worker):

            async def deleted() -> bool:
                return calls.finished == 1 and len(queue.deleted) == 1

            await eventually(deleted, limit=20, what="the job to succeed and be deleted")
        settings = context.settings

    assert len(calls.at) == failures + 1
    assert all(j == job for j in calls.jobs)
    receipts = queue.receipts_of(message_id)
    assert [m.receive_count for m in receipts] == [1, 2, 3], "redelivered by SQS each time"
    # After each failure the message was hidden for a backoff delay, and SQS honoured it.
    delays = [(at, handle, seconds) for at, handle, seconds in queue.visibility]
    assert [handle for _, handle, _ in delays] == [m.receipt_handle for m in receipts[:failures]]
    for attempt, (_, _, seconds) in enumerate(delays, start=1):
        assert backoff_floor(settings, attempt) <= seconds <= backoff_ceiling(settings, attempt)
    for attempt in range(1, failures + 1):
        gap = calls.at[attempt] - calls.at[attempt - 1]
        assert gap >= delays[attempt - 1][2] - 0.05, (attempt, gap, delays)
        assert gap >= backoff_floor(settings, attempt) - 0.05, (attempt, gap)
    assert queue.deleted == [receipts[-1].receipt_handle], "deleted with the latest receipt"
    assert await queue_counts(sqs, queue_url) == (0, 0)
    assert await queue_counts(sqs, dlq_url(sqs, queue_url)) == (0, 0)


async def test_first_retry_waits_at_least_half_the_base_delay(
    postgres_url: str, queue_url: str, sqs_endpoint: str
) -> None:
    """With JOB_RETRY_BASE_SECONDS=1 the first retry must not be immediate (≥ 0.5 s)."""
    calls = Calls()

    async def fails_once(context: AppContext, job: Message, worker_id: str) -> None:
        calls.at.append(time.monotonic())
        if len(calls.at) == 1:
            raise RuntimeError("transient failure")
        calls.finished += 1

    async def never(context: AppContext, job: Message, error: str) -> None:
        raise AssertionError(error)

    async with recording_context(
        postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=1
    ) as (context, queue):
        kind = JobKind(handle=fails_once, on_exhausted=never)
        await queue.send(evaluate_job())
        async with running(Worker(context, registry={"evaluate_org": kind})):

            async def done() -> bool:
                return calls.finished == 1

            await eventually(done, limit=15, what="the retried job to succeed")
        settings = context.settings

    [(_, _, delay)] = queue.visibility
    assert delay >= backoff_floor(settings, 1), (
        f"first retry delay {delay}s is below the jittered backoff floor "
        f"{backoff_floor(settings, 1)}s (base {settings.job_retry_base_seconds}s)"
    )
    assert calls.at[1] - calls.at[0] >= backoff_floor(settings, 1)


async def test_exhausted_attempts_call_on_exhausted_once_and_delete_the_message(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    calls = Calls()
    exhausted: list[tuple[Message, str]] = []

    async def broken(context: AppContext, job: Message, worker_id: str) -> None:
        calls.at.append(time.monotonic())
        raise ValueError(f"boom {len(calls.at)}")

    async def record(context: AppContext, job: Message, error: str) -> None:
        exhausted.append((job, error))

    async with recording_context(
        postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=1, job_max_attempts=3
    ) as (context, queue):
        job = evaluate_job()
        message_id = await queue.send(job)
        kind = JobKind(handle=broken, on_exhausted=record)
        async with running(Worker(context, registry={"evaluate_org": kind})):

            async def recorded() -> bool:
                return bool(exhausted) and bool(queue.deleted)

            await eventually(recorded, limit=20, what="on_exhausted and the delete")
            await asyncio.sleep(1.5)  # nothing more happens to that message

    assert len(calls.at) == 3 == context.settings.job_max_attempts
    assert exhausted == [(job, "ValueError: boom 3")]
    receipts = queue.receipts_of(message_id)
    assert [m.receive_count for m in receipts] == [1, 2, 3]
    assert queue.deleted == [receipts[-1].receipt_handle]
    assert await queue_counts(sqs, queue_url) == (0, 0)
    assert await queue_counts(sqs, dlq_url(sqs, queue_url)) == (0, 0), "not left for the DLQ"


async def test_exhausted_real_job_marks_the_batch_failed(
    api: httpx.AsyncClient, context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    partner_id = await create_partner(api, balance=str(START_BALANCE), price=str(PRICE))
    setup = await create_org(api, partner_id, questions=1, engines=("openai",), locations=("US",))
    attempts: list[Message] = []

    async def broken(context: AppContext, job: Message, worker_id: str) -> None:
        attempts.append(job)
        raise RuntimeError("engine fleet unavailable")

    registry = {"evaluate_org": JobKind(handle=broken, on_exhausted=fail_exhausted_job)}
    batch_id = await trigger(api, setup.org_id)
    async with running(Worker(context, registry=registry)):
        batch = await wait_for_batch(api, batch_id, statuses=("failed",), limit=20)
        await wait_queue_empty(sqs, str(settings.sqs_queue_url))

    assert len(attempts) == settings.job_max_attempts
    assert {str(job.batch_id) for job in attempts} == {batch_id}
    assert batch["error"] == "retries_exhausted: RuntimeError: engine fleet unavailable", batch
    steps = {step["name"]: step for step in batch["steps"]}
    assert steps["mark_batch_failed"]["status"] == "completed", steps
    assert batch["charged_runs"] == 0
    assert await balance(context, partner_id) == START_BALANCE
    assert await queue_counts(sqs, dlq_url(sqs, str(settings.sqs_queue_url))) == (0, 0)


class CapturedLines(logging.Handler):
    """JSON lines exactly as LOG_JSON=true would print them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_job_failure_log_lines_carry_org_batch_and_message_ids(
    postgres_url: str, queue_url: str, sqs_endpoint: str
) -> None:
    calls = Calls()
    exhausted: list[str] = []

    async def broken(context: AppContext, job: Message, worker_id: str) -> None:
        calls.at.append(time.monotonic())
        raise RuntimeError("transient failure")

    async def record(context: AppContext, job: Message, error: str) -> None:
        exhausted.append(error)

    runtime_logger = logging.getLogger("worker.runtime")
    captured = CapturedLines()
    runtime_logger.addHandler(captured)
    try:
        async with recording_context(
            postgres_url, queue_url, sqs_endpoint, job_retry_base_seconds=0, job_max_attempts=2
        ) as (context, queue):
            job = evaluate_job()
            message_id = await queue.send(job)
            kind = JobKind(handle=broken, on_exhausted=record)
            async with running(Worker(context, registry={"evaluate_org": kind})):

                async def done() -> bool:
                    return bool(exhausted) and bool(queue.deleted)

                await eventually(done, limit=15, what="the job to be exhausted")
    finally:
        runtime_logger.removeHandler(captured)

    failures = [line for line in captured.lines if line["msg"].startswith("job failed")]
    assert [line["msg"] for line in failures] == [
        "job failed; retrying",
        "job failed; attempts exhausted",
    ]
    for line in failures:
        assert line.get("sqs_message_id") == message_id, line
        assert line.get("org_id") == str(job.org_id), f"no org_id on a job event: {line}"
        assert line.get("batch_id") == str(job.batch_id), f"no batch_id on a job event: {line}"


# ---------------------------------------------------------------------------------------------
# Heartbeat and concurrency
# ---------------------------------------------------------------------------------------------


async def set_queue_visibility(sqs: SQSClient, queue_url: str, seconds: int) -> None:
    await asyncio.to_thread(
        sqs.set_queue_attributes,
        QueueUrl=queue_url,
        Attributes={"VisibilityTimeout": str(seconds)},
    )


def slow_handler(calls: Calls, seconds: float) -> Callable[[AppContext, Message, str], Any]:
    async def handle(context: AppContext, job: Message, worker_id: str) -> None:
        calls.at.append(time.monotonic())
        calls.jobs.append(job)
        calls.running += 1
        calls.max_running = max(calls.max_running, calls.running)
        try:
            await asyncio.sleep(seconds)
        finally:
            calls.running -= 1
        calls.finished += 1

    return handle


async def never_exhausted(context: AppContext, job: Message, error: str) -> None:
    raise AssertionError(error)


async def test_heartbeat_keeps_a_long_job_from_being_redelivered(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    visibility = 5
    await set_queue_visibility(sqs, queue_url, visibility)
    calls = Calls()
    kind = JobKind(handle=slow_handler(calls, 7.0), on_exhausted=never_exhausted)
    async with recording_context(
        postgres_url, queue_url, sqs_endpoint, sqs_visibility_timeout=visibility
    ) as (context, queue):
        message_id = await queue.send(evaluate_job())
        first = Worker(context, registry={"evaluate_org": kind}, worker_id="first")
        second = Worker(context, registry={"evaluate_org": kind}, worker_id="second")
        async with running(first, second):

            async def deleted() -> bool:
                return calls.finished >= 1 and len(queue.deleted) >= 1

            await eventually(deleted, limit=20, what="the long job to finish")

    assert len(calls.at) == 1, "redelivered while the job was still running"
    assert [m.receive_count for m in queue.receipts_of(message_id)] == [1]
    heartbeats = [seconds for _, _, seconds in queue.visibility]
    assert len(heartbeats) >= 3, heartbeats
    assert set(heartbeats) == {visibility}, heartbeats
    assert await queue_counts(sqs, queue_url) == (0, 0)


async def test_heartbeat_holds_the_message_when_the_queue_default_visibility_is_shorter(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    """The worker's SQS_VISIBILITY_TIMEOUT governs its messages, whatever the queue's default
    (AWS's default is 30 s, the worker's 120 s: its first heartbeat would come after 40 s)."""
    await set_queue_visibility(sqs, queue_url, 1)
    calls = Calls()
    kind = JobKind(handle=slow_handler(calls, 3.0), on_exhausted=never_exhausted)
    async with recording_context(
        postgres_url, queue_url, sqs_endpoint, sqs_visibility_timeout=6
    ) as (context, queue):
        await queue.send(evaluate_job())
        first = Worker(context, registry={"evaluate_org": kind}, worker_id="first")
        second = Worker(context, registry={"evaluate_org": kind}, worker_id="second")
        async with running(first, second):

            async def finished() -> bool:
                return calls.finished >= 1 and len(queue.deleted) >= 1

            await eventually(finished, limit=15, what="the job to finish")
            await asyncio.sleep(0.5)

    assert len(calls.at) == 1, f"handler ran {len(calls.at)} times: redelivered mid-job"


async def test_concurrency_is_bounded_by_worker_concurrency(
    postgres_url: str, queue_url: str, sqs_endpoint: str, sqs: SQSClient
) -> None:
    calls = Calls()
    kind = JobKind(handle=slow_handler(calls, 0.6), on_exhausted=never_exhausted)
    async with recording_context(postgres_url, queue_url, sqs_endpoint, worker_concurrency=2) as (
        context,
        queue,
    ):
        jobs = [evaluate_job() for _ in range(5)]
        for job in jobs:
            await queue.send(job)
        async with running(Worker(context, registry={"evaluate_org": kind})):

            async def all_done() -> bool:
                return calls.finished == 5 and len(queue.deleted) == 5

            await eventually(all_done, limit=20, what="5 jobs")

    assert calls.max_running == 2, f"{calls.max_running} handlers ran at once"
    assert sorted(str(j.batch_id) for j in calls.jobs) == sorted(str(j.batch_id) for j in jobs)
    assert await queue_counts(sqs, queue_url) == (0, 0)
    assert all(m.receive_count == 1 for _, m in queue.received), "each job was received once"
