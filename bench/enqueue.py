"""`senso enqueue-all`: how fast every org's batch is created and its job sent, and whether the
cap (jobs sent per second at most) holds.

The orgs are set up through the API; `enqueue_all` (what the command runs) then creates
today's batch of each and sends the jobs to moto's SQS server. The baseline is moto's own
speed in the same run: one SendMessage call per job, nothing else.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from app.context import AppContext
from app.evaluations.schedule import enqueue_all
from app.queue.messages import EvaluateOrg
from app.queue.provision import create_queue_with_dlq
from app.queue.sqs import SqsQueue
from bench.common import (
    Figure,
    Matrix,
    api_client,
    bench_settings,
    create_orgs,
    report,
    scratch_database,
)
from devtools.embedded import moto_sqs_server

MATRIX = Matrix(questions=5, engines=("openai", "anthropic"), locations=("US", "GB"))
CAP = 20.0  # jobs per second, for the cap's check


async def _moto_send_rate(queue: SqsQueue, count: int) -> float:
    """Jobs per second that moto takes one SendMessage at a time."""
    started = time.perf_counter()
    for _ in range(count):
        await queue.send(EvaluateOrg(org_id=uuid.uuid4(), batch_id=uuid.uuid4()))
    return count / (time.perf_counter() - started)


def _most_in_a_second(sent: list[float]) -> int:
    sent = sorted(sent)
    most = 0
    for index, first in enumerate(sent):
        most = max(most, sum(1 for at in sent[index:] if at < first + 1.0))
    return most


async def scenario(quick: bool) -> None:
    count = 40 if quick else 400
    capped = 30 if quick else 100
    async with scratch_database() as url:
        with moto_sqs_server() as endpoint:
            base = bench_settings(url, aws_endpoint_url=endpoint)
            queues = [
                create_queue_with_dlq(base, f"bench-{uuid.uuid4().hex[:8]}", max_receive_count=5)
                for _ in range(3)
            ]
            settings = base.model_copy(update={"sqs_queue_url": queues[0]})
            async with api_client(settings) as api:
                await create_orgs(api, count, MATRIX)
            async with AppContext.create(settings) as context:
                moto_rate = await _moto_send_rate(context.require_queue(), count)
                # Moto slows down as a queue fills: the jobs go to a queue of their own.
                context.queue = SqsQueue(settings, queues[1])
                started = time.perf_counter()
                results = await enqueue_all(context, per_second=1_000_000)
                seconds = time.perf_counter() - started
                context.queue.close()
            enqueued = sum(1 for r in results if r.outcome == "enqueued")
            # The cap, over orgs of a database of their own (the first ones have today's
            # batch already).
            sent_at: list[float] = []
            async with scratch_database() as capped_url:
                capped_settings = bench_settings(
                    capped_url, aws_endpoint_url=endpoint, sqs_queue_url=queues[2]
                )
                async with api_client(capped_settings) as api:
                    await create_orgs(api, capped, MATRIX)
                async with AppContext.create(capped_settings) as context:
                    loop = asyncio.get_running_loop()
                    await enqueue_all(
                        context,
                        per_second=CAP,
                        on_result=lambda _result: sent_at.append(loop.time()),
                    )
    report(
        f"enqueue: senso enqueue-all over {count} orgs of {MATRIX.runs} runs",
        [
            Figure(
                "orgs enqueued per second, no cap",
                enqueued / seconds,
                "orgs/s",
                moto_rate,
                "moto's own SendMessage rate",
            ),
            Figure(
                "most jobs sent within one second, capped",
                _most_in_a_second(sent_at),
                "jobs",
                CAP,
                "the cap (jobs per second)",
                "≤ ×1.00",
            ),
        ],
        [f"{enqueued} of {count} enqueued in {seconds:.2f} s; capped run over {capped} orgs"],
    )
