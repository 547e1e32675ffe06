"""A batch's summary — overall, per engine, per country, with its methodology — and the cell
rows trends read. Computed once when a batch completes (and again when it is re-scored) and
stored on the batch; a live batch's summary is computed on each read."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import CompoundSelect, Uuid, bindparam, delete, insert, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    CellMetric,
    EvaluationBatch,
    Org,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
    RunStatus,
    table_of,
)
from app.evaluations import stats
from app.evaluations.metrics import (
    CellValues,
    Metric,
    RunFacts,
    TrackedBrands,
    cell_values,
    estimate_of,
    metric_cells,
    ranked,
)
from app.evaluations.schemas import (
    AnswerCounts,
    BatchSummary,
    EngineModels,
    EstimateRead,
    MethodologyRead,
    RankedName,
    SamplesPerCell,
    SentimentRead,
    ShareOfVoiceEstimate,
    ShareOfVoiceRead,
    SummaryRead,
)

TOP_N = 10
TRACKED_DENOMINATOR = "answers naming the org or a configured competitor"
ALL_DENOMINATOR = "answers naming the org or any other brand"
NO_COMPETITORS = "the org has no configured competitors to compare against"


def estimate_read(estimate: stats.Estimate) -> EstimateRead:
    return EstimateRead(
        value=estimate.value,
        interval=estimate.interval,
        interval_note=estimate.note,
        cells=estimate.cells,
        answers=estimate.answers,
        questions=estimate.questions,
    )


@dataclass(slots=True)
class _Counts:
    completed: int = 0
    failed: int = 0
    rejected: int = 0
    sentiments: Counter[str] = field(default_factory=Counter)
    competitors: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)

    def add(self, run: RunFacts) -> None:
        if run.status == RunStatus.FAILED:
            self.failed += 1
            self.rejected += run.rejected
            return
        if run.status != RunStatus.COMPLETED:
            return
        self.completed += 1
        if run.visible and run.sentiment is not None:
            self.sentiments[run.sentiment] += 1
        self.competitors.update(run.competitors)
        self.domains.update(run.domains)


def _group_summary(
    runs: Sequence[RunFacts],
    values: CellValues,
    tracked: TrackedBrands,
    seed: int,
) -> SummaryRead:
    counts = _Counts()
    for run in runs:
        counts.add(run)

    def est(metric: Metric) -> EstimateRead:
        return estimate_read(estimate_of(metric_cells(values, metric), seed))

    tracked_sov = ShareOfVoiceEstimate(
        **est(Metric.SHARE_OF_VOICE_TRACKED).model_dump(), denominator=TRACKED_DENOMINATOR
    )
    if tracked.keys is None:
        tracked_sov.interval_note = NO_COMPETITORS
    return SummaryRead(
        completed_runs=counts.completed,
        failed_runs=counts.failed,
        rejected_runs=counts.rejected,
        visibility=est(Metric.VISIBILITY),
        share_of_voice=ShareOfVoiceRead(
            tracked=tracked_sov,
            all=ShareOfVoiceEstimate(
                **est(Metric.SHARE_OF_VOICE_ALL).model_dump(), denominator=ALL_DENOMINATOR
            ),
        ),
        average_position=est(Metric.AVERAGE_POSITION),
        citation_rate=est(Metric.CITATION_RATE),
        citation_rate_searched=est(Metric.CITATION_RATE_SEARCHED),
        searched_share=est(Metric.SEARCHED_SHARE),
        ai_overview_presence=est(Metric.AI_OVERVIEW_PRESENCE),
        sentiment=SentimentRead(
            positive=counts.sentiments["positive"],
            neutral=counts.sentiments["neutral"],
            negative=counts.sentiments["negative"],
            score=est(Metric.SENTIMENT_SCORE),
        ),
        top_competitors=[RankedName(name=n, runs=c) for n, c in ranked(counts.competitors, TOP_N)],
        top_cited_domains=[RankedName(name=n, runs=c) for n, c in ranked(counts.domains, TOP_N)],
    )


def methodology(runs: Sequence[RunFacts]) -> MethodologyRead:
    asked = [r for r in runs if r.status in (RunStatus.COMPLETED, RunStatus.FAILED)]
    models: defaultdict[str, set[str]] = defaultdict(set)
    asks: Counter[tuple[object, ...]] = Counter()
    for run in asked:
        asks[run.cell] += 1
        if run.status == RunStatus.COMPLETED and run.model:
            models[run.engine].add(run.model)
        models.setdefault(run.engine, set())
    per_cell = list(asks.values())
    versions = sorted(
        {
            r.extraction_version
            for r in asked
            if r.status == RunStatus.COMPLETED and r.extraction_version is not None
        }
    )
    completed = sum(r.status == RunStatus.COMPLETED for r in asked)
    rejected = sum(r.rejected for r in asked)
    return MethodologyRead(
        questions=len({r.question_id for r in asked}),
        engines=[EngineModels(engine=e, models=sorted(m)) for e, m in sorted(models.items())],
        countries=sorted({r.location for r in asked}),
        samples_per_cell=(
            SamplesPerCell(
                min=min(per_cell), mean=round(sum(per_cell) / len(per_cell), 2), max=max(per_cell)
            )
            if per_cell
            else None
        ),
        answers=AnswerCounts(
            completed=completed, failed=len(asked) - completed - rejected, rejected=rejected
        ),
        llm_analysis=any(r.analysed for r in asked if r.status == RunStatus.COMPLETED),
        interval_method=stats.METHOD,
        extraction_version=versions[0] if versions else None,
        extraction_versions=versions,
    )


def summarise(
    batch_id: uuid.UUID,
    runs: Sequence[RunFacts],
    tracked: TrackedBrands,
    values: CellValues | None = None,
) -> BatchSummary:
    """What the runs add up to; `values` are their cells' values when the caller has them."""
    if values is None:
        values = cell_values(runs, tracked)

    def group(scope: str, key: str) -> SummaryRead:
        def within(engine: str, location: str) -> bool:
            return scope == "all" or (engine if scope == "engine" else location) == key

        return _group_summary(
            [r for r in runs if within(r.engine, r.location)],
            {cell: v for cell, v in values.items() if within(cell[1], cell[2])},
            tracked,
            # One seed for the batch: its metrics and groups share their draws of questions.
            stats.seed_of("batch", batch_id),
        )

    return BatchSummary(
        simulated=any(r.simulated for r in runs),
        summary=group("all", ""),
        by_engine={e: group("engine", e) for e in sorted({r.engine for r in runs})},
        by_location={loc: group("location", loc) for loc in sorted({r.location for r in runs})},
        methodology=methodology(runs),
    )


async def load_run_facts(session: AsyncSession, batch_id: uuid.UUID) -> list[RunFacts]:
    connection = await session.connection()
    rows = (await connection.execute(_RUN_FACTS, {"f_batch_id": batch_id})).all()
    competitors: defaultdict[uuid.UUID, set[str]] = defaultdict(set)
    domains: defaultdict[uuid.UUID, set[str]] = defaultdict(set)
    # Each run with a row gets an entry, even when its names are all null.
    for is_citation, run_id, name in await connection.execute(_RUN_NAMES, {"f_batch_id": batch_id}):
        found = (domains if is_citation else competitors)[run_id]
        if name is not None:
            found.add(name)
    return [
        RunFacts(
            question_id=row.question_id,
            engine=row.engine_id,
            location=row.location,
            sample=row.sample,
            status=row.status,
            error=row.error,
            simulated=row.simulated,
            model=row.model,
            surface=row.surface,
            searched=row.searched,
            surface_present=row.surface_present,
            analysed=row.analysed,
            extraction_version=row.extraction_version,
            mentioned=bool(row.mentioned),
            negated=bool(row.negated),
            list_position=row.list_position,
            org_cited=bool(row.org_cited),
            sentiment=row.sentiment,
            competitors=frozenset(competitors.get(row.id, ())),
            domains=frozenset(domains.get(row.id, ())),
            has_citations=row.id in domains,
        )
        for row in rows
    ]


# `load_run_facts`'s statements, built once: a batch's runs with their mentions, and the
# names its answers gave — competitors and cited domains in one statement.
_FACTS_BATCH = bindparam("f_batch_id", type_=Uuid)
_RUN_FACTS = (
    select(
        QuestionRun.id,
        QuestionRun.question_id,
        QuestionRun.engine_id,
        QuestionRun.location,
        QuestionRun.sample,
        QuestionRun.status,
        QuestionRun.error,
        QuestionRun.simulated,
        QuestionRun.model,
        QuestionRun.surface,
        QuestionRun.searched,
        QuestionRun.surface_present,
        QuestionRun.analysed,
        QuestionRun.extraction_version,
        RunMention.mentioned,
        RunMention.list_position,
        RunMention.org_cited,
        RunMention.negated,
        RunMention.sentiment,
    )
    .outerjoin(RunMention, RunMention.run_id == QuestionRun.id)
    .where(QuestionRun.batch_id == _FACTS_BATCH)
)
_RUN_NAMES: CompoundSelect[bool, uuid.UUID, str | None] = union_all(
    select(literal(False), RunCompetitor.run_id, RunCompetitor.name)
    .join(QuestionRun, QuestionRun.id == RunCompetitor.run_id)
    .where(QuestionRun.batch_id == _FACTS_BATCH),
    select(literal(True), RunCitation.run_id, RunCitation.domain)
    .join(QuestionRun, QuestionRun.id == RunCitation.run_id)
    .where(QuestionRun.batch_id == _FACTS_BATCH),
)


async def _facts(
    session: AsyncSession, batch: EvaluationBatch, org: Org | None = None
) -> tuple[list[RunFacts], TrackedBrands]:
    if org is None:
        org = await session.get_one(Org, batch.org_id)
    return await load_run_facts(session, batch.id), TrackedBrands.of(org.competitors)


async def compute_summary(session: AsyncSession, batch: EvaluationBatch) -> BatchSummary:
    runs, tracked = await _facts(session, batch)
    return summarise(batch.id, runs, tracked)


async def store_summary(
    session: AsyncSession, batch: EvaluationBatch, now: datetime, org: Org | None = None
) -> BatchSummary:
    """Compute the batch's summary and cell rows and write them, replacing what was there, in
    the caller's transaction. `org`, the batch's, when the caller has it at hand."""
    runs, tracked = await _facts(session, batch, org)
    values = cell_values(runs, tracked)
    summary = summarise(batch.id, runs, tracked, values)
    if batch.summarised_at is not None:
        # Cells are written only with a summary: a batch never summarised has none to replace.
        await session.execute(delete(CellMetric).where(CellMetric.batch_id == batch.id))
    cells = list(_cell_rows(batch, values))
    if cells:
        # Inserted as values, many at a time: a thousand ORM objects cost more than the summary.
        await session.execute(insert(table_of(CellMetric)), cells)
    batch.summary = summary.model_dump(mode="json")
    batch.methodology = batch.summary["methodology"]
    batch.summarised_at = now
    await session.flush()
    return summary


def _cell_rows(batch: EvaluationBatch, values: CellValues) -> Iterable[dict[str, object]]:
    for (question_id, engine, location), metrics in values.items():
        for metric, cell in metrics.items():
            yield {
                "batch_id": batch.id,
                "question_id": question_id,
                "engine_id": engine,
                "location": location,
                "metric": metric.value,
                "org_id": batch.org_id,
                "batch_date": batch.batch_date,
                "value": cell.value,
                "answers": cell.answers,
            }
