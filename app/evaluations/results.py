"""GET /batches/{id}/results: the runs, page by page, and what they add up to."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.analysis.names import name_key
from app.db.models import (
    EvaluationBatch,
    Org,
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
    SentimentRead,
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
    negated: bool
    sentiment: str | None
    has_citations: bool

    @property
    def visible(self) -> bool:
        """The org is mentioned, and not only to say nothing is known about it."""
        return self.mentioned and not self.negated


@dataclass(slots=True)
class _Tally:
    tracked: TrackedBrands
    completed: int = 0
    failed: int = 0
    visible: int = 0
    with_citations: int = 0
    cited: int = 0
    rival_mentions: int = 0
    positions: list[int] = field(default_factory=list)
    sentiments: Counter[str] = field(default_factory=Counter)
    competitors: Counter[str] = field(default_factory=Counter)
    domains: Counter[str] = field(default_factory=Counter)

    def add(self, run: RunFacts) -> None:
        if run.status == RunStatus.FAILED:
            self.failed += 1
            return
        if run.status != RunStatus.COMPLETED:
            return
        self.completed += 1
        self.with_citations += run.has_citations
        self.cited += run.org_cited
        self.rival_mentions += len(self.tracked.among(run.competitors))
        if run.visible:
            self.visible += 1
            if run.list_position is not None:
                self.positions.append(run.list_position)
            if run.sentiment is not None:
                self.sentiments[run.sentiment] += 1
        self.competitors.update(run.competitors)
        self.domains.update(run.domains)

    def summary(self) -> SummaryRead:
        return SummaryRead(
            completed_runs=self.completed,
            failed_runs=self.failed,
            visibility=_ratio(self.visible, self.completed),
            share_of_voice=_ratio(self.visible, self.visible + self.rival_mentions),
            average_list_position=(
                round(sum(self.positions) / len(self.positions), 2) if self.positions else None
            ),
            citation_rate=_ratio(self.cited, self.with_citations),
            sentiment=_sentiment(self.sentiments),
            top_competitors=_ranked(self.competitors),
            top_cited_domains=_ranked(self.domains),
        )


@dataclass(frozen=True, slots=True)
class TrackedBrands:
    """The org's rivals counted in share of voice: its configured competitors, or, when it
    has none, every competitor an answer named."""

    competitors: frozenset[str] | None

    @classmethod
    def of(cls, configured: Iterable[str]) -> TrackedBrands:
        keys = frozenset(name_key(name) for name in configured)
        return cls(keys or None)

    def among(self, named: Iterable[str]) -> set[str]:
        keys = {name_key(name) for name in named}
        return keys if self.competitors is None else keys & self.competitors


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _sentiment(counts: Counter[str]) -> SentimentRead:
    positive, neutral, negative = (counts[s] for s in ("positive", "neutral", "negative"))
    judged = positive + neutral + negative
    return SentimentRead(
        positive=positive,
        neutral=neutral,
        negative=negative,
        score=round((positive - negative) / judged, 4) if judged else None,
    )


def _ranked(counter: Counter[str]) -> list[RankedName]:
    ordered = sorted(counter.items(), key=lambda item: (-item[1], item[0]))
    return [RankedName(name=name, runs=runs) for name, runs in ordered[:TOP_N]]


def summarise(
    runs: Iterable[RunFacts], tracked: TrackedBrands
) -> tuple[SummaryRead, dict[str, SummaryRead], dict[str, SummaryRead]]:
    overall = _Tally(tracked)
    by_engine: dict[str, _Tally] = {}
    by_location: dict[str, _Tally] = {}
    for run in runs:
        overall.add(run)
        by_engine.setdefault(run.engine, _Tally(tracked)).add(run)
        by_location.setdefault(run.location, _Tally(tracked)).add(run)
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
                RunMention.negated,
                RunMention.sentiment,
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
        .where(QuestionRun.batch_id == batch_id),
    )
    return [
        RunFacts(
            engine=row.engine_id,
            location=row.location,
            status=row.status,
            simulated=row.simulated,
            mentioned=bool(row.mentioned),
            list_position=row.list_position,
            org_cited=bool(row.org_cited),
            competitors=frozenset(competitors.get(row.id, ())),
            domains=frozenset(domains.get(row.id, ())),
            negated=bool(row.negated),
            sentiment=row.sentiment,
            has_citations=row.id in domains,
        )
        for row in rows
    ]


async def _names_by_run(
    session: AsyncSession, query: Select[uuid.UUID, str | None]
) -> dict[uuid.UUID, set[str]]:
    """Each run with a row gets an entry, even when its names are all null."""
    names: defaultdict[uuid.UUID, set[str]] = defaultdict(set)
    for run_id, name in (await session.execute(query)).all():
        found = names[run_id]
        if name is not None:
            found.add(name)
    return names


async def batch_results(
    session: AsyncSession,
    batch: EvaluationBatch,
    page: PageParams,
    engine: str | None,
    location: str | None,
) -> ResultsRead:
    facts = await load_run_facts(session, batch.id)
    org = await session.get_one(Org, batch.org_id)
    overall, by_engine, by_location = summarise(facts, TrackedBrands.of(org.competitors))
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
        negated=mention.negated,
        snippet=mention.snippet,
        org_cited=mention.org_cited,
    )
