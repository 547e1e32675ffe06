"""A long answer is read in a thread: the event loop goes on while the rules read it (lease
renewals, heartbeats and other jobs' calls run on that loop); a short one is read in place."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from app.analysis.simulated import SimulatedAnalyst
from app.extraction import OrgProfile, extract
from app.offload import LONG_ANSWER, read_off_loop

STRETCH = (
    "Acme Analytics is a solid choice for product teams; Mixpanel is close. I'm not aware of "
    "Acme's pricing. See https://acme.io/pricing for details.\n\n- Acme Analytics\n- Mixpanel\n"
)
# Well past the threshold: a scraped page of about 400 KB, a good half second of the rules.
LONG = STRETCH * 3000
SHORT = STRETCH * 10


@asynccontextmanager
async def ticking() -> AsyncIterator[Callable[[], int]]:
    """A task that counts its turns on the loop; yields a reading of the count."""
    turns = 0

    async def tick() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(tick())
    await asyncio.sleep(0)
    try:
        yield lambda: turns
    finally:
        task.cancel()


def test_the_threshold_is_between_the_two_answers() -> None:
    assert len(SHORT) < LONG_ANSWER <= len(LONG)


async def test_a_long_answer_is_read_while_the_loop_goes_on() -> None:
    org = OrgProfile(name="Acme Analytics", aliases=("Acme",), domains=("acme.io",))
    threads: list[threading.Thread] = []

    def read(text: str) -> object:
        threads.append(threading.current_thread())
        return extract(org, text, (), (), ("Mixpanel",))

    async with ticking() as turns:
        before = turns()
        extraction = await read_off_loop(LONG, read, LONG)
        during = turns() - before
    assert extraction == extract(org, LONG, (), (), ("Mixpanel",))
    [thread] = threads
    assert thread is not threading.main_thread()
    assert during > 0


async def test_a_short_answer_is_read_in_place() -> None:
    threads: list[threading.Thread] = []

    def read(text: str) -> int:
        threads.append(threading.current_thread())
        return len(text)

    assert await read_off_loop(SHORT, read, SHORT) == len(SHORT)
    assert threads == [threading.main_thread()]


async def test_the_rule_analyst_reads_a_long_answer_off_the_loop() -> None:
    analyst = SimulatedAnalyst()
    async with ticking() as turns:
        before = turns()
        analysis = await analyst.analyse_answer(
            "Which analytics tool?", LONG, "Acme Analytics", ("Acme",), ("Mixpanel",)
        )
        during = turns() - before
    assert during > 0
    assert "Mixpanel" in analysis.competitors
    short = await analyst.analyse_answer(
        "Which analytics tool?", SHORT, "Acme Analytics", ("Acme",), ("Mixpanel",)
    )
    assert (short.competitors, short.sentiment) == (analysis.competitors, analysis.sentiment)
