"""SQS through boto3 on a thread pool of its own, every call bounded in time.

The long poll waits up to SQS_WAIT_SECONDS by design, so its read timeout outlasts it. Every
other call (send, delete, change visibility, attributes) gets SQS_CALL_TIMEOUT per attempt and
SQS_CALL_ATTEMPTS attempts, and is abandoned after their product whatever botocore does: an
unresponsive SQS costs a trigger a few seconds, never minutes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config

from app.queue.messages import Message
from app.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

T = TypeVar("T")

# Blocking calls in flight at once; calls beyond it queue (and still meet their deadline).
_THREADS = 16
# What one SendMessageBatch call takes (SQS's limit).
SEND_BATCH_MAX = 10


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class SqsTimeoutError(TimeoutError):
    """An SQS call did not answer within its deadline."""


class _Clients:
    """The boto3 clients (thread-safe) and threads every queue of the process shares."""

    def __init__(self, settings: Settings) -> None:
        timeout = settings.sqs_call_timeout
        self.call_deadline = timeout * settings.sqs_call_attempts
        retries: Any = {"max_attempts": settings.sqs_call_attempts, "mode": "standard"}

        def config(read_timeout: float) -> Config:
            # A connection for each thread: with fewer, the pool throws away what a call beyond
            # it opened (a warning each time) and a later call pays a new handshake.
            return Config(
                connect_timeout=timeout,
                read_timeout=read_timeout,
                retries=retries,
                max_pool_connections=_THREADS,
            )

        self.calls: SQSClient = self._client(settings, config(timeout))
        # The read timeout must outlast a 20 s long poll, or every empty receive would fail.
        self.polls: SQSClient = self._client(settings, config(settings.sqs_wait_seconds + timeout))
        self.poll_deadline = (settings.sqs_wait_seconds + timeout) * settings.sqs_call_attempts
        self.executor = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="sqs")

    @staticmethod
    def _client(settings: Settings, config: Config) -> SQSClient:
        client: SQSClient = boto3.client(
            "sqs",
            region_name=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            config=config,
        )
        return client

    def close(self) -> None:
        # Threads still waiting on an unresponsive SQS end with their own timeouts.
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.calls.close()
        self.polls.close()


class SqsQueue:
    """One queue URL; created once per process (its dead-letter queue shares its clients)."""

    def __init__(
        self, settings: Settings, queue_url: str, *, clients: _Clients | None = None
    ) -> None:
        self.queue_url = queue_url
        self._settings = settings
        self._owns_clients = clients is None
        self._clients = clients or _Clients(settings)
        self._dead_letters: SqsQueue | None = None

    async def send(self, message: Message, *, delay_seconds: int = 0) -> str:
        response = await self._call(
            self._clients.calls.send_message,
            QueueUrl=self.queue_url,
            MessageBody=message.model_dump_json(),
            DelaySeconds=delay_seconds,
        )
        return response["MessageId"]

    async def send_batch(self, messages: Sequence[Message]) -> list[bool]:
        """Up to SEND_BATCH_MAX messages in one SendMessageBatch call; whether each was sent
        (SQS answers for each entry on its own). A failed call raises."""
        if len(messages) > SEND_BATCH_MAX:
            raise ValueError(f"SendMessageBatch takes at most {SEND_BATCH_MAX} messages")
        response = await self._call(
            self._clients.calls.send_message_batch,
            QueueUrl=self.queue_url,
            Entries=[
                {"Id": str(index), "MessageBody": message.model_dump_json()}
                for index, message in enumerate(messages)
            ],
        )
        sent = {entry["Id"] for entry in response.get("Successful", [])}
        return [str(index) in sent for index in range(len(messages))]

    async def receive(
        self, max_messages: int | None = None, *, wait_seconds: int | None = None
    ) -> list[ReceivedMessage]:
        settings = self._settings
        wait = settings.sqs_wait_seconds if wait_seconds is None else wait_seconds
        clients = self._clients
        client, deadline = (
            (clients.polls, clients.poll_deadline)
            if wait
            else (clients.calls, clients.call_deadline)
        )
        response = await self._in_thread(
            client.receive_message,
            deadline,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(max_messages or settings.sqs_max_messages, 10),
            WaitTimeSeconds=wait,
            # Set per receive: the heartbeat's schedule assumes this, not the queue's default.
            VisibilityTimeout=settings.sqs_visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [_received(raw) for raw in response.get("Messages", [])]

    async def delete(self, receipt_handle: str) -> None:
        await self._call(
            self._clients.calls.delete_message,
            QueueUrl=self.queue_url,
            ReceiptHandle=receipt_handle,
        )

    async def change_visibility(self, receipt_handle: str, timeout_seconds: int) -> None:
        await self._call(
            self._clients.calls.change_message_visibility,
            QueueUrl=self.queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(timeout_seconds, 43_200)),
        )

    async def ping(self) -> None:
        await self._call(
            self._clients.calls.get_queue_attributes,
            QueueUrl=self.queue_url,
            AttributeNames=["QueueArn"],
        )

    async def depth(self) -> dict[str, int]:
        """Approximate message counts: visible, in flight (received, not deleted), delayed."""
        response = await self._call(
            self._clients.calls.get_queue_attributes,
            QueueUrl=self.queue_url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
        values = response.get("Attributes", {})
        return {
            "visible": int(values.get("ApproximateNumberOfMessages", 0)),
            "in_flight": int(values.get("ApproximateNumberOfMessagesNotVisible", 0)),
            "delayed": int(values.get("ApproximateNumberOfMessagesDelayed", 0)),
        }

    async def dead_letter_queue(self) -> SqsQueue | None:
        """The queue's DLQ: SQS_DLQ_URL, else the one its redrive policy names; None without."""
        if self._dead_letters is None:
            url = self._settings.sqs_dlq_url or await self._redrive_target_url()
            if url is not None:
                self._dead_letters = SqsQueue(self._settings, url, clients=self._clients)
        return self._dead_letters

    async def _redrive_target_url(self) -> str | None:
        attributes = await self._call(
            self._clients.calls.get_queue_attributes,
            QueueUrl=self.queue_url,
            AttributeNames=["RedrivePolicy"],
        )
        policy = attributes.get("Attributes", {}).get("RedrivePolicy")
        if not policy:
            return None
        # arn:aws:sqs:<region>:<account>:<name>
        *_, account, name = json.loads(policy)["deadLetterTargetArn"].split(":")
        response = await self._call(
            self._clients.calls.get_queue_url, QueueName=name, QueueOwnerAWSAccountId=account
        )
        return response["QueueUrl"]

    async def _call(self, method: Callable[..., T], **kwargs: Any) -> T:
        return await self._in_thread(method, self._clients.call_deadline, **kwargs)

    async def _in_thread(self, method: Callable[..., T], deadline: float, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._clients.executor, partial(method, **kwargs))
        try:
            return await asyncio.wait_for(future, deadline)
        except TimeoutError:
            raise SqsTimeoutError(f"SQS did not answer within {deadline:g} s") from None

    def close(self) -> None:
        if self._owns_clients:
            self._clients.close()


def _received(raw: Any) -> ReceivedMessage:
    return ReceivedMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw["Body"],
        receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
    )
