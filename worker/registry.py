"""Which handler runs each message type, and what happens when its attempts run out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from app.context import AppContext
from app.evaluations.pipeline import evaluate_org, fail_exhausted_job
from app.queue.messages import Message

Handler = Callable[[AppContext, Message, str], Awaitable[None]]
ExhaustedHandler = Callable[[AppContext, Message, str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobKind:
    handle: Handler
    on_exhausted: ExhaustedHandler


REGISTRY: dict[str, JobKind] = {
    "evaluate_org": JobKind(handle=evaluate_org, on_exhausted=fail_exhausted_job),
}
