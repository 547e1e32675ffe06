"""run_question_matrix: every unfinished run asked, analysed and stored, each exactly once.

Runs are claimed with a lease (a conditional UPDATE), so any number of workers can work on one
batch — a redelivered job, a duplicate — without asking an engine twice for the same run.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.analysis.merge import AnalysisOutcome, analyse, judged_mention, named_competitors
from app.context import AppContext
from app.db.models import (
    EvaluationBatch,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
    RunStatus,
)
from app.db.types import utcnow
from app.db.upsert import rows_affected
from app.engines.backoff import backoff_seconds
from app.engines.base import BrandContext, EngineAnswer, EngineError, EngineRequest
from app.engines.guard import invalid_answer_reason
from app.errors import InvalidInputError
from app.extraction import Extraction, OrgProfile, extract

logger = logging.getLogger(__name__)

WAIT_FOR_OTHERS_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Subject:
    """What every run of a batch is analysed against."""

    brand: BrandContext
    profile: OrgProfile
    variations: tuple[str, ...]
    other_names: tuple[str, ...]  # aliases and variations as the analyst is told them
    own_domains: frozenset[str]  # registrable domains of the org's websites


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    id: uuid.UUID
    question: str
    engine_id: str
    location: str
    earlier_cost: Decimal | None  # billed to us by earlier claims (a rejected answer, a resume)

    def cost_with(self, cost: Decimal) -> Decimal:
        return (self.earlier_cost or Decimal(0)) + cost


class MatrixRunner:
    def __init__(
        self, context: AppContext, batch_id: uuid.UUID, subject: Subject, worker_id: str
    ) -> None:
        self._context = context
        self._settings = context.settings
        self._batch_id = batch_id
        self._subject = subject
        self._worker_id = worker_id
        self._lease = timedelta(seconds=self._settings.run_lease_seconds)

    async def run(self) -> None:
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            engines = await self._unfinished_engines()
            while engines:
                try:
                    async with asyncio.TaskGroup() as group:
                        for engine_id in engines:
                            for _ in range(self._lane_width(engine_id)):
                                group.create_task(self._claim_and_execute(engine_id))
                except ExceptionGroup as errors:
                    # The step's recorded error should name the cause, not the group around it.
                    raise errors.exceptions[0] from errors
                engines = await self._unfinished_engines()
                if engines:
                    # Another worker holds the remaining runs: wait for it, or its lease to end.
                    await asyncio.sleep(WAIT_FOR_OTHERS_SECONDS)
        finally:
            heartbeat.cancel()
            await asyncio.shield(self._release_claims())

    def _lane_width(self, engine_id: str) -> int:
        """Each engine gets its own lane of RUN_CONCURRENCY runs, so a slow engine (a scraper
        whose snapshot takes minutes) never holds up the others; an engine that serves many
        asks in one provider call gets enough to fill it."""
        try:
            batch_size = self._context.engines.get(engine_id).batch_size
        except InvalidInputError:
            batch_size = 1
        return max(self._settings.run_concurrency, batch_size)

    async def _claim_and_execute(self, engine_id: str) -> None:
        while (run := await self._claim(engine_id)) is not None:
            await self._execute(run)

    async def _claim(self, engine_id: str) -> ClaimedRun | None:
        now = utcnow()
        claimable = or_(
            QuestionRun.status == RunStatus.PENDING,
            and_(QuestionRun.status == RunStatus.RUNNING, QuestionRun.lease_expires_at < now),
        )
        candidate = (
            select(QuestionRun.id)
            .where(
                QuestionRun.batch_id == self._batch_id,
                QuestionRun.engine_id == engine_id,
                claimable,
            )
            .order_by(QuestionRun.created_at, QuestionRun.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        async with self._context.sessions() as session:
            row = (
                await session.execute(
                    update(QuestionRun)
                    .where(QuestionRun.id == candidate, claimable)
                    .values(
                        status=RunStatus.RUNNING,
                        claimed_by=self._worker_id,
                        lease_expires_at=now + self._lease,
                        attempts=QuestionRun.attempts + 1,
                        started_at=func.coalesce(QuestionRun.started_at, now),
                    )
                    .returning(
                        QuestionRun.id,
                        QuestionRun.question_text,
                        QuestionRun.engine_id,
                        QuestionRun.location,
                        QuestionRun.cost,
                    )
                )
            ).first()
            await session.commit()
        return None if row is None else ClaimedRun(*row)

    async def _execute(self, run: ClaimedRun) -> None:
        try:
            engine = self._context.engines.get(run.engine_id)
        except InvalidInputError as exc:
            await self._fail(run, str(exc))
            return
        max_attempts = self._settings.run_max_attempts
        for attempt in range(1, max_attempts + 1):
            request = EngineRequest(run.question, run.location, self._subject.brand, attempt)
            try:
                answer = await engine.ask(request)
            except EngineError as exc:
                if not exc.retryable or attempt == max_attempts:
                    await self._fail(run, f"{exc.reason} (after {attempt} attempt(s))", attempt)
                    return
                await asyncio.sleep(
                    backoff_seconds(
                        attempt,
                        exc.retry_after,
                        base_seconds=self._settings.run_retry_base_seconds,
                        max_seconds=self._settings.run_retry_max_seconds,
                    )
                )
                continue
            invalid = invalid_answer_reason(answer.text, run.question)
            if invalid is not None:
                await self._fail(run, f"invalid_answer: {invalid}", attempt, answer)
                return
            await self._complete(run, answer, attempt)
            return

    async def _complete(self, run: ClaimedRun, answer: EngineAnswer, calls: int) -> None:
        subject = self._subject
        extraction = extract(
            subject.profile,
            answer.text,
            [(c.url, c.title) for c in answer.citations],
            subject.variations,
            subject.brand.competitors,
        )
        outcome = await self._analyse(run, answer)
        rows = _result_rows(run.id, extraction, outcome, subject)
        async with self._context.sessions() as session:
            if not await self._store_answer(session, run, answer, outcome, calls):
                await session.rollback()
                logger.warning("run lease lost; its answer is dropped", extra={"run_id": run.id})
                return
            session.add_all(rows)
            await session.commit()

    async def _analyse(self, run: ClaimedRun, answer: EngineAnswer) -> AnalysisOutcome | None:
        """The one analysis call of a completed answer, unless analysis is switched off."""
        if not self._settings.answer_analysis_enabled:
            return None
        subject = self._subject
        return await analyse(
            self._context.analyst, run.question, answer.text, subject.brand, subject.other_names
        )

    async def _store_answer(
        self,
        session: AsyncSession,
        run: ClaimedRun,
        answer: EngineAnswer,
        outcome: AnalysisOutcome | None,
        calls: int,
    ) -> bool:
        raw: dict[str, object] = {
            **answer.raw,
            "citations": [{"url": c.url, "title": c.title} for c in answer.citations],
        }
        cost = answer.cost
        if outcome is not None:
            # The run's cost is all it cost us, the engine's answer and its analysis; the token
            # columns stay the engine's, the analysis's usage is kept beside the answer.
            raw["analysis"] = outcome.usage_record()
            raw["engine_cost"] = str(answer.cost)
            cost += outcome.cost
        stored = await session.execute(
            update(QuestionRun)
            .where(self._still_ours(run))
            .values(
                status=RunStatus.COMPLETED,
                answer_text=answer.text,
                model=answer.model,
                raw_response=raw,
                input_tokens=answer.input_tokens,
                output_tokens=answer.output_tokens,
                cost=run.cost_with(cost),
                attempts=_with_retries(calls),
                latency_ms=answer.latency_ms,
                simulated=answer.simulated,
                error=None,
                completed_at=utcnow(),
                lease_expires_at=None,
            )
        )
        return rows_affected(stored) > 0

    async def _fail(
        self, run: ClaimedRun, reason: str, calls: int = 1, answer: EngineAnswer | None = None
    ) -> None:
        """A failed run is never charged nor measured; a rejected answer is kept to inspect,
        with what the provider billed for it, which the batch's cost includes."""
        kept = (
            {}
            if answer is None
            else {
                "answer_text": answer.text,
                "model": answer.model,
                "cost": run.cost_with(answer.cost),
            }
        )
        async with self._context.sessions() as session:
            await session.execute(
                update(QuestionRun)
                .where(self._still_ours(run))
                .values(
                    status=RunStatus.FAILED,
                    error=reason[:2000],
                    lease_expires_at=None,
                    attempts=_with_retries(calls),
                    **kept,
                )
            )
            await session.commit()
        logger.warning(
            "run failed", extra={"run_id": run.id, "engine": run.engine_id, "error": reason}
        )

    def _still_ours(self, run: ClaimedRun) -> ColumnElement[bool]:
        return and_(
            QuestionRun.id == run.id,
            QuestionRun.status == RunStatus.RUNNING,
            QuestionRun.claimed_by == self._worker_id,
        )

    async def _unfinished_engines(self) -> list[str]:
        async with self._context.sessions() as session:
            engines = await session.scalars(
                select(QuestionRun.engine_id)
                .where(
                    QuestionRun.batch_id == self._batch_id,
                    QuestionRun.status.in_([RunStatus.PENDING, RunStatus.RUNNING]),
                )
                .distinct()
                .order_by(QuestionRun.engine_id)
            )
            return list(engines)

    async def _heartbeat(self) -> None:
        interval = max(0.5, self._settings.run_lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            now = utcnow()
            async with self._context.sessions() as session:
                await session.execute(
                    update(QuestionRun)
                    .where(
                        QuestionRun.batch_id == self._batch_id,
                        QuestionRun.claimed_by == self._worker_id,
                        QuestionRun.status == RunStatus.RUNNING,
                    )
                    .values(lease_expires_at=now + self._lease)
                )
                await session.execute(
                    update(EvaluationBatch)
                    .where(EvaluationBatch.id == self._batch_id)
                    .values(heartbeat_at=now)
                )
                await session.commit()

    async def _release_claims(self) -> None:
        """Hand unfinished runs back at once instead of making others wait out the lease."""
        async with self._context.sessions() as session:
            await session.execute(
                update(QuestionRun)
                .where(
                    QuestionRun.batch_id == self._batch_id,
                    QuestionRun.claimed_by == self._worker_id,
                    QuestionRun.status == RunStatus.RUNNING,
                )
                .values(status=RunStatus.PENDING, claimed_by=None, lease_expires_at=None)
            )
            await session.commit()


def _with_retries(calls: int) -> ColumnElement[int]:
    """`attempts` counts engine calls: the claim counted the first of this claim's `calls`."""
    return QuestionRun.attempts + (calls - 1)


def _result_rows(
    run_id: uuid.UUID,
    extraction: Extraction,
    outcome: AnalysisOutcome | None,
    subject: Subject,
) -> list[RunMention | RunCompetitor | RunCitation]:
    analysis = outcome.analysis if outcome is not None else None
    sentiment, negated = judged_mention(extraction.mentioned, analysis)
    rows: list[RunMention | RunCompetitor | RunCitation] = [
        RunMention(
            run_id=run_id,
            mentioned=extraction.mentioned,
            mention_count=extraction.mention_count,
            first_position=extraction.first_offset,
            list_position=extraction.list_position,
            snippet=extraction.snippet,
            org_cited=extraction.org_cited,
            sentiment=sentiment,
            negated=negated,
        )
    ]
    rows.extend(
        RunCompetitor(
            run_id=run_id,
            name=competitor.name,
            mention_count=competitor.mention_count,
            list_position=competitor.list_position,
            first_position=competitor.first_offset,
            source=competitor.source,
        )
        for competitor in named_competitors(extraction.document, extraction.competitors, analysis)
    )
    rows.extend(
        RunCitation(
            run_id=run_id,
            url=citation.url,
            domain=citation.domain,
            title=citation.title,
            rank=citation.rank,
            source=citation.source,
            is_org_domain=citation.domain in subject.own_domains,
        )
        for citation in extraction.citations
    )
    return rows
