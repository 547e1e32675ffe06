"""Time as a dependency: every wait, timeout and timestamp of the runtime goes through a Clock.

The process uses `SystemClock`; tests inject one they move by hand, so nothing has to sleep for
time to pass. What several processes must agree on (leases, heartbeats, stall detection) is not
read from any process's clock but from the database's (`app.db.clock.db_now`).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from datetime import UTC, date, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC wall-clock time."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back: durations and deadlines."""
        ...

    def today(self) -> date:
        """The UTC date."""
        ...

    async def sleep(self, seconds: float) -> None: ...

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        """Cancel the block after `seconds` of this clock and raise TimeoutError."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def today(self) -> date:
        return self.now().date()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def timeout(self, seconds: float) -> AbstractAsyncContextManager[object]:
        return asyncio.timeout(max(0.0, seconds))


async def sleep_until_set(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds` on the clock or until `event` is set; True when the event ended it."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
        await asyncio.gather(waiter, sleeper, return_exceptions=True)
    return event.is_set()
