"""Readiness: every dependency this process needs answers within a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from sqlalchemy import text

from app.context import AppContext

CHECK_TIMEOUT_SECONDS = 3.0


async def check_dependencies(context: AppContext) -> dict[str, str]:
    """Each dependency → "ok" or the reason it failed."""
    checks: dict[str, Awaitable[object]] = {"database": _database(context)}
    if context.queue is not None:
        checks["queue"] = context.queue.ping()
    if context.redis is not None:
        checks["redis"] = context.redis.ping()
    outcomes = await asyncio.gather(*(_timed(c) for c in checks.values()))
    return dict(zip(checks, outcomes, strict=True))


async def _timed(check: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"timed out after {CHECK_TIMEOUT_SECONDS:.0f}s"
    except Exception as exc:
        return type(exc).__name__
    return "ok"


async def _database(context: AppContext) -> None:
    async with context.db.connect() as connection:
        await connection.execute(text("SELECT 1"))
