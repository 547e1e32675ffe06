"""Clocks for tests: one that moves only when the test says, one that runs ahead of the others.

With `ManualClock` injected, a worker's heartbeats, backoffs, timeouts and drains happen when
the test calls `advance`, never because the machine was slow or fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

from app.clock import SystemClock

START = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


class ManualClock:
    def __init__(self, start: datetime = START) -> None:
        self._start = start
        self._monotonic = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None], bool]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._monotonic)

    def monotonic(self) -> float:
        return self._monotonic

    def today(self) -> date:
        return self.now().date()

    async def sleep(self, seconds: float) -> None:
        await self._sleep(seconds, idle=True)

    async def _sleep(self, seconds: float, *, idle: bool) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        entry = (self._monotonic + seconds, next(self._order), wake, idle)
        heapq.heappush(self._sleepers, entry)
        await wake

    @contextlib.asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[object]:
        task = asyncio.current_task()
        assert task is not None
        expired = False

        async def watchdog() -> None:
            nonlocal expired
            # A timeout's watch is no idle loop: it does not count as a sleeper.
            await self._sleep(seconds, idle=False)
            expired = True
            task.cancel()

        dog = asyncio.create_task(watchdog())
        try:
            yield None
        except asyncio.CancelledError:
            if expired:
                task.uncancel()
                raise TimeoutError from None
            raise
        finally:
            dog.cancel()

    def advance(self, seconds: float) -> None:
        """Move time on; every sleep that ends by then wakes (its task runs at its next turn)."""
        self._monotonic += seconds
        while self._sleepers and self._sleepers[0][0] <= self._monotonic:
            _, _, wake, _ = heapq.heappop(self._sleepers)
            if not wake.done():
                wake.set_result(None)

    @property
    def sleepers(self) -> int:
        """Sleeps (not timeouts) waiting for time to pass right now: idle loops."""
        return sum(1 for _, _, wake, idle in self._sleepers if idle and not wake.done())

    @property
    def timeouts(self) -> int:
        """Timeouts running on this clock right now."""
        return sum(1 for _, _, wake, idle in self._sleepers if not idle and not wake.done())

    def next_wake(self) -> float | None:
        """Seconds until the earliest sleep ends."""
        pending = [at for at, _, wake, idle in self._sleepers if idle and not wake.done()]
        return min(pending) - self._monotonic if pending else None

    async def wait_for_sleepers(self, count: int, *, limit: float = 30.0) -> None:
        """Until at least `count` sleeps wait on this clock (the loops under test are idle)."""
        deadline = time.monotonic() + limit
        while self.sleepers < count:
            assert time.monotonic() < deadline, f"{self.sleepers} sleeper(s), wanted {count}"
            await asyncio.sleep(0.005)


class OffsetClock(SystemClock):
    """The system's clock, `offset` away from everyone else's: a skewed worker, or an API
    whose day a test moves (`move_to`)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + self.offset

    def today(self) -> date:
        return self.now().date()

    def move_to(self, day: date) -> None:
        """Whole days on, so that today is `day`."""
        self.offset = timedelta(days=(day - super().now().date()).days)


class RecordingClock(SystemClock):
    """The system's clock, keeping every sleep asked of it: whether code waited, and how long
    it meant to, without timing it."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)
