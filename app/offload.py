"""The rules' reading of a long answer, run in a thread so the event loop goes on meanwhile.

Extraction and the rule-based reading are linear in the answer's length, but a scraped page of
hundreds of KB still takes a second or more of CPU. On the event loop that second would hold
up everything else the process does: lease renewals, heartbeats, other jobs' engine calls. In a
thread the loop keeps getting its turns (the interpreter switches threads every few ms). A short
answer, the usual one, is read in place: a thread's hand-off would cost more than its reading.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

# Characters from which an answer is read in a thread (some 60–80 ms of the rules' CPU on the
# bench's machine, at 2–2.5 ms per KB).
LONG_ANSWER = 32_000

P = ParamSpec("P")
T = TypeVar("T")


async def read_off_loop(
    text: str, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """`function(*args, **kwargs)`, which reads `text`: in a thread when `text` is long."""
    if len(text) < LONG_ANSWER:
        return function(*args, **kwargs)
    return await asyncio.to_thread(function, *args, **kwargs)
