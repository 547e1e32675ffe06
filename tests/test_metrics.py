"""Prometheus metrics: the API's GET /metrics and the worker's metrics port, parsed with
prometheus_client's own parser; business gauges computed once per window across processes."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from datetime import timedelta

import httpx
import pytest
from mypy_boto3_sqs import SQSClient
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.business_metrics import BusinessGauges
from app.context import AppContext
from app.db.models import AuditEvent
from app.queue.provision import create_queue_with_dlq
from app.settings import Settings
from devtools.embedded import free_port
from tests.clock import OffsetClock
from tests.conftest import make_settings
from tests.factories import create_org, create_partner, expect
from tests.processes import worker_environment, worker_process
from tests.test_api_errors import AUTH, error_body
from tests.test_api_keys import as_key, new_key
from tests.test_audit_trail import event
from tests.test_edge import client_of
from tests.worker_support import eventually

CACHE_SECONDS = 3600.0


@pytest.fixture
def settings(postgres_url: str, queue_url: str, sqs_endpoint: str) -> Settings:
    # A window no test outlasts: the API's own gauge loop never wakes during one, so only the
    # clock the test moves makes the snapshot stale.
    return make_settings(postgres_url, queue_url, sqs_endpoint, metrics_cache_seconds=CACHE_SECONDS)


def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample(family: Metric, suffix: str = "", **labels: str) -> float:
    for item in family.samples:
        if item.name == family.name + suffix and all(
            item.labels.get(k) == v for k, v in labels.items()
        ):
            return float(item.value)
    raise AssertionError(f"no {family.name}{suffix} sample with {labels}")


async def scrape(client: httpx.AsyncClient) -> dict[str, Metric]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return families(response.text)


async def test_api_metrics_count_requests_by_route_and_status(api: httpx.AsyncClient) -> None:
    partner_id = await create_partner(api)
    await api.get(f"/partners/{partner_id}")
    await api.get(f"/partners/{uuid.uuid4()}")
    metrics = await scrape(api)
    requests = metrics["senso_http_requests"]
    assert requests.type == "counter"
    route = "/partners/{partner_id}"
    assert sample(requests, "_total", method="GET", route=route, status="200") >= 1
    assert sample(requests, "_total", method="GET", route=route, status="404") >= 1
    # Raw paths never become labels: a label per id would grow without end.
    assert not any(partner_id in str(s.labels) for s in requests.samples)
    latency = metrics["senso_http_request_duration_seconds"]
    assert latency.type == "histogram"
    assert sample(latency, "_count", method="GET", route=route) >= 2
    for name in ("senso_rate_limit_refusals", "senso_jobs", "senso_runs", "senso_engine_retries"):
        assert name in metrics, name
    for gauge in ("senso_batches", "senso_partners_low_balance", "senso_queue_messages"):
        assert metrics[gauge].type == "gauge", gauge


async def test_metrics_need_the_operator_unless_configured_public(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    partner_id = await create_partner(api)
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as anonymous:
        error_body(await anonymous.get("/metrics"), 401, "unauthorized")
    key = (await new_key(api, partner_id, scopes=["read"]))["key"]
    async with as_key(api, key) as partner:
        error_body(await partner.get("/metrics"), 403, "forbidden")
    public = settings.model_copy(update={"metrics_require_token": False})
    async with client_of(public) as anonymous:
        assert "senso_http_requests" in await scrape(anonymous)


async def test_a_refused_request_is_counted(settings: Settings) -> None:
    limited = settings.model_copy(update={"rate_limit_requests": 1})
    async with client_of(limited, **AUTH) as client:
        await client.get("/partners")
        assert (await client.get("/partners")).status_code == 429
    public = settings.model_copy(update={"metrics_require_token": False})
    async with client_of(public) as anonymous:
        refusals = (await scrape(anonymous))["senso_rate_limit_refusals"]
        assert sample(refusals, "_total", limit="principal") >= 1


async def test_business_gauges_are_computed_once_per_window(
    api: httpx.AsyncClient, context: AppContext, clock: OffsetClock
) -> None:
    # The API computed a snapshot as it started, and shared it through Redis.
    first = await scrape(api)
    assert sample(first["senso_partners_low_balance"]) == 0
    computed_at = sample(first["senso_business_metrics_computed_at_seconds"])

    poor = await create_partner(api, balance="1.00")
    setup = await create_org(api, poor, questions=1, engines=("openai",), locations=("US",))
    expect(await api.post(f"/orgs/{setup.org_id}/evaluations"), 202)
    # Within the window scrapes serve the snapshot: nothing is recomputed.
    for _ in range(3):
        cached = await scrape(api)
        assert sample(cached["senso_partners_low_balance"]) == 0
        assert sample(cached["senso_batches"], status="pending") == 0
        assert sample(cached["senso_business_metrics_computed_at_seconds"]) == computed_at
    other_process = BusinessGauges(context)
    assert await other_process.refresh() is False
    assert other_process.computations == 0

    clock.offset = timedelta(seconds=CACHE_SECONDS + 1)
    assert await other_process.refresh() is True
    assert await BusinessGauges(context).refresh() is False  # shared: computed once
    fresh = await scrape(api)
    assert sample(fresh["senso_partners_low_balance"]) == 1
    assert sample(fresh["senso_batches"], status="pending") == 1
    assert sample(fresh["senso_queue_messages"], state="visible") == 1
    assert sample(fresh["senso_queue_oldest_job_age_seconds"]) >= 0
    assert sample(fresh["senso_business_metrics_computed_at_seconds"]) > computed_at


@pytest.mark.xdist_group("processes")
async def test_worker_serves_metrics_and_consumes_the_audit_queue(
    context: AppContext, settings: Settings, sqs: SQSClient
) -> None:
    audit_queue = create_queue_with_dlq(
        settings, f"audit-{uuid.uuid4().hex[:12]}", max_receive_count=3
    )
    port = free_port()
    env = worker_environment(
        settings,
        AUDIT_SQS_QUEUE_URL=audit_queue,
        AUDIT_SQS_WAIT_SECONDS="1",
        WORKER_METRICS_PORT=str(port),
    )
    sent = event()
    sqs.send_message(QueueUrl=audit_queue, MessageBody=json.dumps(sent))
    async with worker_process(env) as worker, httpx.AsyncClient(timeout=5) as client:

        async def consumed() -> bool:
            assert worker.process.returncode is None, worker.output()
            try:
                text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            except httpx.TransportError:
                return False  # not listening yet
            metrics = families(text)
            for name in (
                "senso_jobs",
                "senso_job_duration_seconds",
                "senso_runs",
                "senso_engine_latency_seconds",
                "senso_rate_limit_wait_seconds",
            ):
                assert name in metrics, name  # fmt: skip
            audit = metrics["senso_audit_events_consumed"]
            return any(s.labels.get("outcome") == "stored" for s in audit.samples)

        await eventually(consumed, limit=60, what="the audit event consumed")
        worker.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(worker.process.wait(), 30) == 0, worker.output()
    async with context.sessions() as session:
        ids = list(await session.scalars(select(AuditEvent.event_id)))
    assert sent["event_id"] in ids
