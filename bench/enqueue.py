"""`senso enqueue-all`: how fast every org's batch is created and its job sent, and whether the
cap (jobs sent per second at most) holds.

`enqueue_all` (what the command runs) creates today's batches of the orgs a chunk at a time,
set-based, and sends the jobs to moto's SQS server in SendMessageBatch calls. The baseline is
the way it went before, measured in the same run over orgs of the same database: an org at a
time, each in a transaction of its own through one org's trigger code, then its job in a
SendMessage of its own. It runs a day earlier than `enqueue_all` (the clock is moved), so both
find every org without a batch. Both send as many jobs, each to a queue of its own: moto reads
every message of a queue to send one more (real SQS does not), so a fuller queue would slow
whichever path sent to it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import date, datetime, timedelta

from app.auth import Principal
from app.clock import SystemClock
from app.context import AppContext
from app.evaluations.admission import get_or_create_today_batch
from app.evaluations.schedule import SCHEDULER, enqueue_all
from app.evaluations.schemas import EvaluationTrigger
from app.evaluations.service import enqueue_batch
from app.queue.provision import create_queue_with_dlq
from bench.common import Figure, Matrix, bench_settings, report, scratch_database, seed_orgs
from devtools.embedded import moto_sqs_server

MATRIX = Matrix(questions=5, engines=("openai", "anthropic"), locations=("US", "GB"))
CAP = 20.0  # jobs per second, for the cap's check
# Issue 13's figure for enqueue-all before set-based creation, on the machine it was taken on.
ISSUE_RATE = 3.2


class Tomorrow(SystemClock):
    """The system's clock a day on: today's batches of the same orgs are new again."""

    def now(self) -> datetime:
        return super().now() + timedelta(days=1)

    def today(self) -> date:
        return self.now().date()


async def _one_at_a_time(context: AppContext, org_ids: list[str]) -> float:
    """Orgs per second the way enqueue-all went before: a transaction and a SendMessage each."""
    queue = context.require_queue()
    operator = Principal(partner_id=None)
    trigger = EvaluationTrigger(triggered_by=SCHEDULER)
    started = time.perf_counter()
    for org_id in org_ids:
        async with context.sessions() as session:
            outcome = await get_or_create_today_batch(
                session,
                context.clock,
                operator,
                uuid.UUID(org_id),
                trigger,
                max_runs=context.settings.max_runs_per_batch,
            )
            await session.commit()
        assert outcome.batch is not None
        assert outcome.outcome == "created"
        await enqueue_batch(queue, outcome.batch, reason=SCHEDULER)
    return len(org_ids) / (time.perf_counter() - started)


def _most_in_a_second(sent: list[float]) -> int:
    sent = sorted(sent)
    most = 0
    for index, first in enumerate(sent):
        most = max(most, sum(1 for at in sent[index:] if at < first + 1.0))
    return most


async def scenario(quick: bool) -> None:
    count = 60 if quick else 300
    capped = 30 if quick else 100
    async with scratch_database() as url:
        with moto_sqs_server() as endpoint:
            base = bench_settings(url, aws_endpoint_url=endpoint)
            queues = [
                create_queue_with_dlq(base, f"bench-{uuid.uuid4().hex[:8]}", max_receive_count=5)
                for _ in range(3)
            ]
            settings = base.model_copy(update={"sqs_queue_url": queues[0]})
            orgs = await seed_orgs(url, count, MATRIX)
            async with AppContext.create(settings) as context:
                baseline = await _one_at_a_time(context, orgs)
            tomorrow = settings.model_copy(update={"sqs_queue_url": queues[1]})
            async with AppContext.create(tomorrow, Tomorrow()) as context:
                started = time.perf_counter()
                results = await enqueue_all(context, per_second=1_000_000)
                seconds = time.perf_counter() - started
            enqueued = sum(1 for r in results if r.outcome == "enqueued")
            # The cap, over orgs of a database of their own.
            sent_at: list[float] = []
            async with scratch_database() as capped_url:
                capped_settings = bench_settings(
                    capped_url, aws_endpoint_url=endpoint, sqs_queue_url=queues[2]
                )
                await seed_orgs(capped_url, capped, MATRIX)
                async with AppContext.create(capped_settings) as context:
                    loop = asyncio.get_running_loop()
                    capped_started = time.perf_counter()
                    await enqueue_all(
                        context,
                        per_second=CAP,
                        on_result=lambda _result: sent_at.append(loop.time()),
                    )
                    capped_seconds = time.perf_counter() - capped_started
    rate = enqueued / seconds
    report(
        f"enqueue: senso enqueue-all over {count} orgs of {MATRIX.runs} runs",
        [
            Figure(
                "orgs enqueued per second, no cap",
                rate,
                "orgs/s",
                baseline,
                "an org at a time (before)",
                "≥ ×20",
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
        [
            f"{enqueued} of {count} enqueued in {seconds:.2f} s; an org at a time: "
            f"{count / baseline:.2f} s",
            f"issue 13 measured {ISSUE_RATE} orgs/s before set-based creation, on its own "
            f"machine: {rate:.0f} orgs/s here is ×{rate / ISSUE_RATE:.0f} that figure",
            f"capped at {CAP:.0f} jobs/s: {capped} orgs in {capped_seconds:.2f} s",
        ],
    )
