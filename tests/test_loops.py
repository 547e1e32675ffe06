"""The supervisor of background loops, on a clock the test moves: failed iterations are logged
and retried with backoff, a loop recovers, gives up after LOOP_MAX_FAILURES in a row or at its
deadline (stopping what it protects), and an iteration that hangs counts as a failure. And the
errors recorded for people to read are short and never carry SQL or its parameters."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from app.db.session import create_engine, create_session_factory
from app.errors import describe_error
from app.loops import LoopGaveUpError, LoopPolicy, LoopService
from app.settings import Settings
from tests.clock import ManualClock
from tests.worker_support import eventually


class Scripted(LoopService):
    """Each iteration takes the next outcome: None succeeds, an exception fails, "hang" hangs."""

    name = "scripted"

    def __init__(
        self, clock: ManualClock, policy: LoopPolicy, outcomes: list[Exception | str | None]
    ) -> None:
        super().__init__(clock, policy)
        self.outcomes = outcomes
        self.iterations: list[float] = []
        self.gave_up: list[LoopGaveUpError] = []
        self.limit: float | None = None

    async def run_once(self) -> None:
        self.iterations.append(self.clock.monotonic())
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome == "hang":
            await asyncio.Event().wait()
        if isinstance(outcome, Exception):
            raise outcome

    async def on_give_up(self, error: LoopGaveUpError) -> None:
        self.gave_up.append(error)

    def deadline(self) -> float | None:
        return self.limit


POLICY = LoopPolicy(interval=10, iteration_timeout=5, max_failures=3, backoff_base=1)


async def step(clock: ManualClock, seconds: float) -> None:
    await clock.wait_for_sleepers(1)
    clock.advance(seconds)


async def test_a_failed_iteration_is_logged_retried_with_backoff_and_the_loop_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    loop = Scripted(clock, POLICY, [None, OSError("gone"), OSError("still gone"), None, None])
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="app.loops"):
        task = asyncio.create_task(loop.run(stop))
        for seconds in (10, 10, 1, 2, 10):
            await step(clock, seconds)
        await clock.wait_for_sleepers(1)
        stop.set()
        await asyncio.wait_for(task, 5)

    # Every 10 s; after a failure 1 s, then 2 s; back to 10 s once it worked again.
    assert loop.iterations == [10, 20, 21, 23, 33]
    assert loop.failures == 0
    assert loop.gave_up == []
    records = [r for r in caplog.records if r.name == "app.loops"]
    assert [r.getMessage() for r in records] == [
        "background loop iteration failed; retrying",
        "background loop iteration failed; retrying",
        "background loop recovered",
    ]
    assert [getattr(r, "error", None) for r in records[:2]] == [
        "OSError: gone",
        "OSError: still gone",
    ]
    assert [getattr(r, "retry_in_seconds", None) for r in records[:2]] == [1.0, 2.0]
    assert all(getattr(r, "loop", None) is None for r in records)  # context, not attributes


async def test_after_max_failures_in_a_row_the_loop_stops_what_it_protects() -> None:
    clock = ManualClock()
    loop = Scripted(clock, POLICY, [OSError("a"), OSError("b"), OSError("c"), None])
    task = asyncio.create_task(loop.run())
    for seconds in (10, 1, 2):
        await step(clock, seconds)
    with pytest.raises(LoopGaveUpError, match="scripted gave up after 3 failure"):
        await asyncio.wait_for(task, 5)
    assert len(loop.gave_up) == 1
    assert str(loop.gave_up[0]) == "scripted gave up after 3 failure(s) in a row: OSError: c"


async def test_an_iteration_that_hangs_is_a_failure() -> None:
    clock = ManualClock()
    loop = Scripted(clock, POLICY, ["hang", None])
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await step(clock, 10)
    await eventually(lambda: clock.timeouts == 1, what="the iteration to hang")
    clock.advance(5)  # the iteration's timeout
    await step(clock, 1)  # retried after the backoff
    await clock.wait_for_sleepers(1)
    assert (loop.iterations, loop.failures) == ([10, 16], 0)
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_a_loop_gives_up_rather_than_retry_past_its_deadline() -> None:
    clock = ManualClock()
    loop = Scripted(clock, POLICY, [OSError("a"), OSError("b")])
    loop.limit = 12.5  # the next retry (at 13 s) would come too late
    task = asyncio.create_task(loop.run())
    await step(clock, 10)
    await step(clock, 1)
    with pytest.raises(LoopGaveUpError):
        await asyncio.wait_for(task, 5)
    assert loop.iterations == [10, 11]
    assert len(loop.gave_up) == 1


async def test_a_loop_without_a_failure_limit_never_gives_up() -> None:
    clock = ManualClock()
    policy = LoopPolicy(interval=10, iteration_timeout=5, max_failures=None, backoff_max=4)
    loop = Scripted(clock, policy, [OSError(str(n)) for n in range(6)])
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    for seconds in (10, 1, 2, 4, 4, 4, 4):
        await step(clock, seconds)
    await clock.wait_for_sleepers(1)
    assert (loop.failures, len(loop.iterations), loop.gave_up) == (0, 7, [])
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_errors_described_for_people_carry_no_sql_and_no_parameters(
    postgres_url: str,
) -> None:
    secret_answer = "the answer text " + uuid.uuid4().hex
    engine = create_engine(Settings(database_url=SecretStr(postgres_url)))
    try:
        async with create_session_factory(engine)() as session:
            with pytest.raises(ProgrammingError) as raised:
                await session.execute(
                    text("INSERT INTO no_such_table (answer) VALUES (:answer)"),
                    {"answer": secret_answer},
                )
    finally:
        await engine.dispose()
    described = describe_error(raised.value)
    assert described.startswith('UndefinedTableError: relation "no_such_table"')
    assert "INSERT" not in described
    assert secret_answer not in described
    assert secret_answer not in str(raised.value), "hidden from the full message too"
    assert len(describe_error(RuntimeError("x" * 5000))) == 300
    assert describe_error(TimeoutError()) == "TimeoutError"
