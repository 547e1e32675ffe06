"""The SQS worker: receive, dispatch by message type, supervise, drain on SIGTERM.

Each job runs as a task of its own with two guards: a supervised heartbeat that keeps its
message hidden, and its kind's timeout, both on the injected clock. How a job ends decides what
happens to its message:
- done: deleted;
- failed (raised, or past its timeout): the failure is counted with the job's work
  (`JobKind.record_failure`), then the message hides for a backoff delay, or, once the kind's
  attempts are used up, `on_exhausted` records the end and the message is deleted;
- interrupted (the worker drains, or its message could no longer be kept hidden): released at
  once, no attempt used.
A reconciler loop re-sends stranded work and redrives dead letters of unfinished jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from app.clock import Clock, sleep_until_set
from app.context import AppContext
from app.errors import describe_error
from app.jobs import JobControl, JobInterruptedError, JobKind
from app.logging import log_context
from app.loops import LoopGaveUpError, LoopPolicy, LoopService
from app.metrics import observe_job
from app.queue.messages import Message, parse_message
from app.queue.sqs import ReceivedMessage, SqsQueue
from worker.registry import job_kinds

logger = logging.getLogger(__name__)

RECEIVE_RETRY_SECONDS = 2.0
# A dead letter that cannot be redriven (unreadable, or its kind declined) stays in the DLQ for
# people to read; hidden this long so each reconciler pass does not receive it again.
DEAD_LETTER_HIDE_SECONDS = 3600
DEAD_LETTERS_PER_PASS = 100

CancelReason = Literal["drain", "timeout", "visibility"]


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(eq=False)  # each job is its own: kept in a set by identity
class _RunningJob:
    handler: asyncio.Task[None]
    cancelled_for: CancelReason | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def cancel(self, reason: CancelReason) -> None:
        if not self.handler.done() and self.cancelled_for is None:
            self.cancelled_for = reason
            self.handler.cancel()


class Worker:
    def __init__(
        self,
        context: AppContext,
        *,
        kinds: Mapping[str, JobKind[Any]] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._context = context
        self._settings = context.settings
        self._clock = context.clock
        self._queue: SqsQueue = context.require_queue()
        self._kinds = kinds if kinds is not None else job_kinds(context.settings)
        self.worker_id = worker_id or new_worker_id()
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._jobs: set[_RunningJob] = set()
        self.reconciler = Reconciler(context, self._queue, self._kinds)

    def request_stop(self) -> None:
        """Stop receiving and claiming; in-flight work gets the drain period to finish."""
        if not self._stopping.is_set():
            logger.info("stop requested; draining", extra={"in_flight": len(self._in_flight)})
            self._stopping.set()

    async def run(self) -> None:
        logger.info(
            "worker started",
            extra={"worker_id": self.worker_id, "concurrency": self._settings.worker_concurrency},
        )
        reconciler = asyncio.create_task(self.reconciler.run(self._stopping))
        try:
            late = await self._receive_until_stopped()
            # The drain starts with the stop; a long poll still under way is waited for
            # meanwhile, and whatever it brings goes straight back.
            await asyncio.gather(self._drain(), self._release_late(late))
        except asyncio.CancelledError:
            # Cancelled outright rather than asked to stop: cut jobs short, release their messages.
            await self._cancel_in_flight()
            raise
        finally:
            reconciler.cancel()
            await asyncio.gather(reconciler, return_exceptions=True)
        logger.info("worker stopped", extra={"worker_id": self.worker_id})

    async def _receive_until_stopped(self) -> asyncio.Task[list[ReceivedMessage]] | None:
        """Receive and start jobs until the stop; returns a receive still under way then."""
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                free = self._settings.worker_concurrency - len(self._in_flight)
                if free <= 0:
                    await asyncio.wait({stop, *self._in_flight}, return_when="FIRST_COMPLETED")
                    continue
                receive = asyncio.create_task(self._queue.receive(free))
                await asyncio.wait({stop, receive}, return_when="FIRST_COMPLETED")
                if not receive.done():
                    return receive
                try:
                    messages = receive.result()
                except Exception as exc:
                    logger.warning(
                        "receive failed; retrying shortly", extra={"error": describe_error(exc)}
                    )
                    await sleep_until_set(self._clock, self._stopping, RECEIVE_RETRY_SECONDS)
                    continue
                for message in messages:
                    if self._stopping.is_set():
                        await self._set_visibility(message, 0)
                    else:
                        self._start(message)
            return None
        finally:
            stop.cancel()

    async def _release_late(self, receive: asyncio.Task[list[ReceivedMessage]] | None) -> None:
        if receive is None:
            return
        try:
            messages = await receive
        except Exception as exc:
            logger.warning("receive failed while stopping", extra={"error": describe_error(exc)})
            return
        for message in messages:
            await self._set_visibility(message, 0)

    def _start(self, message: ReceivedMessage) -> None:
        task = asyncio.create_task(self._process(message))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        drained = asyncio.ensure_future(asyncio.wait(set(self._in_flight)))
        if not await _finished_within(self._clock, drained, self._settings.worker_drain_seconds):
            logger.warning(
                "drain period over; releasing unfinished jobs",
                extra={"jobs": len(self._in_flight)},
            )
            for job in set(self._jobs):
                job.cancel("drain")
        await drained

    async def _cancel_in_flight(self) -> None:
        tasks = set(self._in_flight)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _process(self, message: ReceivedMessage) -> None:
        with log_context(sqs_message_id=message.message_id):
            try:
                job = parse_message(message.body)
            except ValidationError as exc:
                await self._leave_for_dlq(message, f"{exc.error_count()} validation error(s)")
                return
            kind = self._kinds.get(job.type)
            if kind is None:
                await self._leave_for_dlq(message, f"no handler for type {job.type!r}")
                return
            with log_context(**job.log_ids()):
                await self._run_job(kind, job, message)

    async def _leave_for_dlq(self, message: ReceivedMessage, reason: str) -> None:
        # Not deleted: the queue's redrive policy moves it to the DLQ for inspection; until
        # then it comes back at the first retry delay, so it does not spin.
        logger.error(
            "unprocessable message left for the DLQ",
            extra={"receive_count": message.receive_count, "reason": reason},
        )
        await self._set_visibility(message, self._settings.job_retry_base_seconds)

    async def _run_job(self, kind: JobKind[Any], job: Message, message: ReceivedMessage) -> None:
        control = JobControl(worker_id=self.worker_id, stopping=self._stopping)
        started = self._clock.monotonic()
        running = _RunningJob(asyncio.create_task(kind.handle(self._context, job, control)))
        keeper = VisibilityKeeper(self._context, self._queue, message, running)
        guards = [
            asyncio.create_task(keeper.run(running.finished)),
            asyncio.create_task(self._expire(running, kind.timeout)),
        ]
        self._jobs.add(running)
        try:
            await asyncio.wait({running.handler})
        except asyncio.CancelledError:
            # The worker itself is cancelled: stop the job, give its message back at once.
            running.cancel("drain")
            await asyncio.gather(running.handler, return_exceptions=True)
            await asyncio.shield(self._set_visibility(message, 0))
            raise
        finally:
            self._jobs.discard(running)
            running.finished.set()
            for guard in guards:
                guard.cancel()
            await asyncio.gather(*guards, return_exceptions=True)
        await self._settle(kind, job, message, running)
        observe_job(kind.type, _outcome(running), self._clock.monotonic() - started)

    async def _expire(self, running: _RunningJob, after_seconds: float) -> None:
        await self._clock.sleep(after_seconds)
        logger.error("job timed out; cancelling it", extra={"timeout_seconds": after_seconds})
        running.cancel("timeout")

    async def _settle(
        self, kind: JobKind[Any], job: Message, message: ReceivedMessage, running: _RunningJob
    ) -> None:
        handler = running.handler
        if handler.cancelled():
            if running.cancelled_for == "timeout":
                error = f"timed out after {kind.timeout:g} s"
                await self._after_failure(kind, job, message, error, None)
            else:
                logger.info(
                    "job interrupted; message released", extra={"why": running.cancelled_for}
                )
                await self._set_visibility(message, 0)
            return
        exc = handler.exception()
        if exc is None:
            await self._delete(message)
        elif isinstance(exc, JobInterruptedError):
            logger.info("job interrupted; message released", extra={"why": str(exc)})
            await self._set_visibility(message, 0)
        else:
            await self._after_failure(kind, job, message, describe_error(exc), exc)

    async def _after_failure(
        self,
        kind: JobKind[Any],
        job: Message,
        message: ReceivedMessage,
        error: str,
        exc: BaseException | None,
    ) -> None:
        try:
            failures = await kind.record_failure(self._context, job, error)
        except Exception as record_error:
            # Not counted (the database may be what failed): retried after the first delay.
            logger.error(
                "job failed; its failure could not be recorded",
                exc_info=exc,
                extra={"error": error, "record_error": describe_error(record_error)},
            )
            await self._set_visibility(message, self._retry_delay(1))
            return
        if failures >= kind.max_attempts:
            logger.error(
                "job failed; attempts exhausted",
                exc_info=exc,
                extra={"failures": failures, "error": error},
            )
            try:
                await kind.on_exhausted(self._context, job, error)
            except Exception as record_error:
                # Left on the queue: retried, or taken to the DLQ by its redrive policy.
                logger.error(
                    "could not record the exhausted job",
                    extra={"error": describe_error(record_error)},
                )
                return
            await self._delete(message)
            return
        delay = self._retry_delay(failures)
        logger.warning(
            "job failed; retrying",
            exc_info=exc,
            extra={
                "failures": failures,
                "receive_count": message.receive_count,
                "retry_in_seconds": delay,
                "error": error,
            },
        )
        await self._set_visibility(message, delay)

    def _retry_delay(self, failures: int) -> int:
        """Capped exponential backoff with jitter, carried by the message's visibility."""
        ceiling = min(
            self._settings.job_retry_max_seconds,
            self._settings.job_retry_base_seconds * 2 ** (failures - 1),
        )
        return math.ceil(random.uniform(ceiling / 2, ceiling))

    async def _delete(self, message: ReceivedMessage) -> None:
        try:
            await self._queue.delete(message.receipt_handle)
        except Exception as exc:
            # Delivered again later; every handler is idempotent.
            logger.warning("could not delete the message", extra={"error": describe_error(exc)})

    async def _set_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        try:
            await self._queue.change_visibility(message.receipt_handle, seconds)
        except Exception as exc:
            logger.warning(
                "could not change the message's visibility", extra={"error": describe_error(exc)}
            )


def _outcome(running: _RunningJob) -> str:
    handler = running.handler
    if handler.cancelled():
        return "timeout" if running.cancelled_for == "timeout" else "interrupted"
    exc = handler.exception()
    if exc is None:
        return "done"
    return "interrupted" if isinstance(exc, JobInterruptedError) else "failed"


async def _finished_within(clock: Clock, future: asyncio.Future[Any], seconds: float) -> bool:
    """Wait for `future` up to `seconds` of the clock; True when it finished."""
    with contextlib.suppress(TimeoutError):
        async with clock.timeout(seconds):
            await asyncio.shield(future)
    return future.done()


class VisibilityKeeper(LoopService):
    """Keeps a running job's message hidden: every third of SQS_VISIBILITY_TIMEOUT its
    visibility is extended. If that keeps failing until the message is about to reappear,
    the job is stopped: another worker will receive it, and two must not run it at once."""

    name = "sqs_visibility_heartbeat"

    def __init__(
        self,
        context: AppContext,
        queue: SqsQueue,
        message: ReceivedMessage,
        running: _RunningJob,
    ) -> None:
        settings = context.settings
        self._visibility = settings.sqs_visibility_timeout
        interval = max(1.0, self._visibility / 3)
        super().__init__(
            context.clock,
            LoopPolicy(
                interval=interval,
                iteration_timeout=interval,
                max_failures=settings.loop_max_failures,
                backoff_base=1.0,
            ),
        )
        self._queue = queue
        self._message = message
        self._running = running
        self._hidden_until = self.clock.monotonic() + self._visibility

    def deadline(self) -> float:
        return self._hidden_until - 1.0

    async def run_once(self) -> None:
        started = self.clock.monotonic()
        await self._queue.change_visibility(self._message.receipt_handle, self._visibility)
        self._hidden_until = started + self._visibility

    async def on_give_up(self, error: LoopGaveUpError) -> None:
        self._running.cancel("visibility")

    async def run(self, stop: asyncio.Event | None = None) -> None:
        # Giving up stops the job (on_give_up); the loop's own end needs no further report.
        with contextlib.suppress(LoopGaveUpError):
            await super().run(stop)


class Reconciler(LoopService):
    """Every RECONCILE_INTERVAL_SECONDS: each job kind re-sends its stranded work, and copies
    of unfinished jobs found in the dead-letter queue are sent again at once."""

    name = "reconciler"

    def __init__(
        self, context: AppContext, queue: SqsQueue, kinds: Mapping[str, JobKind[Any]]
    ) -> None:
        interval = context.settings.reconcile_interval_seconds
        super().__init__(
            context.clock,
            # It protects nothing running: it retries for as long as the worker lives.
            LoopPolicy(interval=interval, iteration_timeout=max(interval, 60.0), max_failures=None),
        )
        self._context = context
        self._queue = queue
        self._kinds = kinds

    async def run_once(self) -> None:
        for kind in self._kinds.values():
            await kind.reconcile(self._context)
        await self.redrive_dead_letters()

    async def redrive_dead_letters(self) -> int:
        """Send unfinished jobs from the DLQ back to the queue; returns how many were sent."""
        dead_letters = await self._queue.dead_letter_queue()
        if dead_letters is None:
            return 0
        redriven = seen = 0
        while seen < DEAD_LETTERS_PER_PASS:
            messages = await dead_letters.receive(10, wait_seconds=0)
            if not messages:
                break
            seen += len(messages)
            for message in messages:
                if await self._redrive(dead_letters, message):
                    redriven += 1
        return redriven

    async def _redrive(self, dead_letters: SqsQueue, message: ReceivedMessage) -> bool:
        with log_context(sqs_message_id=message.message_id):
            try:
                job = parse_message(message.body)
            except ValidationError:
                await dead_letters.change_visibility(
                    message.receipt_handle, DEAD_LETTER_HIDE_SECONDS
                )
                return False
            kind = self._kinds.get(job.type)
            if kind is None:
                await dead_letters.change_visibility(
                    message.receipt_handle, DEAD_LETTER_HIDE_SECONDS
                )
                return False
            with log_context(**job.log_ids()):
                if not await kind.on_dead_letter(self._context, job):
                    await dead_letters.delete(message.receipt_handle)
                    return False
                # A fresh copy: its receive count starts again, the job's failures do not.
                await self._queue.send(job.model_copy(update={"message_id": uuid.uuid4()}))
                await dead_letters.delete(message.receipt_handle)
                return True
