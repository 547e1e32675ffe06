"""SQS through boto3, each call in a thread with explicit timeouts (boto3 is blocking)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from app.queue.messages import Message
from app.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int


class SqsQueue:
    """One queue, one boto3 client (thread-safe), created once per process."""

    def __init__(self, settings: Settings, queue_url: str) -> None:
        self.queue_url = queue_url
        self._wait_seconds = settings.sqs_wait_seconds
        self._max_messages = settings.sqs_max_messages
        self._visibility_timeout = settings.sqs_visibility_timeout
        # The read timeout must outlast a 20 s long poll, or every empty receive would fail.
        config = Config(
            connect_timeout=settings.sqs_call_timeout,
            read_timeout=settings.sqs_wait_seconds + settings.sqs_call_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        self._client: SQSClient = boto3.client(
            "sqs",
            region_name=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            config=config,
        )

    async def send(self, message: Message, *, delay_seconds: int = 0) -> str:
        response = await asyncio.to_thread(
            self._client.send_message,
            QueueUrl=self.queue_url,
            MessageBody=message.model_dump_json(),
            DelaySeconds=delay_seconds,
        )
        return response["MessageId"]

    async def receive(self, max_messages: int | None = None) -> list[ReceivedMessage]:
        response = await asyncio.to_thread(
            self._client.receive_message,
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(max_messages or self._max_messages, self._max_messages),
            WaitTimeSeconds=self._wait_seconds,
            # Set per receive: the heartbeat's schedule assumes this, not the queue's default.
            VisibilityTimeout=self._visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        return [_received(raw) for raw in response.get("Messages", [])]

    async def delete(self, receipt_handle: str) -> None:
        await asyncio.to_thread(
            self._client.delete_message, QueueUrl=self.queue_url, ReceiptHandle=receipt_handle
        )

    async def change_visibility(self, receipt_handle: str, timeout_seconds: int) -> None:
        await asyncio.to_thread(
            self._client.change_message_visibility,
            QueueUrl=self.queue_url,
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=max(0, min(timeout_seconds, 43_200)),
        )

    async def ping(self) -> None:
        await asyncio.to_thread(
            self._client.get_queue_attributes,
            QueueUrl=self.queue_url,
            AttributeNames=["QueueArn"],
        )

    def close(self) -> None:
        self._client.close()


def _received(raw: Any) -> ReceivedMessage:
    return ReceivedMessage(
        message_id=raw["MessageId"],
        receipt_handle=raw["ReceiptHandle"],
        body=raw["Body"],
        receive_count=int(raw.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
    )
