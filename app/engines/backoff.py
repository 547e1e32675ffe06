"""How long to wait before asking a provider again."""

from __future__ import annotations

import random


def backoff_seconds(
    attempt: int, retry_after: float | None, *, base_seconds: float, max_seconds: float
) -> float:
    """Capped exponential backoff with full jitter, never shorter than the provider asked.

    `attempt` is the number of the call that just failed, from 1.
    """
    ceiling = min(max_seconds, base_seconds * 2 ** (attempt - 1))
    return max(retry_after or 0.0, random.uniform(0, ceiling))
