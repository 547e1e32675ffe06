"""Business gauges: batches by status, the job queue's depth and the age of its oldest job,
partners whose available money is below METRICS_LOW_BALANCE_THRESHOLD.

They cost queries, so a background loop of each API process computes them at most once per
METRICS_CACHE_SECONDS across all processes: the snapshot lives in Redis with the time it was
computed, and a process computes only when the shared one is stale (one at a time, under a
short Redis lock). A scrape only reads the snapshot: it never touches the database or SQS.
Without Redis each process keeps its own.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Numeric, cast, func, literal, select

from app.context import AppContext
from app.db.models import BatchStatus, EvaluationBatch, Partner
from app.errors import describe_error
from app.loops import LoopPolicy, LoopService

logger = logging.getLogger(__name__)

_COMPUTE_LOCK_SECONDS = 30


class BusinessGauges(LoopService, Collector):
    name = "business_metrics"

    def __init__(self, context: AppContext) -> None:
        interval = context.settings.metrics_cache_seconds
        super().__init__(
            context.clock,
            LoopPolicy(interval=interval, iteration_timeout=max(interval, 30.0), max_failures=None),
        )
        self._context = context
        self._key = f"{context.settings.redis_key_prefix}:metrics:business"
        self._local: dict[str, Any] | None = None
        self.computations = 0  # by this process

    async def run_once(self) -> None:
        await self.refresh()

    async def iterate_once(self) -> None:
        """One refresh that never raises (at start, the database may not be up yet)."""
        try:
            await self.refresh()
        except Exception as exc:
            logger.warning("business metrics not computed", extra={"error": describe_error(exc)})

    async def refresh(self) -> bool:
        """Compute and share a new snapshot when the shared one is stale; True if computed."""
        current = await self._read()
        if current is not None and not self._stale(current):
            self._local = current
            return False
        redis = self._context.redis
        if redis is not None and not await redis.set(
            f"{self._key}:lock", "1", nx=True, ex=_COMPUTE_LOCK_SECONDS
        ):
            return False  # another process is computing it right now
        try:
            snapshot = await self._compute()
            self.computations += 1
            self._local = snapshot
            if redis is not None:
                await redis.set(self._key, json.dumps(snapshot))
        finally:
            if redis is not None:
                await redis.delete(f"{self._key}:lock")
        return True

    async def load(self) -> None:
        """What a scrape serves: the shared snapshot (one Redis read), else this process's."""
        try:
            shared = await self._read()
        except Exception as exc:
            logger.warning("business metrics unreadable", extra={"error": describe_error(exc)})
            return
        if shared is not None:
            self._local = shared

    def _stale(self, snapshot: dict[str, Any]) -> bool:
        computed_at = datetime.fromisoformat(snapshot["computed_at"])
        age = (self.clock.now() - computed_at).total_seconds()
        return age >= self._context.settings.metrics_cache_seconds or age < 0

    async def _read(self) -> dict[str, Any] | None:
        redis = self._context.redis
        if redis is None:
            return self._local
        raw = await redis.get(self._key)
        return None if raw is None else dict(json.loads(raw))

    async def _compute(self) -> dict[str, Any]:
        settings = self._context.settings
        now = self.clock.now()
        async with self._context.sessions() as session:
            by_status = dict(
                (
                    await session.execute(
                        select(EvaluationBatch.status, func.count()).group_by(
                            EvaluationBatch.status
                        )
                    )
                ).all()
            )
            oldest = await session.scalar(
                select(
                    func.min(
                        func.coalesce(EvaluationBatch.last_enqueued_at, EvaluationBatch.created_at)
                    )
                ).where(EvaluationBatch.status == BatchStatus.PENDING)
            )
            money = Numeric(18, 6)
            low = await session.scalar(
                select(func.count())
                .select_from(Partner)
                .where(
                    cast(Partner.balance, money) - cast(Partner.reserved, money)
                    < literal(settings.metrics_low_balance_threshold, money)
                )
            )
        depth: dict[str, int] = {}
        if self._context.queue is not None:
            try:
                depth = await self._context.queue.depth()
            except Exception as exc:
                logger.warning("queue depth unavailable", extra={"error": describe_error(exc)})
        return {
            "computed_at": now.isoformat(),
            "batches": {status.value: int(by_status.get(status, 0)) for status in BatchStatus},
            "queue_depth": depth,
            "oldest_job_age_seconds": (
                None if oldest is None else max(0.0, (now - oldest).total_seconds())
            ),
            "partners_low_balance": int(low or 0),
        }

    def collect(self) -> Iterator[Metric]:
        snapshot = self._local
        if snapshot is None:
            return
        batches = GaugeMetricFamily("senso_batches", "Batches by status", labels=["status"])
        for status, count in snapshot["batches"].items():
            batches.add_metric([status], count)
        yield batches
        depth = GaugeMetricFamily(
            "senso_queue_messages", "Messages of the job queue, by state", labels=["state"]
        )
        for state, count in snapshot["queue_depth"].items():
            depth.add_metric([state], count)
        yield depth
        age = snapshot["oldest_job_age_seconds"]
        yield GaugeMetricFamily(
            "senso_queue_oldest_job_age_seconds",
            "Age of the oldest job waiting for a worker (its batch still pending)",
            value=0.0 if age is None else age,
        )
        yield GaugeMetricFamily(
            "senso_partners_low_balance",
            "Partners whose available money is below METRICS_LOW_BALANCE_THRESHOLD",
            value=snapshot["partners_low_balance"],
        )
        computed_at = datetime.fromisoformat(snapshot["computed_at"])
        yield GaugeMetricFamily(
            "senso_business_metrics_computed_at_seconds",
            "When the business gauges above were computed (Unix time)",
            value=computed_at.timestamp(),
        )
