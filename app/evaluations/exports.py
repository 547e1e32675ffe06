"""CSV exports, streamed: a batch's runs, and an org's trend points."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence

from sqlalchemy import Result, select

from app.db.models import QuestionRun, RunCitation, RunCompetitor, RunMention
from app.db.session import SessionFactory
from app.evaluations.results import RUN_ORDER
from app.evaluations.schemas import TrendRead

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
    """The header, then one line per run in the order of the JSON results, read in chunks
    from a session of its own (the request's has ended by the time the body streams)."""
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
            ids = [run.id for run in runs]
            mentions = {
                m.run_id: m
                for m in await session.scalars(select(RunMention).where(RunMention.run_id.in_(ids)))
            }
            competitors = _joined(
                await session.execute(
                    select(RunCompetitor.run_id, RunCompetitor.name)
                    .where(RunCompetitor.run_id.in_(ids))
                    .order_by(RunCompetitor.name)
                )
            )
            domains = _joined(
                await session.execute(
                    select(RunCitation.run_id, RunCitation.domain)
                    .where(RunCitation.run_id.in_(ids), RunCitation.domain.is_not(None))
                    .order_by(RunCitation.rank)
                )
            )
        for run in runs:
            mention = mentions.get(run.id)
            yield _line(
                [
                    _text(v)
                    for v in (
                        run.id,
                        run.question_text,
                        run.engine_id,
                        run.location,
                        run.sample,
                        run.status.value,
                        run.model,
                        run.searched,
                        None if mention is None else mention.mentioned and not mention.negated,
                        None if mention is None else mention.list_position,
                        None if mention is None else mention.sentiment,
                        competitors.get(run.id),
                        domains.get(run.id),
                        run.cost,
                    )
                ]
            )
        if len(runs) < CHUNK:
            return
        offset += CHUNK


def _joined(rows: Result[uuid.UUID, str | None]) -> dict[uuid.UUID, str]:
    names: dict[uuid.UUID, list[str | None]] = {}
    for run_id, name in rows.all():
        found = names.setdefault(run_id, [])
        if name not in found:
            found.append(name)
    return {run_id: LIST_SEPARATOR.join(n for n in found if n) for run_id, found in names.items()}


async def trend_rows(trends: Iterable[TrendRead]) -> AsyncIterator[str]:
    yield _line(TREND_COLUMNS)
    for trend in trends:
        for point in trend.points:
            low, high = point.interval if point.interval is not None else (None, None)
            yield _line(
                [
                    _text(v)
                    for v in (
                        trend.metric,
                        point.period.start,
                        point.period.end,
                        trend.engine,
                        trend.location,
                        point.value,
                        low,
                        high,
                        point.cells,
                        point.answers,
                    )
                ]
            )
