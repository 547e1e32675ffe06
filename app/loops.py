"""Background loops under one supervisor: a failure is logged and retried, never silent.

A `LoopService` does one unit of work in `run_once`. `run` repeats it every `interval` on the
injected clock; an iteration that raises or outlasts `iteration_timeout` is logged with the
loop's context and retried with capped exponential backoff; after `max_failures` in a row (or
once the loop's own deadline has passed) the loop gives up: `on_give_up` stops the work the loop
protects, and `run` raises `LoopGaveUpError` so whoever awaits it knows. Tests drive a loop one
iteration at a time with `run_once`, or through `run` on a clock they move by hand.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from app.clock import Clock, sleep_until_set
from app.errors import describe_error
from app.logging import log_context

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    interval: float  # seconds between iterations
    iteration_timeout: float  # an iteration taking longer has failed
    max_failures: int | None = 3  # in a row before the loop gives up; None: never
    backoff_base: float = 1.0  # first retry after a failure
    backoff_max: float = 30.0

    def backoff(self, failures: int) -> float:
        """Seconds before the next try after `failures` failures in a row (never above the
        loop's own interval: retrying is never slower than not failing)."""
        delay = self.backoff_base * 2.0 ** (failures - 1)
        return min(delay, self.backoff_max, self.interval)


class LoopGaveUpError(Exception):
    """A supervised loop failed `max_failures` times in a row, or passed its deadline."""

    def __init__(self, name: str, failures: int, cause: BaseException | None) -> None:
        why = describe_error(cause) if cause is not None else "deadline passed"
        super().__init__(f"{name} gave up after {failures} failure(s) in a row: {why}")
        self.name = name
        self.cause = cause


class LoopService(ABC):
    """One background loop; subclasses say what an iteration does and what giving up stops."""

    name: str = "loop"

    def __init__(self, clock: Clock, policy: LoopPolicy) -> None:
        self.clock = clock
        self.policy = policy
        self.failures = 0  # in a row

    @abstractmethod
    async def run_once(self) -> None:
        """One iteration. Raising counts as a failure."""

    async def on_give_up(self, error: LoopGaveUpError) -> None:
        """Stop the work the loop protects. By default there is none to stop."""
        return

    def deadline(self) -> float | None:
        """A monotonic instant by which an iteration must have succeeded, or None."""
        return None

    def log_fields(self) -> dict[str, Any]:
        return {}

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Iterate until `stop` is set (returns) or the loop gives up (raises LoopGaveUpError)."""
        stop = stop or asyncio.Event()
        with log_context(loop=self.name, **self.log_fields()):
            while True:
                wait = self.policy.interval if self.failures == 0 else self._retry_in()
                if await sleep_until_set(self.clock, stop, wait):
                    return
                await self._iterate()

    async def _iterate(self) -> None:
        try:
            async with self.clock.timeout(self._iteration_budget()):
                await self.run_once()
        except Exception as exc:
            self.failures += 1
            error = describe_error(exc)
            if self._must_give_up():
                gave_up = LoopGaveUpError(self.name, self.failures, exc)
                logger.error(
                    "background loop gave up",
                    extra={"failures": self.failures, "error": error},
                    exc_info=exc,
                )
                await self.on_give_up(gave_up)
                raise gave_up from exc
            logger.warning(
                "background loop iteration failed; retrying",
                extra={
                    "failures": self.failures,
                    "retry_in_seconds": round(self._retry_in(), 3),
                    "error": error,
                },
                exc_info=exc,
            )
            return
        if self.failures:
            logger.info("background loop recovered", extra={"after_failures": self.failures})
            self.failures = 0

    def _iteration_budget(self) -> float:
        budget = self.policy.iteration_timeout
        deadline = self.deadline()
        if deadline is not None:
            budget = min(budget, deadline - self.clock.monotonic())
        return max(0.0, budget)

    def _retry_in(self) -> float:
        return self.policy.backoff(self.failures)

    def _must_give_up(self) -> bool:
        if self.policy.max_failures is not None and self.failures >= self.policy.max_failures:
            return True
        deadline = self.deadline()
        # No point in a retry that could only land after the deadline.
        return deadline is not None and self.clock.monotonic() + self._retry_in() >= deadline
