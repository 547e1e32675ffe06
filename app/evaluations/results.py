"""GET /batches/{id}/results: the runs, page by page, and what they add up to."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import (
    EvaluationBatch,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
    RunStatus,
)
from app.evaluations.schemas import (
    CitationRead,
    CompetitorRead,
    MentionRead,
    RankedName,
    ResultsRead,
    RunRead,
    SummaryRead,
)
from app.pagination import PageParams

TOP_N = 10


@dataclass(frozen=True, slots=True)
class RunFacts:
    engine: str
    location: str
    status: RunStatus
    simulated: bool
    mentioned: bool
    list_position: int | None
    org_cited: bool
    competitors: frozenset[str]
    domains: frozenset[str]


@dataclass(slots=True)
class _Tally:
    completed: int = 0
    failed: int = 0
    mentioned: int = 0
    cited: int = 0
    positions: list[int] = field(default_factory=list)
    competitors: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)

    def add(self, run: RunFacts) -> None:
        if run.status == RunStatus.FAILED:
            self.failed += 1
            return
        if run.status != RunStatus.COMPLETED:
            return
        self.completed += 1
        self.mentioned += run.mentioned
        self.cited += run.org_cited
        if run.list_position is not None:
            self.positions.append(run.list_position)
        self.competitors.update(run.competitors)
        self.domains.update(run.domains)

    def summary(self) -> SummaryRead:
        def share(count: int) -> float | None:
            return round(count / self.completed, 4) if self.completed else None

        return SummaryRead(
            completed_runs=self.completed,
            failed_runs=self.failed,
            visibility=share(self.mentioned),
            average_list_position=(
                round(sum(self.positions) / len(self.positions), 2) if self.positions else None
            ),
            citation_rate=share(self.cited),
            top_competitors=_ranked(self.competitors),
            top_cited_domains=_ranked(self.domains),
        )


def _ranked(counter: Counter[str]) -> list[RankedName]:
    ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return [RankedName(name=name, runs=runs) for name, runs in ordered[:TOP_N]]


def summarise(
    runs: Iterable[RunFacts],
) -> tuple[SummaryRead, dict[str, SummaryRead], dict[str, SummaryRead]]:
    overall = _Tally()
    by_engine: defaultdict[str, _Tally] = defaultdict(_Tally)
    by_location: defaultdict[str, _Tally] = defaultdict(_Tally)
    for run in runs:
        overall.add(run)
        by_engine[run.engine].add(run)
        by_location[run.location].add(run)
    return (
        overall.summary(),
        {k: v.summary() for k, v in sorted(by_engine.items())},
        {k: v.summary() for k, v in sorted(by_location.items())},
    )


async def load_run_facts(session: AsyncSession, batch_id: uuid.UUID) -> list[RunFacts]:
    rows = (
        await session.execute(
            select(
                QuestionRun.id,
                QuestionRun.engine_id,
                QuestionRun.location,
                QuestionRun.status,
                QuestionRun.simulated,
                RunMention.mentioned,
                RunMention.list_position,
                RunMention.org_cited,
            )
            .outerjoin(RunMention, RunMention.run_id == QuestionRun.id)
            .where(QuestionRun.batch_id == batch_id)
        )
    ).all()
    competitors = await _names_by_run(
        session,
        select(RunCompetitor.run_id, RunCompetitor.name)
        .join(QuestionRun, QuestionRun.id == RunCompetitor.run_id)
        .where(QuestionRun.batch_id == batch_id),
    )
    domains = await _names_by_run(
        session,
        select(RunCitation.run_id, RunCitation.domain)
        .join(QuestionRun, QuestionRun.id == RunCitation.run_id)
        .where(QuestionRun.batch_id == batch_id, RunCitation.domain.is_not(None)),
    )
    return [
        RunFacts(
            engine=engine,
            location=location,
            status=status,
            simulated=simulated,
            mentioned=bool(mentioned),
            list_position=list_position,
            org_cited=bool(org_cited),
            competitors=frozenset(competitors.get(run_id, ())),
            domains=frozenset(domains.get(run_id, ())),
        )
        for run_id, engine, location, status, simulated, mentioned, list_position, org_cited in rows
    ]


async def _names_by_run(
    session: AsyncSession, query: Select[uuid.UUID, str | None]
) -> dict[uuid.UUID, set[str]]:
    names: defaultdict[uuid.UUID, set[str]] = defaultdict(set)
    for run_id, name in (await session.execute(query)).all():
        if name is not None:
            names[run_id].add(name)
    return names


async def batch_results(
    session: AsyncSession,
    batch: EvaluationBatch,
    page: PageParams,
    engine: str | None,
    location: str | None,
) -> ResultsRead:
    facts = await load_run_facts(session, batch.id)
    overall, by_engine, by_location = summarise(facts)
    query = select(QuestionRun).where(QuestionRun.batch_id == batch.id)
    if engine is not None:
        query = query.where(QuestionRun.engine_id == engine)
    if location is not None:
        query = query.where(QuestionRun.location == location.upper())
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    runs = list(
        await session.scalars(
            query.order_by(QuestionRun.question_text, QuestionRun.engine_id, QuestionRun.location)
            .limit(page.limit)
            .offset(page.offset)
        )
    )
    return ResultsRead(
        batch_id=batch.id,
        status=batch.status,
        simulated=any(fact.simulated for fact in facts),
        summary=overall,
        by_engine=by_engine,
        by_location=by_location,
        runs=await _run_reads(session, runs),
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def _run_reads(session: AsyncSession, runs: list[QuestionRun]) -> list[RunRead]:
    run_ids = [run.id for run in runs]
    mentions = {
        m.run_id: m
        for m in await session.scalars(select(RunMention).where(RunMention.run_id.in_(run_ids)))
    }
    competitors: defaultdict[uuid.UUID, list[CompetitorRead]] = defaultdict(list)
    for c in await session.scalars(
        select(RunCompetitor)
        .where(RunCompetitor.run_id.in_(run_ids))
        .order_by(RunCompetitor.first_position)
    ):
        competitors[c.run_id].append(
            CompetitorRead(
                name=c.name, mention_count=c.mention_count, list_position=c.list_position
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
            status=run.status,
            simulated=run.simulated,
            answer=run.answer_text,
            model=run.model,
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
        snippet=mention.snippet,
        org_cited=mention.org_cited,
    )
