"""`POST /orgs/{id}/evaluations` under concurrent clients: the API's own share of each request
(everything but the SQS call) measured apart from the SQS emulator's.

The API runs in this process with a queue that times its SendMessage calls; each request's
SQS time is paired with it by the batch id its job names. A request's time is the API's own
measure of it, the access log's latency (from the request's arrival at the app to its
response): the client shares this process, and its own time is not the API's. The time the
client saw is printed beside it. Clients post for distinct orgs, one connection at a time and
then over 16 at once. Then `POST /evaluations/bulk` for 1,000 other orgs at once, against the
single triggers' rate over one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from pydantic import SecretStr

from app.context import AppContext
from app.queue.provision import create_queue_with_dlq
from bench.common import (
    Figure,
    Matrix,
    TimedQueue,
    bench_settings,
    median_ms,
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


class AccessLatencies(logging.Handler):
    """The API's access log: each request's latency as the API measured it, by request id."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        request_id, latency_ms = (getattr(record, k, None) for k in ("request_id", "latency_ms"))
        if isinstance(request_id, str) and isinstance(latency_ms, float | int):
            self.seconds[request_id] = latency_ms / 1000


@contextlib.contextmanager
def access_latencies() -> Iterator[AccessLatencies]:
    """The access log's latencies while the block runs, in place of its lines."""
    access = logging.getLogger("senso.access")
    handler = AccessLatencies()
    handlers, level = access.handlers[:], access.level
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        access.handlers[:] = handlers
        access.setLevel(level)


@dataclass(frozen=True, slots=True)
class Timed:
    """One trigger's time: as the client saw it, and as the API measured it."""

    client: float
    api: float


async def _trigger_all(
    api: httpx.AsyncClient, orgs: list[str], connections: int, access: AccessLatencies
) -> tuple[dict[uuid.UUID, Timed], float]:
    """Each org's trigger, over `connections` clients at once: its times by batch id, and the
    seconds it all took."""
    seen: dict[uuid.UUID, tuple[float, str]] = {}
    pending = list(reversed(orgs))

    async def client() -> None:
        while pending:
            org_id = pending.pop()
            began = time.perf_counter()
            response = await api.post(f"/orgs/{org_id}/evaluations", json={})
            response.raise_for_status()
            seconds = time.perf_counter() - began
            seen[uuid.UUID(response.json()["batch_id"])] = (
                seconds,
                response.headers["x-request-id"],
            )

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    # A request is logged once its response is sent: the last ones may still be finishing.
    deadline = time.monotonic() + 5
    while any(rid not in access.seconds for _, rid in seen.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("requests missing from the access log")
        await asyncio.sleep(0.001)
    timed = {b: Timed(seconds, access.seconds[rid]) for b, (seconds, rid) in seen.items()}
    return timed, elapsed


def _share(
    totals: dict[uuid.UUID, Timed], sends: dict[uuid.UUID, float], connections: int
) -> Figure:
    """The API's own share p50 of the triggers over `connections`, beside SQS's."""
    alone = connections == 1
    return Figure(
        "API's own share p50, 1 connection"
        if alone
        else f"API's own share p50, {connections} connections, queued",
        median_ms(totals[b].api - sends[b] for b in totals),
        "ms",
        median_ms(sends[b] for b in totals),
        "the SQS emulator's share p50",
        # What a request costs is read alone: with more connections than cores, a request's
        # time includes waiting for the others.
        "≤ 10 ms" if alone else "",
    )


def _note(
    totals: dict[uuid.UUID, Timed], sends: dict[uuid.UUID, float], connections: int, rate: float
) -> str:
    """The triggers over `connections`: their rate, and their p50 as the API and its client saw
    them."""
    api = median_ms(t.api for t in totals.values())
    client = median_ms(t.client for t in totals.values())
    client_share = median_ms(t.client - sends[b] for b, t in totals.items())
    note = (
        f"{connections} connection(s): {len(totals)} batches of {MATRIX.runs} runs at "
        f"{rate:.1f} req/s, request p50 {api:.1f} ms as the API measured it, {client:.1f} ms as "
        f"its client saw it (the API's own share so: {client_share:.1f} ms)"
    )
    if connections == ISSUE_CONNECTIONS:
        note += (
            f"; issue 13 measured {ISSUE_RATE} req/s at {ISSUE_CONNECTIONS} connections, on "
            f"its own machine: ×{rate / ISSUE_RATE:.1f} that"
        )
    return note


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
                queue = TimedQueue.instead_of(context, queue_url)
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
                        with access_latencies() as access:
                            totals, seconds = await _trigger_all(api, mine, connections, access)
                        figures.append(_share(totals, queue.sends, connections))
                        rate = len(totals) / seconds
                        notes.append(_note(totals, queue.sends, connections, rate))
                        rates.append(rate)
                    bulk_orgs = await seed_orgs(url, BULK if not quick else 200, MATRIX)
                    # Moto reads every message of a queue to take one more: the bulk's jobs
                    # go to a queue of their own.
                    bulk_url = create_queue_with_dlq(
                        base, f"bench-{uuid.uuid4().hex[:8]}", max_receive_count=5
                    )
                    queue = TimedQueue.instead_of(context, bulk_url)
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
    report("trigger: POST /orgs/{id}/evaluations", figures, notes)
