"""Create a job queue with its dead-letter queue (embedded default, tests, first setup)."""

from __future__ import annotations

import json

import boto3

from app.settings import Settings


def create_queue_with_dlq(settings: Settings, name: str, *, max_receive_count: int) -> str:
    """Returns the queue URL; the DLQ receives what failed `max_receive_count` times."""
    client = boto3.client(
        "sqs", region_name=settings.aws_region, endpoint_url=settings.aws_endpoint_url
    )
    try:
        dlq_url = client.create_queue(
            QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": "1209600"}
        )["QueueUrl"]
        dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        return client.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": str(settings.sqs_visibility_timeout),
                "ReceiveMessageWaitTimeSeconds": str(settings.sqs_wait_seconds),
                "RedrivePolicy": json.dumps(redrive),
            },
        )["QueueUrl"]
    finally:
        client.close()
