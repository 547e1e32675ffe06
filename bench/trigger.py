"""`POST /orgs/{id}/evaluations` under concurrent clients: the API's own share of each request
(everything but the SQS call) measured apart from the SQS emulator's.

The API runs in this process with a queue that times its SendMessage calls; each request's
SQS time is paired with it by the batch id its job names. Clients post for distinct orgs, one
connection at a time and then over 16 at once. Then `POST /evaluations/bulk` for 1,000 other
orgs at once, against the single triggers' rate over one connection.
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
import uuid
from collections.abc import Sequence

import httpx
from pydantic import SecretStr

from app.context import AppContext
from app.queue.messages import EvaluateOrg, Message
from app.queue.provision import create_queue_with_dlq
from app.queue.sqs import SqsQueue
from bench.common import (
    Figure,
    Matrix,
    bench_settings,
    report,
    scratch_database,
    seed_orgs,
)
from devtools.embedded import moto_sqs_process, serve_api

MATRIX = Matrix(questions=5, engines=("openai", "anthropic"), locations=("US", "GB"))
CONNECTIONS = (1, 16)
BULK = 1000
# Issue 13's figure before: requests per second at 16 connections.
ISSUE_RATE, ISSUE_CONNECTIONS = 17, 16


class TimedQueue(SqsQueue):
    """The real SQS client, timing each send by the batch its job names, and SendMessageBatch
    calls all together."""

    sends: dict[uuid.UUID, float]
    batch_seconds: float = 0.0

    async def send_batch(self, messages: Sequence[Message]) -> list[bool]:
        started = time.perf_counter()
        try:
            return await super().send_batch(messages)
        finally:
            self.batch_seconds += time.perf_counter() - started

    async def send(self, message: Message, *, delay_seconds: int = 0) -> str:
        started = time.perf_counter()
        try:
            return await super().send(message, delay_seconds=delay_seconds)
        finally:
            if isinstance(message, EvaluateOrg):
                self.sends[message.batch_id] = time.perf_counter() - started


async def _trigger_all(
    api: httpx.AsyncClient, orgs: list[str], connections: int
) -> tuple[dict[uuid.UUID, float], float]:
    """Each org's trigger, over `connections` clients at once: latency by batch id, and the
    seconds it all took."""
    totals: dict[uuid.UUID, float] = {}
    pending = list(reversed(orgs))

    async def client() -> None:
        while pending:
            org_id = pending.pop()
            began = time.perf_counter()
            response = await api.post(f"/orgs/{org_id}/evaluations", json={})
            response.raise_for_status()
            totals[uuid.UUID(response.json()["batch_id"])] = time.perf_counter() - began

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    return totals, time.perf_counter() - started


async def scenario(quick: bool) -> None:
    count = 40 if quick else 240
    token = secrets.token_urlsafe(16)
    figures = []
    notes = []
    rates: list[float] = []
    async with scratch_database() as url:
        with moto_sqs_process() as endpoint:
            base = bench_settings(url, aws_endpoint_url=endpoint, api_token=SecretStr(token))
            queue_url = create_queue_with_dlq(
                base, f"bench-{uuid.uuid4().hex[:8]}", max_receive_count=5
            )
            settings = base.model_copy(update={"sqs_queue_url": queue_url})
            async with AppContext.create(settings) as context:
                context.require_queue().close()
                queue = TimedQueue(settings, queue_url)
                queue.sends = {}
                context.queue = queue
                async with (
                    serve_api(settings, context) as api_url,
                    httpx.AsyncClient(
                        base_url=api_url,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=30,
                        limits=httpx.Limits(max_connections=max(CONNECTIONS)),
                    ) as api,
                ):
                    orgs = await seed_orgs(url, count * len(CONNECTIONS), MATRIX)
                    for n, connections in enumerate(CONNECTIONS):
                        mine = orgs[n * count : (n + 1) * count]
                        totals, seconds = await _trigger_all(api, mine, connections)
                        paired = [(totals[b], queue.sends[b]) for b in totals if b in queue.sends]
                        api_share = [total - sqs for total, sqs in paired]
                        sqs_share = [sqs for _, sqs in paired]
                        alone = connections == 1
                        figures.append(
                            Figure(
                                "API's own share p50, 1 connection"
                                if alone
                                else f"API's own share p50, {connections} connections, queued",
                                statistics.median(api_share) * 1000,
                                "ms",
                                statistics.median(sqs_share) * 1000,
                                "the SQS emulator's share p50",
                                # What a request costs is read alone: with more connections
                                # than cores, a request's time includes waiting for the others.
                                "≤ 10 ms" if alone else "",
                            )
                        )
                        rate = len(totals) / seconds
                        notes.append(
                            f"{connections} connection(s): {len(totals)} batches of "
                            f"{MATRIX.runs} runs at {rate:.1f} req/s, request "
                            f"p50 {statistics.median(list(totals.values())) * 1000:.1f} ms"
                            + (
                                ""
                                if connections != ISSUE_CONNECTIONS
                                else f"; issue 13 measured {ISSUE_RATE} req/s at "
                                f"{ISSUE_CONNECTIONS} connections, on its own machine: "
                                f"×{rate / ISSUE_RATE:.1f} that"
                            )
                        )
                        rates.append(rate)
                    bulk_orgs = await seed_orgs(url, BULK if not quick else 200, MATRIX)
                    # Moto reads every message of a queue to take one more: the bulk's jobs
                    # go to a queue of their own.
                    queue.close()
                    bulk_url = create_queue_with_dlq(
                        base, f"bench-{uuid.uuid4().hex[:8]}", max_receive_count=5
                    )
                    queue = TimedQueue(settings, bulk_url)
                    queue.sends = {}
                    context.queue = queue
                    started = time.perf_counter()
                    response = await api.post(
                        "/evaluations/bulk", json={"org_ids": bulk_orgs}, timeout=80
                    )
                    bulk_seconds = time.perf_counter() - started
                    response.raise_for_status()
                    created = response.json()["counts"]["created"]
                    figures.append(
                        Figure(
                            f"POST /evaluations/bulk, {len(bulk_orgs)} orgs",
                            created / bulk_seconds,
                            "orgs/s",
                            rates[0],
                            "single triggers, 1 connection",
                        )
                    )
                    notes.append(
                        f"bulk: {created} of {len(bulk_orgs)} created in {bulk_seconds:.2f} s, "
                        f"of which {queue.batch_seconds:.2f} s in SendMessageBatch"
                    )
                queue.close()
    report("trigger: POST /orgs/{id}/evaluations", figures, notes)
