"""GET /batches/{id} and GET /batches/{id}/results at small and large batches: what a read
costs should not grow with the runs.

The batches are triggered through the API; their runs are then marked completed, costed and
charged in bulk SQL (the worker's part is measured by the `worker` scenario) and each batch is
completed with its totals and summary stored, as the worker's last step leaves it, so the
reads see finished batches. Latencies are of the real API over loopback HTTP.
"""

from __future__ import annotations

import time
import uuid

import asyncpg
import httpx

from app.context import AppContext
from app.db.models import BatchStatus, EvaluationBatch
from app.evaluations.runs import store_totals
from app.evaluations.summaries import store_summary
from app.queue.provision import create_queue_with_dlq
from app.settings import Settings
from bench.common import (
    ADMIN_URL,
    Figure,
    Matrix,
    api_client,
    bench_settings,
    create_orgs,
    median_ms,
    p99,
    report,
    scratch_database,
)
from devtools.embedded import moto_sqs_server

SMALL = Matrix(questions=5, engines=("openai", "anthropic"), locations=("US",))
MEDIUM = Matrix(
    questions=5,
    engines=("openai", "anthropic", "gemini", "perplexity", "linkup"),
    locations=("US", "GB", "DE", "FR"),
)
LARGE = Matrix(
    questions=100,
    engines=("openai", "anthropic", "gemini", "perplexity", "linkup"),
    locations=tuple(["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "BE"] * 2)[:20],
)


async def _finish_in_bulk(database_url: str, batch_ids: list[str]) -> None:
    """Every run completed at a cost and charged once, as the worker would leave them."""
    name = database_url.rsplit("/", 1)[1]
    connection = await asyncpg.connect(f"{ADMIN_URL.rsplit('/', 1)[0]}/{name}", timeout=10)
    try:
        ids = [uuid.UUID(b) for b in batch_ids]
        await connection.execute(
            "UPDATE question_runs SET status = 'completed', cost = 0.0125, simulated = true,"
            " completed_at = now() WHERE batch_id = ANY($1::uuid[])",
            ids,
        )
        await connection.execute(
            "INSERT INTO usage_ledger (id, question_run_id, batch_id, partner_id, amount,"
            " created_at) SELECT gen_random_uuid(), r.id, r.batch_id, o.partner_id, 0.05, now()"
            " FROM question_runs r JOIN evaluation_batches b ON b.id = r.batch_id"
            " JOIN orgs o ON o.id = b.org_id WHERE r.batch_id = ANY($1::uuid[])",
            ids,
        )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()


async def _complete_with_summaries(settings: Settings, batch_ids: list[str]) -> None:
    async with AppContext.create(settings) as context, context.sessions() as session:
        now = context.clock.now()
        for batch_id in batch_ids:
            batch = await session.get_one(EvaluationBatch, uuid.UUID(batch_id))
            batch.status = BatchStatus.COMPLETED
            batch.completed_at = now
            await store_totals(session, batch)
            await store_summary(session, batch, now)
        await session.commit()


async def _middle_cursor(api: httpx.AsyncClient, batch_id: str) -> str:
    """The cursor of the page half way through the batch's runs."""
    path = f"/batches/{batch_id}/results"
    page = (await api.get(path, params={"limit": 500})).raise_for_status().json()
    for _ in range(page["total"] // 1000 - 1):
        params = {"limit": 500, "cursor": page["next_cursor"]}
        page = (await api.get(path, params=params)).raise_for_status().json()
    return str(page["next_cursor"])


async def _latencies(api: httpx.AsyncClient, path: str, count: int) -> list[float]:
    for _ in range(5):  # warm: prepared statements, caches
        (await api.get(path)).raise_for_status()
    seconds = []
    for _ in range(count):
        started = time.perf_counter()
        (await api.get(path)).raise_for_status()
        seconds.append(time.perf_counter() - started)
    return seconds


async def scenario(quick: bool) -> None:
    count = 60 if quick else 200
    async with scratch_database() as url:
        with moto_sqs_server() as endpoint:
            base = bench_settings(url, aws_endpoint_url=endpoint, max_runs_per_batch=20_000)
            queue_url = create_queue_with_dlq(
                base, f"bench-{uuid.uuid4().hex[:8]}", max_receive_count=5
            )
            settings = base.model_copy(update={"sqs_queue_url": queue_url})
            async with api_client(settings) as api:
                batches = []
                for matrix in (SMALL, MEDIUM, LARGE):
                    (org_id,) = await create_orgs(api, 1, matrix)
                    response = await api.post(f"/orgs/{org_id}/evaluations", json={})
                    response.raise_for_status()
                    batches.append(str(response.json()["batch_id"]))
                await _finish_in_bulk(url, batches)
                await _complete_with_summaries(settings, batches)
                small = await _latencies(api, f"/batches/{batches[0]}", count)
                large = await _latencies(api, f"/batches/{batches[2]}", count)
                pages = count // 4
                first_100 = await _latencies(api, f"/batches/{batches[1]}/results?limit=50", pages)
                first_10k = await _latencies(api, f"/batches/{batches[2]}/results?limit=50", pages)
                middle = await _middle_cursor(api, batches[2])
                deep_10k = await _latencies(
                    api, f"/batches/{batches[2]}/results?limit=50&cursor={middle}", pages
                )
    report(
        "reads: GET /batches/{id} and its results",
        [
            Figure(
                f"GET /batches/{{id}} p50 at {LARGE.runs:,} runs",
                median_ms(large),
                "ms",
                median_ms(small),
                f"p50 at {SMALL.runs} runs",
                "≈ ×1",
            ),
            Figure(
                f"GET /batches/{{id}} p99 at {LARGE.runs:,} runs",
                p99(large) * 1000,
                "ms",
                p99(small) * 1000,
                f"p99 at {SMALL.runs} runs",
                "≈ ×1",
            ),
            Figure(
                f"results?limit=50 p50 at {LARGE.runs:,} runs",
                median_ms(first_10k),
                "ms",
                median_ms(first_100),
                f"p50 at {MEDIUM.runs} runs",
                "≤ ×3",
            ),
            Figure(
                "results?limit=50 p50, page half way (cursor)",
                median_ms(deep_10k),
                "ms",
                median_ms(first_10k),
                "the first page",
                "≈ ×1",
            ),
        ],
        [f"{count} sequential requests of each batch, {pages} of each results page, after 5"],
    )
