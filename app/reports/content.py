"""What a report shows, read for one org, range and selection, in a bounded number of queries.

The numbers are the JSON API's own: the charts are `GET /orgs/{id}/trends` (same cells, same
seed, same function), the tiles' change is `GET /orgs/{id}/changes` for the window ending on
the report's last day, and the methodology is the trend's. Only what the API has no endpoint
for — the competitors' shares over time, cited domains across batches, sample answers — is
read here, with aggregate queries.
"""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup, escape
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Date,
    String,
    and_,
    case,
    cast,
    desc,
    false,
    func,
    literal,
    not_,
    null,
    select,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession

from app.analysis.names import name_key
from app.db.models import (
    BatchStatus,
    CellMetric,
    EvaluationBatch,
    Org,
    OrgNameVariation,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
    RunStatus,
)
from app.engines.catalogue import CATALOGUE
from app.errors import InvalidInputError
from app.evaluations import stats, trends
from app.evaluations.metrics import Metric
from app.evaluations.schemas import ChangeRead, MethodologyRead
from app.evaluations.trends import Granularity
from app.extraction.domains import registrable_domain
from app.extraction.matching import mention_spans
from app.reports import charts

# A daily chart up to about a quarter; a longer range is drawn by ISO week.
MAX_DAILY_DAYS = 92
CHANGE_WINDOW_DAYS = 7
TOP_DOMAINS = 10
TOP_BRANDS = 5
ANSWERS_PER_ENGINE = 2
ANSWER_CHARS = 1500


@dataclass(frozen=True, slots=True)
class MetricView:
    metric: Metric
    label: str
    question: str  # what the number answers, in plain words
    scale: charts.Scale
    fmt: Callable[[float], str]
    fmt_change: Callable[[float], str]
    higher_is_better: bool = True


def _pct(value: float) -> str:
    return f"{value * 100:.0f}%"


def _pts(value: float) -> str:
    return f"{value * 100:+.0f} pts"


def _rank(value: float) -> str:
    return f"{value:.1f}"


def _signed(value: float) -> str:
    return f"{value:+.2f}"


SHARE = charts.Scale(0.0, 1.0, _pct)


def metric_views(tracked: bool) -> list[MetricView]:
    """The headline metrics; share of voice against tracked competitors when there are any."""
    return [
        MetricView(
            Metric.VISIBILITY,
            "Visibility",
            "Share of answers that mention you",
            SHARE,
            _pct,
            _pts,
        ),
        MetricView(
            Metric.SHARE_OF_VOICE_TRACKED if tracked else Metric.SHARE_OF_VOICE_ALL,
            "Share of voice",
            "Your share of the brands named, against your tracked competitors"
            if tracked
            else "Your share of every brand the answers name (no competitors configured)",
            SHARE,
            _pct,
            _pts,
        ),
        MetricView(
            Metric.AVERAGE_POSITION,
            "Average position",
            "Your rank when an answer lists brands (1 is first)",
            charts.Scale(1.0, 10.0, _rank, inverted=True),
            _rank,
            _signed,
            higher_is_better=False,
        ),
        MetricView(
            Metric.CITATION_RATE,
            "Citation rate",
            "Share of answers with sources that cite your domains",
            SHARE,
            _pct,
            _pts,
        ),
        MetricView(
            Metric.SENTIMENT_SCORE,
            "Sentiment",
            "Tone when you are mentioned, from −1 (negative) to +1 (positive)",
            charts.Scale(-1.0, 1.0, _signed),
            _signed,
            _signed,
        ),
    ]


@dataclass(frozen=True, slots=True)
class Selection:
    engine: str | None
    location: str | None

    def query(self, **changes: str | None) -> str:
        """This page's query string with `changes` applied (the template escapes it)."""
        values = {"engine": self.engine, "location": self.location, **changes}
        return "?" + urlencode({k: v for k, v in values.items() if v})


@dataclass(frozen=True, slots=True)
class Tile:
    metric: str
    label: str
    question: str
    value: float | None
    value_text: str
    interval_text: str | None
    interval_note: str | None
    verdict: str  # up, down, within_noise, none
    verdict_text: str
    change_text: str | None


@dataclass(frozen=True, slots=True)
class ChartRow:
    period: str
    value: str
    interval: str
    answers: int
    marked: bool


@dataclass(frozen=True, slots=True)
class ChartView:
    metric: str
    label: str
    question: str
    svg: Markup
    rows: list[ChartRow]
    marked: int


@dataclass(frozen=True, slots=True)
class GridCell:
    text: str
    interval: str | None


@dataclass(frozen=True, slots=True)
class Grid:
    engines: list[str]
    locations: list[str]
    cells: dict[tuple[str, str], GridCell]  # (engine, location); "" for all


@dataclass(frozen=True, slots=True)
class BrandsView:
    title: str
    note: str
    names: list[str]
    svg: Markup | None
    swatches: list[Markup]
    rows: list[tuple[str, list[str]]]  # period, each brand's share


@dataclass(frozen=True, slots=True)
class DomainRow:
    domain: str
    answers: int
    share: str
    own: bool


@dataclass(frozen=True, slots=True)
class DomainsView:
    rows: list[DomainRow]
    own_domains: list[str]
    own_in_top: bool
    own_answers: int
    answers_with_sources: int


@dataclass(frozen=True, slots=True)
class AnswerView:
    question: str
    location: str
    model: str | None
    mentioned: bool
    text: Markup
    shortened: bool


@dataclass(frozen=True, slots=True)
class EngineAnswers:
    engine: str
    label: str
    answers: list[AnswerView]


@dataclass(slots=True)
class Report:
    org_name: str
    start: date
    end: date
    granularity: Granularity
    window: int
    current: tuple[date, date]
    previous: tuple[date, date]
    selection: Selection
    engines: list[tuple[str, str]]  # id, label
    locations: list[str]
    simulated: bool
    has_data: bool
    tiles: list[Tile] = field(default_factory=list)
    charts: list[ChartView] = field(default_factory=list)
    grid: Grid | None = None
    brands: BrandsView | None = None
    domains: DomainsView | None = None
    answers: list[EngineAnswers] = field(default_factory=list)
    answers_date: date | None = None
    methodology: MethodologyRead | None = None
    changes_method: str = ""


def engine_label(engine: str) -> str:
    spec = CATALOGUE.get(engine)
    return spec.assistant if spec else engine


async def build_report(
    session: AsyncSession,
    org: Org,
    start: date,
    end: date,
    selection: Selection,
    granularity: Granularity | None = None,
) -> Report:
    granularity = granularity or (
        Granularity.DAY if (end - start).days + 1 <= MAX_DAILY_DAYS else Granularity.WEEK
    )
    views = metric_views(bool(org.competitors))
    grid_sums = await _grid_sums(session, org.id, start, end)
    engines = sorted({engine for engine, _ in grid_sums})
    locations = sorted({location for _, location in grid_sums})
    if selection.engine is not None and selection.engine not in engines:
        raise InvalidInputError(f"no answers from engine {selection.engine!r} in this report")
    if selection.location is not None and selection.location not in locations:
        raise InvalidInputError(f"no answers from country {selection.location!r} in this report")
    # Two windows fit in the range, so the earlier one has data to compare with.
    window = max(1, min(CHANGE_WINDOW_DAYS, ((end - start).days + 1) // 2))
    windows = trends.Windows(window, end)
    report = Report(
        org_name=org.name,
        start=start,
        end=end,
        granularity=granularity,
        window=window,
        current=(windows.current_start, end),
        previous=(windows.previous_start, windows.previous_end),
        selection=selection,
        engines=[(e, engine_label(e)) for e in engines],
        locations=locations,
        simulated=await _simulated(session, org.id, start, end),
        has_data=bool(grid_sums),
    )
    if not report.has_data:
        return report

    daily = await trends.read_daily_sums(
        session, org.id, [v.metric for v in views], start, end, selection.engine, selection.location
    )
    # The tiles' changes are GET /orgs/{id}/changes's own (same sums, seed and family), for
    # the one scope shown: both windows lie in the range, so the sums read for the charts
    # hold them.
    family = trends.change_family(*await _window_scopes(session, org.id, windows))
    report.changes_method = trends.change_method(family)
    seed = trends.trend_seed(org.id, selection.engine, selection.location, granularity, start, end)
    for number, view in enumerate(views):
        periods = trends.period_sums(daily[view.metric], start, end, granularity)
        report.charts.append(_chart(number, view, periods, seed, granularity))
        days = daily[view.metric].items()
        now = stats.add_sums(sums for day, sums in days if day >= windows.current_start)
        before = stats.add_sums(
            sums for day, sums in days if windows.previous_start <= day <= windows.previous_end
        )
        change = trends.change_of(org.id, windows, now, before, family)
        estimate = stats.estimate(now, stats.seed_of("report-window", seed, window))
        report.tiles.append(_tile(view, estimate, change, window))
    report.grid = _grid(grid_sums, engines, locations, seed)
    tallies = await _tallies(session, org.id, start, end, selection)
    report.brands = _brands(org, start, end, granularity, tallies)
    report.domains = _domains(org, tallies)
    report.answers_date, report.answers = await _answers(session, org, start, end, selection)
    report.methodology = await trends.trend_methodology(
        session,
        org.id,
        start,
        end,
        selection.engine,
        selection.location,
        questions=trends.questions_in(daily[Metric.VISIBILITY]),
    )
    return report


def _interval_text(view: MetricView, interval: tuple[float, float] | None) -> str:
    if interval is None:
        return "—"
    return f"{view.fmt(interval[0])} to {view.fmt(interval[1])}"


def _tile(
    view: MetricView, estimate: stats.Estimate, change: ChangeRead | None, window: int
) -> Tile:
    days = f"{window} day{'s' if window != 1 else ''}"
    value_text = "No data" if estimate.value is None else view.fmt(estimate.value)
    verdict = "none" if change is None or change.difference is None else change.verdict
    if change is None or change.difference is None:
        verdict_text = f"Not enough answers to compare with the {days} before"
        change_text = None
    else:
        if verdict == "within_noise":
            verdict_text = (
                f"No real change from the {days} before: the difference is within what "
                "asking the same questions again varies by"
            )
        else:
            direction = "Up" if verdict == "up" else "Down"
            better = verdict == "up" if view.higher_is_better else verdict == "down"
            verdict_text = (
                f"{direction}: a real {'improvement' if better else 'decline'} from the "
                f"{days} before"
            )
            if view.metric == Metric.AVERAGE_POSITION:
                verdict_text += " (listed earlier)" if better else " (listed later)"
        before = "—" if change.previous is None else view.fmt(change.previous)
        after = "—" if change.current is None else view.fmt(change.current)
        spread = (
            f"; the change is likely between {view.fmt_change(change.interval[0])} and "
            f"{view.fmt_change(change.interval[1])}"
            if change.interval is not None
            else ""
        )
        change_text = f"{before} → {after} ({view.fmt_change(change.difference)}){spread}"
    return Tile(
        metric=view.metric.value,
        label=view.label,
        question=view.question,
        value=estimate.value,
        value_text=value_text,
        interval_text=_interval_text(view, estimate.interval) if estimate.interval else None,
        interval_note=estimate.note,
        verdict=verdict,
        verdict_text=verdict_text,
        change_text=change_text,
    )


def _period_label(first: date, granularity: Granularity) -> str:
    if granularity == Granularity.DAY:
        return first.isoformat()
    return f"week of {first.isoformat()}"


def _chart(
    number: int,
    view: MetricView,
    periods: Sequence[trends.PeriodSums],
    seed: int,
    granularity: Granularity,
) -> ChartView:
    # What `trends.points_of` serves as GET /orgs/{id}/trends, without its response models.
    points = stats.estimates([p.sums for p in periods], seed)
    verdicts = stats.steps([p.sums for p in periods], seed)
    labels = [_period_label(p.period.start, granularity) for p in periods]
    drawn = [
        charts.TrendPoint(
            label=label,
            value=point.value,
            interval=point.interval,
            marked=verdict in ("up", "down"),
        )
        for label, point, verdict in zip(labels, points, verdicts, strict=True)
    ]
    scale = view.scale
    if view.metric == Metric.AVERAGE_POSITION:
        deepest = max(
            [p.interval[1] for p in points if p.interval]
            + [p.value for p in points if p.value is not None]
            + [3.0]
        )
        scale = charts.Scale(1.0, float(int(deepest) + 1), view.fmt, inverted=True)
    marked = sum(p.marked for p in drawn)
    measured = sum(p.value is not None for p in points)
    description = (
        f"{view.label} per {'day' if granularity == Granularity.DAY else 'week'}, "
        f"{len(points)} periods ({measured} measured), with the 95% interval as a band; "
        f"{marked} point(s) ringed where the value changed for real from the one before. "
        "The table below lists every number."
    )
    return ChartView(
        metric=view.metric.value,
        label=view.label,
        question=view.question,
        svg=charts.trend_chart(
            drawn,
            scale,
            chart_id=f"chart-{number}",
            title=f"{view.label} over time",
            description=description,
            metric=view.metric.value,
        ),
        rows=[
            ChartRow(
                period=label,
                value="—" if point.value is None else view.fmt(point.value),
                interval=_interval_text(view, point.interval),
                answers=point.answers,
                marked=dot.marked,
            )
            for label, point, dot in zip(labels, points, drawn, strict=True)
        ],
        marked=marked,
    )


async def _window_scopes(
    session: AsyncSession, org_id: uuid.UUID, windows: trends.Windows
) -> tuple[int, int]:
    """Engines and countries with answers in the two windows: the changes response's scopes.
    Every answer that defines a headline metric defines visibility, so its cells tell."""
    row = (
        await session.execute(
            select(
                func.count(func.distinct(CellMetric.engine_id)),
                func.count(func.distinct(CellMetric.location)),
            )
            .join(EvaluationBatch, EvaluationBatch.id == CellMetric.batch_id)
            .where(
                CellMetric.org_id == org_id,
                CellMetric.metric == Metric.VISIBILITY.value,
                CellMetric.batch_date >= windows.previous_start,
                CellMetric.batch_date <= windows.end,
                EvaluationBatch.status == BatchStatus.COMPLETED,
            )
        )
    ).one()
    return int(row[0] or 0), int(row[1] or 0)


GridSums = dict[tuple[str, str], trends.QuestionSums]


async def _grid_sums(session: AsyncSession, org_id: uuid.UUID, start: date, end: date) -> GridSums:
    """Visibility's question sums over the range per (engine, country)."""
    grouped = await trends.sums_by(
        session,
        (CellMetric.engine_id, CellMetric.location),
        [
            CellMetric.metric == Metric.VISIBILITY.value,
            *trends.completed_cells(org_id, start, end, None, None),
        ],
    )
    return {(engine, location): sums for (engine, location), sums in grouped.items()}


def _grid(sums: GridSums, engines: list[str], locations: list[str], seed: int) -> Grid:
    """Visibility over the range per engine × country, each engine's and each country's."""
    groups: defaultdict[tuple[str, str], list[trends.QuestionSums]] = defaultdict(list)
    for (engine, location), part in sums.items():
        for key in ((engine, location), (engine, ""), ("", location), ("", "")):
            groups[key].append(part)
    grid_seed = stats.seed_of("report-grid", seed)
    out = {}
    for key, parts in groups.items():
        found = stats.estimate(stats.add_sums(parts), grid_seed)
        if found.value is None:
            continue
        out[key] = GridCell(
            text=_pct(found.value),
            interval=f"{_pct(found.interval[0])}–{_pct(found.interval[1])}"
            if found.interval
            else None,
        )
    return Grid(engines=engines, locations=locations, cells=out)


def _runs_in_range(
    org_id: uuid.UUID, start: date, end: date, selection: Selection
) -> list[ColumnElement[bool]]:
    """Completed answers, with their surface, of the org's completed batches in range."""
    conditions = [
        EvaluationBatch.org_id == org_id,
        EvaluationBatch.status == BatchStatus.COMPLETED,
        EvaluationBatch.batch_date >= start,
        EvaluationBatch.batch_date <= end,
        QuestionRun.status == RunStatus.COMPLETED,
        QuestionRun.surface_present.is_(True),
    ]
    if selection.engine is not None:
        conditions.append(QuestionRun.engine_id == selection.engine)
    if selection.location is not None:
        conditions.append(QuestionRun.location == selection.location)
    return conditions


async def _simulated(session: AsyncSession, org_id: uuid.UUID, start: date, end: date) -> bool:
    """Whether any answer in range came from the simulated engine."""
    found = await session.scalar(
        select(QuestionRun.id)
        .join(EvaluationBatch, EvaluationBatch.id == QuestionRun.batch_id)
        .where(
            EvaluationBatch.org_id == org_id,
            EvaluationBatch.status == BatchStatus.COMPLETED,
            EvaluationBatch.batch_date >= start,
            EvaluationBatch.batch_date <= end,
            QuestionRun.simulated.is_(True),
        )
        .limit(1)
    )
    return found is not None


@dataclass(frozen=True, slots=True)
class _Tallies:
    """What the brands and sources sections count over the answers in range."""

    named: list[tuple[date, str, int]]  # mentions of each named brand per day
    own: list[tuple[date, int]]  # the org's mentions (not negated) per day
    domains: list[tuple[str, int]]  # answers citing each domain
    with_sources: int  # answers citing any source
    own_answers: int  # answers citing one of the org's domains


_NAMED, _OWN, _DOMAIN, _SOURCES = range(4)


async def _tallies(
    session: AsyncSession, org_id: uuid.UUID, start: date, end: date, selection: Selection
) -> _Tallies:
    """The brands' and sources' counts in one statement: the answers in range are found once,
    as a CTE each count reads, where four reads found them four times (90 days of 60 answers a
    day: 79–95 ms for the four in the API, 39–46 ms for the one)."""
    runs = (
        select(QuestionRun.id, EvaluationBatch.batch_date)
        .join(EvaluationBatch, EvaluationBatch.id == QuestionRun.batch_id)
        .where(*_runs_in_range(org_id, start, end, selection))
        .cte("runs")
    )
    # Postgres types a union's columns pairwise, so a NULL needs the type of its column.
    no_day, no_name, no_count = cast(null(), Date), cast(null(), String), cast(null(), BigInteger)
    cited = func.count(func.distinct(RunCitation.run_id))
    own_cited = func.count(
        func.distinct(case((RunCitation.is_org_domain.is_(True), RunCitation.run_id)))
    )
    statement = union_all(
        select(literal(_NAMED), runs.c.batch_date, RunCompetitor.name, func.count(), no_count)
        .select_from(RunCompetitor)
        .join(runs, runs.c.id == RunCompetitor.run_id)
        .group_by(runs.c.batch_date, RunCompetitor.name),
        select(literal(_OWN), runs.c.batch_date, no_name, func.count(), no_count)
        .select_from(RunMention)
        .join(runs, runs.c.id == RunMention.run_id)
        .where(RunMention.mentioned.is_(True), RunMention.negated.is_(False))
        .group_by(runs.c.batch_date),
        select(literal(_DOMAIN), no_day, RunCitation.domain, cited, no_count)
        .select_from(RunCitation)
        .join(runs, runs.c.id == RunCitation.run_id)
        .where(RunCitation.domain.is_not(None))
        .group_by(RunCitation.domain),
        select(literal(_SOURCES), no_day, no_name, cited, own_cited)
        .select_from(RunCitation)
        .join(runs, runs.c.id == RunCitation.run_id),
    )
    named: list[tuple[date, str, int]] = []
    own: list[tuple[date, int]] = []
    domains: list[tuple[str, int]] = []
    with_sources = own_answers = 0
    for kind, day, name, count, own_count in await session.execute(statement):
        if kind == _NAMED:
            named.append((day, name, count))
        elif kind == _OWN:
            own.append((day, count))
        elif kind == _DOMAIN:
            domains.append((name, count))
        else:
            # An aggregate without GROUP BY: one row, whose counts are 0, never NULL.
            with_sources, own_answers = count, own_count
    return _Tallies(named, own, domains, with_sources, own_answers)


def _brands(
    org: Org, start: date, end: date, granularity: Granularity, tallies: _Tallies
) -> BrandsView:
    """Each brand's share of the mentions of the org and the brands compared with it, per
    period: the org's tracked competitors, or the most named brands when it tracks none."""
    tracked = {name_key(name): name for name in org.competitors}
    counts: defaultdict[date, Counter[str]] = defaultdict(Counter)
    totals: Counter[str] = Counter()
    for day, name, count in tallies.named:
        key = name_key(name)
        if tracked and key not in tracked:
            continue
        brand = tracked.get(key, name)
        counts[trends.period_start(day, granularity)][brand] += count
        totals[brand] += count
    if tracked:
        names = [n for n in org.competitors if totals[n]]
        title = "Share of voice against your tracked competitors"
        note = (
            "Each brand's share of the mentions of you and your tracked competitors, per "
            f"{granularity.value}."
        )
    else:
        names = [n for n, _ in sorted(totals.items(), key=lambda i: (-i[1], i[0]))[:TOP_BRANDS]]
        title = "Share of voice against the most named brands"
        note = (
            "No competitors are configured for this org, so you are compared with the "
            f"{TOP_BRANDS} brands the answers named most; each brand's share of the mentions "
            f"of you and them, per {granularity.value}."
        )
    for day, count in tallies.own:
        counts[trends.period_start(day, granularity)][org.name] += count
    brands = [org.name, *names]
    firsts = trends.periods(start, end, granularity)
    # Labelled as the trend charts are: a first week that began before the range, from its start.
    labels = [_period_label(max(first, start), granularity) for first in firsts]
    series: list[list[float | None]] = [[] for _ in brands]
    for first in firsts:
        found = counts.get(first, Counter())
        total = sum(found[b] for b in brands)
        for column, brand in enumerate(brands):
            series[column].append(found[brand] / total if total else None)
    svg = None
    if any(v is not None for values in series for v in values):
        svg = charts.lines_chart(
            labels,
            [charts.Series(b, v) for b, v in zip(brands, series, strict=True)],
            SHARE,
            chart_id="brands",
            title=title,
            description=f"{note} The table below lists every number.",
        )
    rows = [
        (label, ["—" if v is None else _pct(v) for v in (s[index] for s in series)])
        for index, label in enumerate(labels)
    ]
    return BrandsView(
        title=title,
        note=note,
        names=brands,
        svg=svg,
        swatches=[charts.swatch(i) for i in range(len(brands))],
        rows=rows,
    )


def _domains(org: Org, tallies: _Tallies) -> DomainsView:
    """The most cited domains (ties in name order), and how many answers cite the org's own."""
    rows = sorted(tallies.domains, key=lambda row: (-row[1], row[0]))[:TOP_DOMAINS]
    own = {d for d in (registrable_domain(x) for x in org.domains) if d}
    found = [
        DomainRow(
            domain=domain,
            answers=count,
            share=_pct(count / tallies.with_sources) if tallies.with_sources else "—",
            own=(registrable_domain(domain) or domain) in own,
        )
        for domain, count in rows
    ]
    return DomainsView(
        rows=found,
        own_domains=sorted(org.domains),
        own_in_top=any(r.own for r in found),
        own_answers=tallies.own_answers,
        answers_with_sources=tallies.with_sources,
    )


async def _answers(
    session: AsyncSession, org: Org, start: date, end: date, selection: Selection
) -> tuple[date | None, list[EngineAnswers]]:
    """A few answers of each engine from the latest batch in range, those that mention the org
    first, with its mentions marked."""
    where = _runs_in_range(org.id, start, end, selection)
    latest = await session.execute(
        select(EvaluationBatch.id, EvaluationBatch.batch_date)
        .join(QuestionRun, QuestionRun.batch_id == EvaluationBatch.id)
        .where(*where, QuestionRun.answer_text.is_not(None))
        .order_by(EvaluationBatch.batch_date.desc())
        .limit(1)
    )
    batch = latest.first()
    if batch is None:
        return None, []
    mentioned = func.coalesce(and_(RunMention.mentioned, not_(RunMention.negated)), false())
    candidates = (
        await session.execute(
            select(QuestionRun.id, QuestionRun.engine_id, mentioned.label("mentioned"))
            .join(EvaluationBatch, EvaluationBatch.id == QuestionRun.batch_id)
            .outerjoin(RunMention, RunMention.run_id == QuestionRun.id)
            .where(*where, QuestionRun.batch_id == batch.id, QuestionRun.answer_text.is_not(None))
            .order_by(*_answer_order(mentioned))
        )
    ).all()
    picked: defaultdict[str, list[uuid.UUID]] = defaultdict(list)
    for run_id, engine, _ in candidates:
        if len(picked[engine]) < ANSWERS_PER_ENGINE:
            picked[engine].append(run_id)
    ids = [i for chosen in picked.values() for i in chosen]
    runs = {
        row.id: row
        for row in (
            await session.execute(
                select(
                    QuestionRun.id,
                    QuestionRun.question_text,
                    QuestionRun.location,
                    QuestionRun.model,
                    QuestionRun.answer_text,
                    mentioned.label("mentioned"),
                )
                .outerjoin(RunMention, RunMention.run_id == QuestionRun.id)
                .where(QuestionRun.id.in_(ids))
            )
        ).all()
    }
    variations = await session.scalars(
        select(OrgNameVariation.variation).where(OrgNameVariation.org_id == org.id)
    )
    names = (org.name, *org.aliases, *variations)
    out = []
    for engine in sorted(picked):
        views = []
        for run_id in picked[engine]:
            run = runs[run_id]
            text, shortened = _shorten(run.answer_text or "")
            views.append(
                AnswerView(
                    question=run.question_text,
                    location=run.location,
                    model=run.model,
                    mentioned=bool(run.mentioned),
                    text=highlight(text, names),
                    shortened=shortened,
                )
            )
        out.append(EngineAnswers(engine, engine_label(engine), views))
    return batch.batch_date, out


def _answer_order(mentioned: ColumnElement[bool]) -> tuple[Any, ...]:
    return (
        QuestionRun.engine_id,
        desc(case((mentioned, 1), else_=0)),
        QuestionRun.question_text,
        QuestionRun.location,
        QuestionRun.sample,
    )


def _shorten(text: str) -> tuple[str, bool]:
    if len(text) <= ANSWER_CHARS:
        return text, False
    cut = text.rfind(" ", 0, ANSWER_CHARS)
    return text[: cut if cut > ANSWER_CHARS // 2 else ANSWER_CHARS], True


def highlight(text: str, names: Sequence[str]) -> Markup:
    """`text` escaped, with each mention of the brand in `<mark>`: the spans come from the
    same matching extraction counts with, and every character is escaped either way."""
    parts: list[str] = []
    last = 0
    for begin, finish in mention_spans(names, text):
        parts.append(str(escape(text[last:begin])))
        parts.append(f"<mark>{escape(text[begin:finish])}</mark>")
        last = finish
    parts.append(str(escape(text[last:])))
    return Markup("".join(parts))  # noqa: S704 - built from escaped pieces
