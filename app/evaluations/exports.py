"""CSV exports, streamed: a batch's runs, and an org's trend points."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence

from sqlalchemy import select

from app.db.models import QuestionRun
from app.db.session import SessionFactory
from app.evaluations.metrics import Metric
from app.evaluations.results import RUN_ORDER, run_reads
from app.evaluations.schemas import RunRead, TrendPoint

CHUNK = 500
RUN_COLUMNS = (
    "run_id",
    "question",
    "engine",
    "country",
    "sample",
    "status",
    "model",
    "searched",
    "mentioned",
    "position",
    "sentiment",
    "competitors",
    "cited_domains",
    "cost",
)
TREND_COLUMNS = (
    "metric",
    "period_start",
    "period_end",
    "engine",
    "country",
    "value",
    "low",
    "high",
    "cells",
    "answers",
)
# Several names in one cell: joined by this, which no name or domain holds.
LIST_SEPARATOR = "; "


def _line(values: Sequence[object]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)
    return out.getvalue()


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def run_rows(sessions: SessionFactory, batch_id: uuid.UUID) -> AsyncIterator[str]:
    """The header, then one line per run as the JSON results read it, in their order, a
    page at a time from a session of its own (the request's has ended when the body streams)."""
    yield _line(RUN_COLUMNS)
    offset = 0
    while True:
        async with sessions() as session:
            runs = list(
                await session.scalars(
                    select(QuestionRun)
                    .where(QuestionRun.batch_id == batch_id)
                    .order_by(*RUN_ORDER)
                    .limit(CHUNK)
                    .offset(offset)
                )
            )
            reads = await run_reads(session, runs)
        for run in reads:
            yield _line([_text(v) for v in _run_values(run)])
        if len(runs) < CHUNK:
            return
        offset += CHUNK


def _run_values(run: RunRead) -> tuple[object, ...]:
    mention = run.mention
    return (
        run.run_id,
        run.question,
        run.engine,
        run.location,
        run.sample,
        run.status.value,
        run.model,
        run.searched,
        None if mention is None else mention.mentioned and not mention.negated,
        None if mention is None else mention.list_position,
        None if mention is None else mention.sentiment,
        LIST_SEPARATOR.join(sorted(dict.fromkeys(c.name for c in run.competitors))),
        LIST_SEPARATOR.join(dict.fromkeys(c.domain for c in run.citations if c.domain)),
        run.cost,
    )


async def trend_rows(
    points: Mapping[Metric, Sequence[TrendPoint]], engine: str | None, location: str | None
) -> AsyncIterator[str]:
    yield _line(TREND_COLUMNS)
    for metric, periods in points.items():
        for point in periods:
            low, high = point.interval if point.interval is not None else (None, None)
            yield _line(
                [
                    _text(v)
                    for v in (
                        metric.value,
                        point.period.start,
                        point.period.end,
                        engine,
                        location,
                        point.value,
                        low,
                        high,
                        point.cells,
                        point.answers,
                    )
                ]
            )
