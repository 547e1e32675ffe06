"""Trends and change verdicts, read from the cell rows completed batches stored.

A trend point pools every cell of the period's completed batches (a cell asked on two days of a
week counts twice) and its interval resamples the questions of the period. A change compares
the last `window` days with the `window` days before, questions of both windows resampled
together, and says up or down only when the family-wise interval — Bonferroni over every
comparison reported beside it — excludes 0.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from typing import Any, TypeVarTuple

from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from app.db.models import BatchStatus, CellMetric, EvaluationBatch
from app.errors import InvalidInputError
from app.evaluations import stats
from app.evaluations.metrics import HEADLINE_METRICS, Metric
from app.evaluations.schemas import (
    AnswerCounts,
    ChangeRead,
    ChangesRead,
    EngineModels,
    MethodologyRead,
    MetricChanges,
    Period,
    SamplesPerCell,
    TrendPoint,
    TrendRead,
)

_Columns = TypeVarTuple("_Columns")

MAX_TREND_DAYS = 731
MAX_WINDOW_DAYS = 90
DEFAULT_DAYS = {"day": 30, "week": 84}


class Granularity(StrEnum):
    DAY = "day"
    WEEK = "week"


@dataclass(frozen=True, slots=True)
class _Cell:
    question: uuid.UUID
    engine: str
    location: str
    batch_date: date
    value: float
    answers: int


async def _cells(
    session: AsyncSession,
    org_id: uuid.UUID,
    metrics: Sequence[Metric],
    start: date,
    end: date,
    engine: str | None = None,
    location: str | None = None,
) -> dict[Metric, list[_Cell]]:
    """The org's cells of completed batches in range, per metric, in one read."""
    query = (
        select(
            CellMetric.metric,
            CellMetric.question_id,
            CellMetric.engine_id,
            CellMetric.location,
            CellMetric.batch_date,
            CellMetric.value,
            CellMetric.answers,
        )
        .join(EvaluationBatch, EvaluationBatch.id == CellMetric.batch_id)
        .where(
            CellMetric.metric.in_([m.value for m in metrics]),
            *completed_cells(org_id, start, end, engine, location),
        )
    )
    found: dict[Metric, list[_Cell]] = {m: [] for m in metrics}
    for row in await _rows(session, query):
        found[Metric(row.metric)].append(
            _Cell(
                row.question_id,
                row.engine_id,
                row.location,
                row.batch_date,
                row.value,
                row.answers,
            )
        )
    return found


async def _rows(session: AsyncSession, query: Select[*_Columns]) -> Sequence[Row[*_Columns]]:
    """The rows of a read of plain columns, run on the session's connection: through the
    ORM's row loading a year's trend took 80 ms p50, 70 ms without (alternating bench runs)."""
    connection = await session.connection()
    return (await connection.execute(query)).all()


def _sums(cells: Iterable[_Cell]) -> dict[Hashable, stats.QuestionSums]:
    return stats.by_question((c.question, c.value, c.answers) for c in cells)


def period_start(day: date, granularity: Granularity) -> date:
    return day if granularity == Granularity.DAY else day - timedelta(days=day.weekday())


def periods(start: date, end: date, granularity: Granularity) -> list[date]:
    """The first day of every period that meets the range (a week's Monday may precede it)."""
    step = timedelta(days=1 if granularity == Granularity.DAY else 7)
    first, periods = period_start(start, granularity), []
    while first <= end:
        periods.append(first)
        first += step
    return periods


def trend_range(
    today: date, date_from: date | None, date_to: date | None, granularity: Granularity
) -> tuple[date, date]:
    end = date_to or today
    start = date_from or end - timedelta(days=DEFAULT_DAYS[granularity] - 1)
    if start > end:
        raise InvalidInputError(f"from ({start}) is after to ({end})", code="invalid_range")
    if (end - start).days + 1 > MAX_TREND_DAYS:
        raise InvalidInputError(
            f"a trend spans at most {MAX_TREND_DAYS} days; {start}..{end} is "
            f"{(end - start).days + 1}",
            code="invalid_range",
        )
    return start, end


async def trend_points(
    session: AsyncSession,
    org_id: uuid.UUID,
    metrics: Sequence[Metric],
    start: date,
    end: date,
    granularity: Granularity,
    engine: str | None,
    location: str | None,
) -> dict[Metric, list[TrendPoint]]:
    """Each metric's points, one per period in range, from one read of the cells."""
    daily = await read_daily_sums(session, org_id, metrics, start, end, engine, location)
    seed = trend_seed(org_id, engine, location, granularity, start, end)
    return {
        metric: points_of(period_sums(daily[metric], start, end, granularity), seed)
        for metric in metrics
    }


QuestionSums = dict[Hashable, stats.QuestionSums]
DailySums = dict[date, QuestionSums]


async def read_daily_sums(
    session: AsyncSession,
    org_id: uuid.UUID,
    metrics: Sequence[Metric],
    start: date,
    end: date,
    engine: str | None = None,
    location: str | None = None,
) -> dict[Metric, DailySums]:
    """Each metric's question sums per day, added up by the database: a trend needs no more
    of its cells, so a year of them is a few thousand rows, not hundreds of thousands."""
    found: dict[Metric, DailySums] = {m: {} for m in metrics}
    grouped = await sums_by(
        session,
        (CellMetric.metric, CellMetric.batch_date),
        [
            CellMetric.metric.in_([m.value for m in metrics]),
            *completed_cells(org_id, start, end, engine, location),
        ],
    )
    for (metric, day), sums in grouped.items():
        found[Metric(metric)][day] = sums
    return found


async def sums_by(
    session: AsyncSession,
    keys: Sequence[InstrumentedAttribute[Any]],
    conditions: Sequence[ColumnElement[bool]],
) -> dict[tuple[Any, ...], QuestionSums]:
    """The question sums of the cells that meet `conditions` (cell rows joined to their
    batch), grouped by `keys`: added up by the database."""
    query = (
        select(
            *keys,
            CellMetric.question_id,
            func.sum(CellMetric.value),
            func.count(),
            func.sum(CellMetric.answers),
        )
        .join(EvaluationBatch, EvaluationBatch.id == CellMetric.batch_id)
        .where(*conditions)
        .group_by(*keys, CellMetric.question_id)
    )
    found: dict[tuple[Any, ...], QuestionSums] = {}
    width = len(keys)
    for row in await _rows(session, query):
        question, total, cells, answers = row[width:]
        found.setdefault(tuple(row[:width]), {})[question] = stats.QuestionSums(
            float(total), int(cells), int(answers)
        )
    return found


@dataclass(frozen=True, slots=True)
class PeriodSums:
    period: Period
    sums: QuestionSums


def period_sums(
    daily: DailySums, start: date, end: date, granularity: Granularity
) -> list[PeriodSums]:
    """Every period in range (empty ones too) with the question sums of its days."""
    by_period: defaultdict[date, list[QuestionSums]] = defaultdict(list)
    for day, sums in daily.items():
        by_period[period_start(day, granularity)].append(sums)
    out = []
    for first in periods(start, end, granularity):
        last = first if granularity == Granularity.DAY else first + timedelta(days=6)
        days = by_period.get(first, [])
        out.append(
            PeriodSums(
                Period(start=max(first, start), end=min(last, end)),
                days[0] if len(days) == 1 else stats.add_sums(days),
            )
        )
    return out


def trend_seed(
    org_id: uuid.UUID,
    engine: str | None,
    location: str | None,
    granularity: Granularity,
    start: date,
    end: date,
) -> int:
    """One seed for a trend window: its points (every metric's) share their draws."""
    return stats.seed_of("trend", org_id, engine, location, granularity, start, end)


def points_of(periods: Sequence[PeriodSums], seed: int) -> list[TrendPoint]:
    found = stats.estimates([p.sums for p in periods], seed)
    # Built from values that are already what the fields hold: a year of points validated one
    # by one would cost more than computing them.
    return [
        TrendPoint.model_construct(
            period=p.period,
            value=e.value,
            interval=e.interval,
            interval_note=e.note,
            cells=e.cells,
            answers=e.answers,
            questions=e.questions,
        )
        for p, e in zip(periods, found, strict=True)
    ]


async def trend(
    session: AsyncSession,
    org_id: uuid.UUID,
    metric: Metric,
    start: date,
    end: date,
    granularity: Granularity,
    engine: str | None,
    location: str | None,
) -> TrendRead:
    daily = (await read_daily_sums(session, org_id, [metric], start, end, engine, location))[metric]
    seed = trend_seed(org_id, engine, location, granularity, start, end)
    return TrendRead(
        org_id=org_id,
        metric=metric,
        granularity=granularity,
        engine=engine,
        location=location,
        start=start,
        end=end,
        points=points_of(period_sums(daily, start, end, granularity), seed),
        methodology=await trend_methodology(
            session, org_id, start, end, engine, location, questions=questions_in(daily)
        ),
    )


def questions_in(daily: DailySums) -> int:
    """How many questions the cells behind a trend come from."""
    return len({question for sums in daily.values() for question in sums})


async def trend_methodology(
    session: AsyncSession,
    org_id: uuid.UUID,
    start: date,
    end: date,
    engine: str | None,
    location: str | None,
    *,
    questions: int,
) -> MethodologyRead:
    """The methodology of the completed batches in range, pooled from what each stored, with
    the questions the caller counted in the cells it read."""
    stored = await session.scalars(
        # The methodology alone: a whole summary is many times its size to decode.
        select(EvaluationBatch.methodology).where(
            EvaluationBatch.org_id == org_id,
            EvaluationBatch.status == BatchStatus.COMPLETED,
            EvaluationBatch.batch_date >= start,
            EvaluationBatch.batch_date <= end,
            EvaluationBatch.methodology.is_not(None),
        )
    )
    # Stored by `summaries.methodology` (a MethodologyRead dumped as JSON), so read as the
    # dicts they are: validating a model per batch costs more than the pooling.
    methods: list[dict[str, Any]] = [m for m in stored if m]
    models: defaultdict[str, set[str]] = defaultdict(set)
    for m in methods:
        for e in m["engines"]:
            if engine is None or e["engine"] == engine:
                models[e["engine"]].update(e["models"])
    cells = [m["samples_per_cell"] for m in methods if m["samples_per_cell"] is not None]
    versions = sorted({v for m in methods for v in m["extraction_versions"]})
    return MethodologyRead(
        questions=questions,
        engines=[EngineModels(engine=e, models=sorted(v)) for e, v in sorted(models.items())],
        countries=sorted(
            {c for m in methods for c in m["countries"] if location is None or c == location}
        ),
        samples_per_cell=(
            SamplesPerCell(
                min=min(c["min"] for c in cells),
                mean=round(sum(c["mean"] for c in cells) / len(cells), 2),
                max=max(c["max"] for c in cells),
            )
            if cells
            else None
        ),
        answers=AnswerCounts(
            completed=sum(m["answers"]["completed"] for m in methods),
            failed=sum(m["answers"]["failed"] for m in methods),
            rejected=sum(m["answers"]["rejected"] for m in methods),
        ),
        llm_analysis=any(m["llm_analysis"] for m in methods),
        interval_method=stats.METHOD,
        extraction_version=versions[0] if versions else None,
        extraction_versions=versions,
    )


def completed_cells(
    org_id: uuid.UUID, start: date, end: date, engine: str | None, location: str | None
) -> list[ColumnElement[bool]]:
    """The org's cells of completed batches in range (cell rows joined to their batch)."""
    conditions = [
        CellMetric.org_id == org_id,
        CellMetric.batch_date >= start,
        CellMetric.batch_date <= end,
        EvaluationBatch.status == BatchStatus.COMPLETED,
    ]
    if engine is not None:
        conditions.append(CellMetric.engine_id == engine)
    if location is not None:
        conditions.append(CellMetric.location == location)
    return conditions


@dataclass(frozen=True, slots=True)
class Windows:
    """The last `window` days up to `end`, and the `window` days before."""

    window: int
    end: date

    @property
    def current_start(self) -> date:
        return self.end - timedelta(days=self.window - 1)

    @property
    def previous_end(self) -> date:
        return self.current_start - timedelta(days=1)

    @property
    def previous_start(self) -> date:
        return self.previous_end - timedelta(days=self.window - 1)


def change_family(engines: int, locations: int) -> int:
    """Comparisons a changes response reports: every headline metric, overall, per engine
    and per country — what each verdict is Bonferroni-adjusted over."""
    return len(HEADLINE_METRICS) * (1 + engines + locations)


def change_of(
    org_id: uuid.UUID,
    windows: Windows,
    current: QuestionSums,
    previous: QuestionSums,
    family: int,
) -> ChangeRead:
    diff = stats.difference(
        current, previous, stats.seed_of("change", org_id, windows.window, windows.end), family
    )
    return ChangeRead(
        current=_mean(current),
        previous=_mean(previous),
        difference=diff.value,
        interval=diff.interval,
        interval_note=diff.note,
        verdict=stats.verdict(diff),
        current_cells=sum(s.cells for s in current.values()),
        previous_cells=sum(s.cells for s in previous.values()),
    )


async def changes(session: AsyncSession, org_id: uuid.UUID, window: int, end: date) -> ChangesRead:
    """The last `window` days up to `end` against the `window` days before, per headline
    metric overall, per engine and per country."""
    windows = Windows(window, end)
    cells = await _cells(session, org_id, HEADLINE_METRICS, windows.previous_start, end)
    engines = sorted({c.engine for rows in cells.values() for c in rows})
    locations = sorted({c.location for rows in cells.values() for c in rows})
    family = change_family(len(engines), len(locations))

    def compare(rows: list[_Cell]) -> ChangeRead:
        current = _sums(c for c in rows if c.batch_date >= windows.current_start)
        previous = _sums(c for c in rows if c.batch_date <= windows.previous_end)
        return change_of(org_id, windows, current, previous, family)

    metrics = {}
    for metric in HEADLINE_METRICS:
        rows = cells[metric]
        metrics[metric.value] = MetricChanges(
            overall=compare(rows),
            by_engine={e: compare([c for c in rows if c.engine == e]) for e in engines},
            by_location={loc: compare([c for c in rows if c.location == loc]) for loc in locations},
        )
    return ChangesRead(
        org_id=org_id,
        window=window,
        current=Period(start=windows.current_start, end=end),
        previous=Period(start=windows.previous_start, end=windows.previous_end),
        comparisons=family,
        method=change_method(family),
        metrics=metrics,
    )


def change_method(family: int) -> str:
    return f"{stats.METHOD}; verdicts Bonferroni-adjusted over {family} comparisons"


def _mean(sums: dict[Hashable, stats.QuestionSums]) -> float | None:
    value = stats.mean(sums)
    return None if value is None else round(value, 4)
