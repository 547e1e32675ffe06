"""GET /batches/{id}/results: the runs, page by page, and what they add up to."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    EvaluationBatch,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
)
from app.errors import InvalidInputError
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
    cursor: str | None = None,
) -> ResultsRead:
    """A page of the batch's runs: after `cursor` (keyset: the page costs the same however
    deep it is) or at `offset`; `next_cursor` leads to the next page."""
    summary = await batch_summary(session, batch)
    query = select(QuestionRun).where(QuestionRun.batch_id == batch.id)
    if engine is not None:
        query = query.where(QuestionRun.engine_id == engine)
    if location is not None:
        query = query.where(QuestionRun.location == location.upper())
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    if cursor is not None:
        query = query.where(tuple_(*RUN_ORDER) > tuple_(*await _after(session, batch, cursor)))
    runs = list(
        await session.scalars(query.order_by(*RUN_ORDER).limit(page.limit + 1).offset(page.offset))
    )
    more = len(runs) > page.limit
    runs = runs[: page.limit]
    return ResultsRead(
        **summary.model_dump(),
        batch_id=batch.id,
        status=batch.status,
        summarised_at=batch.summarised_at,
        runs=await run_reads(session, runs),
        total=total,
        limit=page.limit,
        offset=page.offset,
        next_cursor=encode_cursor(runs[-1].id) if more else None,
    )


def encode_cursor(run_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(run_id.bytes).decode().rstrip("=")


async def _after(session: AsyncSession, batch: EvaluationBatch, cursor: str) -> tuple[Any, ...]:
    """The order key of the run a cursor names: the page goes on after it."""
    try:
        run_id = uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError(
            "cursor is not one this API gave out", code="invalid_cursor"
        ) from exc
    key = (
        await session.execute(
            select(*RUN_ORDER).where(QuestionRun.id == run_id, QuestionRun.batch_id == batch.id)
        )
    ).first()
    if key is None:
        raise InvalidInputError("cursor names no run of this batch", code="invalid_cursor")
    return tuple(key)


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
