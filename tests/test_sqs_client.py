"""The SQS client under concurrent calls: as many connections kept as calls run at once."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from app.queue.messages import EvaluateOrg
from app.queue.sqs import SqsQueue
from app.settings import Settings

CALLS = 64


async def test_concurrent_sends_keep_their_connections(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Every thread of the client's pool has a connection to keep: none is thrown away after
    its call (urllib3 warns each time it does, and each one thrown away is a new TCP and TLS
    handshake with SQS for a later call)."""
    assert settings.sqs_queue_url is not None
    queue = SqsQueue(settings, settings.sqs_queue_url)
    try:
        with caplog.at_level(logging.WARNING, logger="urllib3"):
            sent = await asyncio.gather(
                *(
                    queue.send(EvaluateOrg(org_id=uuid.uuid4(), batch_id=uuid.uuid4()))
                    for _ in range(CALLS)
                )
            )
    finally:
        queue.close()
    assert len(set(sent)) == CALLS
    discarded = [r for r in caplog.records if "pool is full" in r.getMessage()]
    assert discarded == []
