"""GET /batches/{id}/results: the runs, page by page, and what they add up to."""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    EvaluationBatch,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
)
from app.evaluations.schemas import (
    BatchSummary,
    CitationRead,
    CompetitorRead,
    MentionRead,
    ResultsRead,
    RunRead,
)
from app.evaluations.summaries import compute_summary
from app.pagination import PageParams

# Runs in a stable order: by cell, then by ask.
RUN_ORDER = (
    QuestionRun.question_text,
    QuestionRun.engine_id,
    QuestionRun.location,
    QuestionRun.sample,
    QuestionRun.id,
)


async def batch_summary(session: AsyncSession, batch: EvaluationBatch) -> BatchSummary:
    """The stored summary of a completed batch; a live one's, computed now."""
    if batch.summary is not None:
        return BatchSummary.model_validate(batch.summary)
    return await compute_summary(session, batch)


async def batch_results(
    session: AsyncSession,
    batch: EvaluationBatch,
    page: PageParams,
    engine: str | None,
    location: str | None,
) -> ResultsRead:
    summary = await batch_summary(session, batch)
    query = select(QuestionRun).where(QuestionRun.batch_id == batch.id)
    if engine is not None:
        query = query.where(QuestionRun.engine_id == engine)
    if location is not None:
        query = query.where(QuestionRun.location == location.upper())
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    runs = list(
        await session.scalars(query.order_by(*RUN_ORDER).limit(page.limit).offset(page.offset))
    )
    return ResultsRead(
        **summary.model_dump(),
        batch_id=batch.id,
        status=batch.status,
        summarised_at=batch.summarised_at,
        runs=await run_reads(session, runs),
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def run_reads(session: AsyncSession, runs: list[QuestionRun]) -> list[RunRead]:
    """The runs with their mention, competitors and citations: three queries a page."""
    run_ids = [run.id for run in runs]
    mentions = {
        m.run_id: m
        for m in await session.scalars(select(RunMention).where(RunMention.run_id.in_(run_ids)))
    }
    competitors: defaultdict[uuid.UUID, list[CompetitorRead]] = defaultdict(list)
    for c in await session.scalars(
        select(RunCompetitor)
        .where(RunCompetitor.run_id.in_(run_ids))
        # Competitors the analyst named but matching could not place come last on both dialects.
        .order_by(RunCompetitor.first_position.is_(None), RunCompetitor.first_position)
    ):
        competitors[c.run_id].append(
            CompetitorRead(
                name=c.name,
                mention_count=c.mention_count,
                list_position=c.list_position,
                source=c.source,
            )
        )
    citations: defaultdict[uuid.UUID, list[CitationRead]] = defaultdict(list)
    for cit in await session.scalars(
        select(RunCitation).where(RunCitation.run_id.in_(run_ids)).order_by(RunCitation.rank)
    ):
        citations[cit.run_id].append(
            CitationRead(
                rank=cit.rank,
                url=cit.url,
                domain=cit.domain,
                title=cit.title,
                source=cit.source,
                is_org_domain=cit.is_org_domain,
            )
        )
    return [
        RunRead(
            run_id=run.id,
            question=run.question_text,
            engine=run.engine_id,
            location=run.location,
            sample=run.sample,
            status=run.status,
            simulated=run.simulated,
            answer=run.answer_text,
            model=run.model,
            surface=run.surface,
            searched=run.searched,
            search_queries=run.search_queries,
            surface_present=run.surface_present,
            extraction_version=run.extraction_version,
            attempts=run.attempts,
            latency_ms=run.latency_ms,
            cost=run.cost,
            error=run.error,
            completed_at=run.completed_at,
            mention=_mention_read(mentions.get(run.id)),
            competitors=competitors[run.id],
            citations=citations[run.id],
        )
        for run in runs
    ]


def _mention_read(mention: RunMention | None) -> MentionRead | None:
    if mention is None:
        return None
    return MentionRead(
        mentioned=mention.mentioned,
        mention_count=mention.mention_count,
        first_position=mention.first_position,
        list_position=mention.list_position,
        sentiment=mention.sentiment,
        negated=mention.negated,
        snippet=mention.snippet,
        org_cited=mention.org_cited,
    )
