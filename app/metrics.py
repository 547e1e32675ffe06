"""Prometheus metrics of the API and the worker, in one registry of this process.

The API serves them at `GET /metrics`, the worker on WORKER_METRICS_PORT. Labels are bounded:
route templates (never raw paths), engine ids, job kinds and fixed outcomes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.clock import Clock
from app.engines.ratelimit import RateLimit, RateLimiter

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# API
HTTP_REQUESTS = Counter(
    "senso_http_requests",
    "HTTP requests answered, by method, route template and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "senso_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    registry=REGISTRY,
)
RATE_LIMIT_REFUSALS = Counter(
    "senso_rate_limit_refusals",
    "Requests refused with 429: principal, anonymous (per address) or auth_failures",
    ["limit"],
    registry=REGISTRY,
)

# Worker
JOBS = Counter(
    "senso_jobs",
    "Jobs ended, by kind and outcome (done, failed, timeout, interrupted)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
JOB_DURATION = Histogram(
    "senso_job_duration_seconds",
    "Time a job ran on this worker",
    ["kind"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf")),
    registry=REGISTRY,
)
RUNS = Counter(
    "senso_runs", "Runs ended, by engine and outcome", ["engine", "outcome"], registry=REGISTRY
)
ENGINE_LATENCY = Histogram(
    "senso_engine_latency_seconds",
    "Latency of an engine's answer",
    ["engine"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, float("inf")),
    registry=REGISTRY,
)
ENGINE_RETRIES = Counter(
    "senso_engine_retries", "Engine calls retried after a failure", ["engine"], registry=REGISTRY
)
RATE_LIMIT_WAIT = Histogram(
    "senso_rate_limit_wait_seconds",
    "Time a call waited for its shared rate-limit slot, by limiter",
    ["limiter"],
    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf")),
    registry=REGISTRY,
)
# Database
DATABASE_PINGS = Counter(
    "senso_database_pings",
    "Liveness pings of pooled Postgres connections that sat idle before being checked out",
    registry=REGISTRY,
)
AUDIT_EVENTS = Counter(
    "senso_audit_events_consumed",
    "Messages of the audit queue, by outcome (stored, duplicate, invalid)",
    ["outcome"],
    registry=REGISTRY,
)


def exposition() -> bytes:
    return generate_latest(REGISTRY)


def observe_run(engine: str, outcome: str, latency_ms: int | None = None) -> None:
    RUNS.labels(engine, outcome).inc()
    if latency_ms is not None:
        ENGINE_LATENCY.labels(engine).observe(latency_ms / 1000)


def count_retry(engine: str) -> None:
    ENGINE_RETRIES.labels(engine).inc()


def observe_job(kind: str, outcome: str, seconds: float) -> None:
    JOBS.labels(kind, outcome).inc()
    JOB_DURATION.labels(kind).observe(seconds)


class TimedRateLimiter:
    """A rate limiter that records how long each call waited for its slot."""

    def __init__(self, inner: RateLimiter, clock: Clock) -> None:
        self._inner = inner
        self._clock = clock

    @asynccontextmanager
    async def slot(self, name: str, limit: RateLimit) -> AsyncIterator[None]:
        started = self._clock.monotonic()
        async with self._inner.slot(name, limit):
            RATE_LIMIT_WAIT.labels(name).observe(self._clock.monotonic() - started)
            yield
