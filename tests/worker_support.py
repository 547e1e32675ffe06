"""Helpers for tests of the worker runtime: a queue that records what the worker does with its
messages, worker loops started and stopped as SIGTERM would, and waiting for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from mypy_boto3_sqs import SQSClient
from sqlalchemy import select

from app.clock import Clock
from app.context import AppContext
from app.db.models import QuestionRun
from app.queue.messages import EvaluateOrg
from app.queue.sqs import ReceivedMessage, SqsQueue
from app.settings import Settings
from devtools.emulator.config import EmulatorConfig
from devtools.emulator.server import EmulatorServer
from devtools.emulator.wiring import emulated_engine_settings
from tests.conftest import make_settings
from worker.runtime import Worker


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    *,
    limit: float = 20,
    what: str,
    interval: float = 0.02,
) -> None:
    """Poll `check` until it holds; fail after `limit` seconds (a deadline, not a duration)."""
    deadline = time.monotonic() + limit
    while True:
        outcome = check()
        if await outcome if inspect.isawaitable(outcome) else outcome:
            return
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


async def wait_queue_empty(sqs: SQSClient, queue_url: str, *, limit: float = 10) -> None:
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


class RecordingQueue(SqsQueue):
    """The real SQS client, recording what the worker receives, deletes and hides."""

    def __init__(self, settings: Settings, queue_url: str) -> None:
        super().__init__(settings, queue_url)
        self.received: list[ReceivedMessage] = []
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []  # (receipt handle, seconds)

    async def receive(
        self, max_messages: int | None = None, *, wait_seconds: int | None = None
    ) -> list[ReceivedMessage]:
        messages = await super().receive(max_messages, wait_seconds=wait_seconds)
        self.received.extend(messages)
        return messages

    async def delete(self, receipt_handle: str) -> None:
        await super().delete(receipt_handle)
        self.deleted.append(receipt_handle)

    async def change_visibility(self, receipt_handle: str, timeout_seconds: int) -> None:
        self.visibility.append((receipt_handle, timeout_seconds))
        await super().change_visibility(receipt_handle, timeout_seconds)

    def receipts_of(self, message_id: str) -> list[ReceivedMessage]:
        return [m for m in self.received if m.message_id == message_id]

    def visibility_of(self, message: ReceivedMessage) -> list[int]:
        return [seconds for handle, seconds in self.visibility if handle == message.receipt_handle]


@contextlib.asynccontextmanager
async def recording_context(
    settings: Settings,
    clock: Clock | None = None,
    *,
    queue_type: type[RecordingQueue] = RecordingQueue,
) -> AsyncIterator[tuple[AppContext, RecordingQueue]]:
    """A worker's context whose queue records what is done with its messages."""
    async with AppContext.create(settings, clock) as context:
        context.require_queue().close()
        queue = queue_type(settings, str(settings.sqs_queue_url))
        context.queue = queue
        try:
            yield context, queue
        finally:
            queue.close()


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


async def make_visible(sqs: SQSClient, queue_url: str, message: ReceivedMessage) -> None:
    """What waiting out a message's backoff would do, without the wait."""
    await asyncio.to_thread(
        sqs.change_message_visibility,
        QueueUrl=queue_url,
        ReceiptHandle=message.receipt_handle,
        VisibilityTimeout=0,
    )


# ---------------------------------------------------------------------------------------------
# Engine calls the emulator holds until the test lets them go
# ---------------------------------------------------------------------------------------------

LANES = 2  # RUN_CONCURRENCY of `held_settings`: runs in flight per engine


def held_settings_for(
    postgres_url: str, queue_url: str, sqs_endpoint: str, emulator: EmulatorServer
) -> Settings:
    """The openai engine's real client against the emulator, which holds every call until the
    test lets it go; no Redis, and a rate limit that never waits (a test may own the clock)."""
    emulator.state.configure(EmulatorConfig(hold=True))
    return make_settings(
        postgres_url,
        queue_url,
        sqs_endpoint,
        **emulated_engine_settings(emulator.url),
        redis_url=None,
        rate_limit_burst=1000,
        analysis_provider="simulated",
        run_concurrency=LANES,
        job_retry_base_seconds=4,
    )


async def held_calls(emulator: EmulatorServer, count: int) -> None:
    async def held() -> bool:
        return emulator.state.held == count

    await eventually(held, what=f"{count} engine calls held")


def statuses(emulator: EmulatorServer) -> Counter[int | None]:
    """Engine calls by how the emulator ended them (200 answered, 499 abandoned)."""
    return Counter(entry.status for entry in emulator.state.logged("openai"))


def answered(emulator: EmulatorServer) -> Counter[str]:
    """Engine calls answered, by question."""
    return Counter(
        entry.body["messages"][-1]["content"]
        for entry in emulator.state.logged("openai")
        if entry.status == 200
    )
