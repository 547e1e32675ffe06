"""How big one batch, and one org's evaluation matrix, may be. Each refusal says the limit and
how far over it the request is."""

from __future__ import annotations

from typing import Literal

from app.errors import ConflictError, InvalidInputError
from app.settings import Settings

Axis = Literal["questions", "engines", "countries"]


def check_batch_size(limit: int, runs: int) -> None:
    """409 `batch_too_large` when a trigger would create a batch of more than `limit` runs
    (MAX_RUNS_PER_BATCH): every ask of every question, engine and country of the org, up to
    `max_samples` when sampling is adaptive."""
    if runs > limit:
        raise ConflictError(
            {
                "message": f"the batch would have {runs} runs; at most {limit} are allowed, "
                f"{runs - limit} over",
                "limit": limit,
                "runs": runs,
                "over": runs - limit,
            },
            code="batch_too_large",
        )


def check_matrix_axis(settings: Settings, axis: Axis, count: int) -> None:
    """422 `matrix_too_large` when an org would get more questions, engines or countries than
    MAX_QUESTIONS_PER_ORG / MAX_ENGINES_PER_ORG / MAX_COUNTRIES_PER_ORG allow."""
    limit = {
        "questions": settings.max_questions_per_org,
        "engines": settings.max_engines_per_org,
        "countries": settings.max_countries_per_org,
    }[axis]
    if count > limit:
        raise InvalidInputError(
            {
                "message": f"{count} {axis} given; an org may have at most {limit}, "
                f"{count - limit} over",
                "axis": axis,
                "limit": limit,
                "given": count,
                "over": count - limit,
            },
            code="matrix_too_large",
        )
