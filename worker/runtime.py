"""The SQS worker: long-poll, dispatch by message type, heartbeat, back off, drain on SIGTERM."""

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

from pydantic import ValidationError

from app.context import AppContext
from app.evaluations.pipeline import stalled_batches
from app.evaluations.service import enqueue_batch
from app.logging import log_context
from app.queue.messages import Message, parse_message
from app.queue.sqs import ReceivedMessage, SqsQueue
from worker.registry import REGISTRY, JobKind

logger = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        context: AppContext,
        *,
        registry: Mapping[str, JobKind] = REGISTRY,
        worker_id: str | None = None,
    ) -> None:
        self._context = context
        self._settings = context.settings
        self._queue: SqsQueue = context.require_queue()
        self._registry = registry
        self.worker_id = worker_id or new_worker_id()
        self._stopping = asyncio.Event()
        self._in_flight: set[asyncio.Task[None]] = set()

    def request_stop(self) -> None:
        """Stop receiving; in-flight jobs get the drain period to finish."""
        if not self._stopping.is_set():
            logger.info("stop requested; draining", extra={"in_flight": len(self._in_flight)})
            self._stopping.set()

    async def run(self) -> None:
        logger.info(
            "worker started",
            extra={"worker_id": self.worker_id, "concurrency": self._settings.worker_concurrency},
        )
        reconciler = asyncio.create_task(self._reconcile_forever())
        try:
            await self._receive_until_stopped()
            await self._drain()
        except asyncio.CancelledError:
            # Cancelled outright rather than asked to stop: cut jobs short, release their messages.
            await self._cancel_in_flight()
            raise
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
        logger.info("worker stopped", extra={"worker_id": self.worker_id})

    async def _receive_until_stopped(self) -> None:
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                free = self._settings.worker_concurrency - len(self._in_flight)
                if free <= 0:
                    await asyncio.wait({stop, *self._in_flight}, return_when="FIRST_COMPLETED")
                    continue
                receive = asyncio.create_task(self._queue.receive(free))
                await asyncio.wait({stop, receive}, return_when="FIRST_COMPLETED")
                try:
                    messages = await receive
                except Exception:
                    logger.exception("receive failed; retrying shortly")
                    await self._sleep_unless_stopped(2.0)
                    continue
                for message in messages:
                    if self._stopping.is_set():
                        # Received while stopping: hand it straight back to the queue.
                        await self._release(message)
                    else:
                        self._start(message)
        finally:
            stop.cancel()

    def _start(self, message: ReceivedMessage) -> None:
        task = asyncio.create_task(self._process(message))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        _, unfinished = await asyncio.wait(
            set(self._in_flight), timeout=self._settings.worker_drain_seconds
        )
        if unfinished:
            logger.warning(
                "drain period over; releasing unfinished jobs", extra={"jobs": len(unfinished)}
            )
            await self._cancel_in_flight()

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
                self._leave_for_dlq(message, f"{exc.error_count()} validation error(s)")
                await self._set_visibility(message, self._settings.job_retry_base_seconds)
                return
            kind = self._registry.get(job.type)
            if kind is None:
                self._leave_for_dlq(message, f"no handler for type {job.type!r}")
                await self._set_visibility(message, self._settings.job_retry_base_seconds)
                return
            with log_context(**job.log_ids()):
                await self._run_job(kind, job, message)

    def _leave_for_dlq(self, message: ReceivedMessage, reason: str) -> None:
        # Not deleted: the queue's redrive policy moves it to the DLQ for inspection.
        logger.error(
            "unprocessable message left for the DLQ",
            extra={"receive_count": message.receive_count, "reason": reason},
        )

    async def _run_job(self, kind: JobKind, job: Message, message: ReceivedMessage) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(message))
        try:
            await kind.handle(self._context, job, self.worker_id)
        except asyncio.CancelledError:
            heartbeat.cancel()
            await asyncio.shield(self._release(message))
            raise
        except Exception as exc:
            # The heartbeat stops first so it cannot undo the backoff set below.
            heartbeat.cancel()
            await self._after_failure(kind, job, message, exc)
            return
        heartbeat.cancel()
        await self._queue.delete(message.receipt_handle)

    async def _after_failure(
        self, kind: JobKind, job: Message, message: ReceivedMessage, exc: Exception
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if message.receive_count >= self._settings.job_max_attempts:
            logger.error("job failed; attempts exhausted", exc_info=exc)
            try:
                await kind.on_exhausted(self._context, job, error)
                await self._queue.delete(message.receipt_handle)
            except Exception:
                # Left on the queue: its redrive policy takes it to the DLQ.
                logger.exception("could not record the exhausted job")
            return
        delay = self._retry_delay(message.receive_count)
        logger.warning(
            "job failed; retrying",
            exc_info=exc,
            extra={"receive_count": message.receive_count, "retry_in_seconds": delay},
        )
        await self._set_visibility(message, delay)

    def _retry_delay(self, receive_count: int) -> int:
        """Capped exponential backoff with jitter, carried by the message's visibility."""
        ceiling = min(
            self._settings.job_retry_max_seconds,
            self._settings.job_retry_base_seconds * 2 ** (receive_count - 1),
        )
        return math.ceil(random.uniform(ceiling / 2, ceiling))

    async def _heartbeat(self, message: ReceivedMessage) -> None:
        timeout = self._settings.sqs_visibility_timeout
        while True:
            await asyncio.sleep(max(1.0, timeout / 3))
            try:
                await self._queue.change_visibility(message.receipt_handle, timeout)
            except Exception:
                logger.exception("visibility heartbeat failed")

    async def _release(self, message: ReceivedMessage) -> None:
        await self._set_visibility(message, 0)

    async def _set_visibility(self, message: ReceivedMessage, seconds: int) -> None:
        try:
            await self._queue.change_visibility(message.receipt_handle, seconds)
        except Exception:
            logger.exception("could not change the message's visibility")

    async def _reconcile_forever(self) -> None:
        while True:
            await self._sleep_unless_stopped(self._settings.reconcile_interval_seconds)
            if self._stopping.is_set():
                return
            try:
                for batch in await stalled_batches(self._context):
                    await enqueue_batch(self._queue, batch, reason="reconciler")
            except Exception:
                logger.exception("reconciler pass failed")

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
