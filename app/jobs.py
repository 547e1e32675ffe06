"""Job kinds: what a queue message asks for, declared by the domain, run by `worker/`.

A kind declares its handler, a timeout, and how many failed attempts it gets. Its failures are
counted where its work lives (a batch's `job_failures`), not read off the SQS receive count, so
restarts, drains and redeliveries never use up a job's retries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from app.context import AppContext

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class JobControl:
    """What a running job knows of the worker running it."""

    worker_id: str
    # Set when the worker drains (SIGTERM): start nothing new, finish or hand back what runs.
    stopping: asyncio.Event


class JobInterruptedError(Exception):
    """The job stopped before its work was done for a reason that is not its own failure (the
    worker drains): its message goes back to the queue at once and no attempt is used up."""


@dataclass(frozen=True, slots=True)
class JobKind(Generic[M]):
    type: str
    handle: Callable[[AppContext, M, JobControl], Coroutine[Any, Any, None]]
    timeout: float  # seconds; a job running longer is cancelled, and that is a failure
    max_attempts: int  # failed attempts before `on_exhausted`
    # Counts one more failure where the job's work is kept; returns the failures so far.
    record_failure: Callable[[AppContext, M, str], Awaitable[int]]
    on_exhausted: Callable[[AppContext, M, str], Awaitable[None]]
    # A copy of the job reached the dead-letter queue (a crash, too many restarts): True sends
    # it again, False drops it (its work is done, or it has been redriven too often).
    on_dead_letter: Callable[[AppContext, M], Awaitable[bool]]
    # Run by every worker's reconciler: re-send what was stranded (a failed enqueue, a dead
    # worker).
    reconcile: Callable[[AppContext], Awaitable[None]]


JobKinds = dict[str, JobKind[Any]]
