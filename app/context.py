"""The process-wide clients API and worker share: created once, closed on shutdown."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.analysis import Analyst, create_analyst
from app.clock import Clock, SystemClock
from app.db.session import (
    SessionFactory,
    create_engine,
    create_session_factory,
    create_statement_session_factory,
)
from app.engines.ratelimit import LocalRateLimiter, RateLimiter, RedisRateLimiter
from app.engines.registry import EngineRegistry
from app.metrics import TimedRateLimiter
from app.queue.sqs import SqsQueue
from app.settings import Settings
from app.webhooks.sender import WebhookSender


@dataclass
class AppContext:
    settings: Settings
    db: AsyncEngine
    sessions: SessionFactory
    # Sessions for work that is a single statement: no transaction around it (Postgres).
    statements: SessionFactory
    queue: SqsQueue | None
    redis: Redis | None
    engines: EngineRegistry
    analyst: Analyst
    clock: Clock
    webhooks: WebhookSender

    @classmethod
    def create(cls, settings: Settings, clock: Clock | None = None) -> AppContext:
        clock = clock or SystemClock()
        db = create_engine(settings)
        queue = SqsQueue(settings, settings.sqs_queue_url) if settings.sqs_queue_url else None
        redis = (
            Redis.from_url(
                settings.redis_url.get_secret_value(),
                socket_timeout=5,
                socket_connect_timeout=5,
            )
            if settings.redis_url
            else None
        )
        limiter: RateLimiter = TimedRateLimiter(
            LocalRateLimiter(clock)
            if redis is None
            else RedisRateLimiter(redis, settings.redis_key_prefix, clock),
            clock,
        )
        return cls(
            settings=settings,
            db=db,
            sessions=create_session_factory(db),
            statements=create_statement_session_factory(db),
            queue=queue,
            redis=redis,
            engines=EngineRegistry(settings, limiter),
            analyst=create_analyst(settings, limiter),
            clock=clock,
            webhooks=WebhookSender(settings),
        )

    def require_queue(self) -> SqsQueue:
        if self.queue is None:
            raise RuntimeError("SQS_QUEUE_URL is not set")
        return self.queue

    async def __aenter__(self) -> AppContext:
        return self

    async def __aexit__(self, *_exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.engines.aclose()
        await self.analyst.aclose()
        await self.webhooks.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.queue is not None:
            self.queue.close()
        await self.db.dispose()
