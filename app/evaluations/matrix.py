"""run_question_matrix: every unfinished run asked, analysed and stored, each exactly once.

Runs are claimed with a lease (a conditional UPDATE), so any number of workers can work on one
batch — a redelivered job, a duplicate — without asking an engine twice for the same run.
Leases are written and compared in the database's time, so workers' clocks may disagree. A
supervised loop renews this worker's leases; a run whose lease is not renewed in time stops
being worked on (its engine call is abandoned) before another worker may take it over.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Exists,
    Float,
    Integer,
    Select,
    String,
    Uuid,
    and_,
    bindparam,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import BindParameter

from app.analysis.merge import AnalysisOutcome, analyse, judged_mention, named_competitors
from app.clock import sleep_until_set
from app.context import AppContext
from app.db.clock import db_now
from app.db.models import (
    BatchStatus,
    EvaluationBatch,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
    RunStatus,
    table_of,
)
from app.db.types import UTCDateTime
from app.db.upsert import insert_ignoring_conflicts, rows_affected
from app.engines.backoff import backoff_seconds
from app.engines.base import (
    BrandContext,
    EngineAnswer,
    EngineError,
    EngineRequest,
    storable,
    storable_value,
)
from app.engines.guard import invalid_answer_reason
from app.errors import InvalidInputError, describe_error
from app.evaluations.billing import lock_batch, lock_partner, release_run_share
from app.evaluations.result_statement import store_parameters, store_results_statement
from app.evaluations.runs import RUN_KEY, in_flight
from app.extraction import EXTRACTION_VERSION, Extraction, OrgProfile, extract
from app.jobs import JobControl, JobInterruptedError
from app.loops import LoopGaveUpError, LoopPolicy, LoopService
from app.metrics import count_retry, observe_run
from app.offload import read_off_loop
from app.scrub import scrub_secrets

logger = logging.getLogger(__name__)

WAIT_FOR_OTHERS_SECONDS = 1.0
MAX_RUN_ERROR = 2000  # a provider's error text, kept on the run to read


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
    sample: int
    attempts: int  # engine calls so far, this claim's first included

    def cost_with(self, cost: Decimal) -> Decimal:
        return (self.earlier_cost or Decimal(0)) + cost


@dataclass(frozen=True, slots=True)
class _MatrixState:
    claimable_engines: list[str]
    ended: bool
    cancel_requested: bool


class MatrixRunner:
    def __init__(
        self,
        context: AppContext,
        batch_id: uuid.UUID,
        partner_id: uuid.UUID,
        subject: Subject,
        control: JobControl,
        max_samples: int | None = None,
    ) -> None:
        self._context = context
        self._settings = context.settings
        self._clock = context.clock
        self._batch_id = batch_id
        self._partner_id = partner_id
        self._subject = subject
        self._control = control
        self._max_samples = max_samples
        self._worker_id = control.worker_id
        self._executing: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._results = ResultWriter(context, batch_id, self._worker_id)
        # Whether a cancel had been asked for when the matrix last looked: once it has
        # returned, whether the batch ends cancelled.
        self.cancel_requested = False

    async def run(self) -> None:
        """Until no run is left to ask: returns once every run has ended (or, for a batch being
        cancelled, once none is in flight); raises JobInterruptedError when the worker drains."""
        try:
            while True:
                if self._control.stopping.is_set():
                    raise JobInterruptedError("the worker is draining")
                state = await self._state()
                if state.claimable_engines:
                    await self._work(state.claimable_engines)
                    continue
                if self._max_samples is not None:
                    if await self._ask_again():
                        continue
                    # Another worker may have added asks meanwhile: looked at again.
                    state = await self._state()
                self.cancel_requested = state.cancel_requested
                if state.ended:
                    # Every run this worker claimed has ended: none to hand back.
                    return
                # Another worker holds the remaining runs: wait for it, or its lease to end.
                await sleep_until_set(self._clock, self._control.stopping, WAIT_FOR_OTHERS_SECONDS)
        except BaseException:
            await asyncio.shield(self._release_claims())
            raise

    async def _work(self, engines: list[str]) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                # A keeper per round of claims: what it holds starts with them.
                leases = LeaseKeeper(self, self._context, self._batch_id)
                keeper = group.create_task(leases.run())
                # Every engine's first claim lands before any of its runs start, so runs that
                # end together, whatever their engine, are stored by one write.
                widths = {engine_id: self._lane_width(engine_id) for engine_id in engines}
                first = [
                    group.create_task(self._claim(engine_id, width))
                    for engine_id, width in widths.items()
                ]
                await asyncio.wait(first)
                lanes = [
                    group.create_task(self._lane(engine_id, width, claim.result()))
                    for (engine_id, width), claim in zip(widths.items(), first, strict=True)
                ]
                await asyncio.wait(lanes)
                keeper.cancel()
        except ExceptionGroup as errors:
            # The step's recorded error should name the cause, not the group around it.
            raise errors.exceptions[0] from errors

    def _lane_width(self, engine_id: str) -> int:
        """Each engine gets its own lane of RUN_CONCURRENCY runs, so a slow engine (a scraper
        whose snapshot takes minutes) never holds up the others; an engine that serves many
        asks in one provider call gets enough to fill it."""
        try:
            batch_size = self._context.engines.get(engine_id).batch_size
        except InvalidInputError:
            batch_size = 1
        return max(self._settings.run_concurrency, batch_size)

    async def _lane(self, engine_id: str, width: int, first: list[ClaimedRun]) -> None:
        """Up to `width` (`_lane_width`) of the engine's runs in flight, starting with `first`,
        its first claim. Free places are filled by one claim of as many runs as there are
        places, so the lane never holds more than the engine has left, and runs that end
        together are replaced by one statement."""
        running: dict[asyncio.Task[None], uuid.UUID] = {}
        claimed, free = first, width
        try:
            while True:
                # Fewer than asked: nothing more of this engine is claimable this round.
                more = len(claimed) == free
                # A claim that lands after the stop is never started: handed back at the end.
                if not self._control.stopping.is_set():
                    for run in claimed:
                        task = asyncio.create_task(self._execute(run))
                        running[task] = run.id
                        self._executing[run.id] = task
                if not running:
                    return
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    self._executing.pop(running.pop(task), None)
                    if not task.cancelled():
                        task.result()  # a bug in _execute ends the matrix with its error
                    # Cancelled alone: its lease was lost to another worker; this lane goes on.
                free = width - len(running)
                # Draining stops the claiming at once; what is in flight finishes or is handed
                # back.
                claiming = more and not self._control.stopping.is_set()
                claimed = await self._claim(engine_id, free) if claiming else []
        except BaseException:
            # The matrix is stopping (a drain's end, a timeout, an error): so do the engine
            # calls of the lane.
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            raise
        finally:
            for run_id in running.values():
                self._executing.pop(run_id, None)

    def abandon(self, run_ids: set[uuid.UUID]) -> None:
        """Stop working on runs whose leases this worker no longer holds."""
        for run_id in run_ids:
            task = self._executing.get(run_id)
            if task is not None and not task.done():
                logger.warning("lease lost; abandoning the engine call", extra={"run_id": run_id})
                task.cancel()

    def executing(self) -> set[uuid.UUID]:
        return set(self._executing)

    async def _claim(self, engine_id: str, count: int) -> list[ClaimedRun]:
        # One statement, its own transaction: the runs it returns are ours once it answers.
        async with self._context.statements() as session:
            # On the connection: the rows are values, and the ORM's execution around a
            # statement cost more than the statement.
            connection = await session.connection()
            rows = (
                await connection.execute(
                    _CLAIM,
                    {
                        "m_batch_id": self._batch_id,
                        "m_engine_id": engine_id,
                        "m_count": count,
                        "m_worker_id": self._worker_id,
                        "m_lease_seconds": float(self._settings.run_lease_seconds),
                        "m_now": self._clock.now(),
                    },
                )
            ).all()
            await session.commit()
        return [ClaimedRun(*row) for row in rows]

    async def _execute(self, run: ClaimedRun) -> None:
        try:
            engine = self._context.engines.get(run.engine_id)
        except InvalidInputError as exc:
            await self._fail(run, str(exc))
            return
        max_attempts = self._settings.run_max_attempts
        for attempt in range(1, max_attempts + 1):
            request = EngineRequest(
                run.question, run.location, self._subject.brand, attempt, sample=run.sample
            )
            try:
                answer = storable(await engine.ask(request))
            except EngineError as exc:
                if not exc.retryable or attempt == max_attempts:
                    await self._fail(run, f"{exc.reason} (after {attempt} attempt(s))", attempt)
                    return
                count_retry(run.engine_id)
                await self._clock.sleep(
                    backoff_seconds(
                        attempt,
                        exc.retry_after,
                        base_seconds=self._settings.run_retry_base_seconds,
                        max_seconds=self._settings.run_retry_max_seconds,
                    )
                )
                continue
            # A results page without an AI Overview is an answer: there was nothing to guard.
            invalid = answer.surface_present and invalid_answer_reason(answer.text, run.question)
            if invalid:
                await self._fail(run, f"invalid_answer: {invalid}", attempt, answer)
                return
            await self._complete(run, answer, attempt)
            return

    async def _complete(self, run: ClaimedRun, answer: EngineAnswer, calls: int) -> None:
        outcome: AnalysisOutcome | None = None
        rows: ResultRows | None = None
        # A results page without the AI surface has nothing to analyse or extract: the run
        # completes with no mention and no citation.
        if answer.surface_present:
            subject = self._subject
            extraction = await read_off_loop(
                answer.text,
                extract,
                subject.profile,
                answer.text,
                [(c.url, c.title) for c in answer.citations],
                subject.variations,
                subject.brand.competitors,
            )
            outcome = await self._analyse(run, answer)
            rows = result_rows(run.id, extraction, outcome, subject)
        values = self._completed_values(run, answer, outcome, calls)
        if not await self._results.store(run.id, values, rows):
            logger.warning("run lease lost; its answer is dropped", extra={"run_id": run.id})
            return
        observe_run(run.engine_id, "completed", answer.latency_ms)

    async def _analyse(self, run: ClaimedRun, answer: EngineAnswer) -> AnalysisOutcome | None:
        """The one analysis call of a completed answer, unless analysis is switched off."""
        if not self._settings.answer_analysis_enabled:
            return None
        subject = self._subject
        return await analyse(
            self._context.analyst, run.question, answer.text, subject.brand, subject.other_names
        )

    def _completed_values(
        self,
        run: ClaimedRun,
        answer: EngineAnswer,
        outcome: AnalysisOutcome | None,
        calls: int,
    ) -> dict[str, object]:
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
        return {
            "status": RunStatus.COMPLETED,
            "answer_text": answer.text,
            "model": answer.model,
            "raw_response": raw,
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "cost": run.cost_with(cost),
            # The claim counted the first of this claim's `calls`, and nobody else writes
            # `attempts` while the claim is held.
            "attempts": run.attempts + calls - 1,
            "latency_ms": answer.latency_ms,
            "simulated": answer.simulated,
            "analysed": outcome is not None and outcome.analysis is not None,
            "extraction_version": EXTRACTION_VERSION,
            "surface": answer.surface,
            "searched": answer.searched,
            "search_queries": list(answer.search_queries) or None,
            "surface_present": answer.surface_present,
            "error": None,
            "completed_at": self._clock.now(),
            "lease_expires_at": None,
        }

    async def _fail(
        self, run: ClaimedRun, reason: str, calls: int = 1, answer: EngineAnswer | None = None
    ) -> None:
        """A failed run is never charged nor measured, and gives its share of the batch's
        reservation back; a rejected answer is kept to inspect, with what the provider billed
        for it, which the batch's cost includes."""
        reason = storable_value(scrub_secrets(reason, self._settings))
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
            # Partner, batch, then run: the order every writer of these rows locks them in.
            partner = await lock_partner(session, self._partner_id)
            batch = await lock_batch(session, self._batch_id)
            failed = await session.execute(
                update(QuestionRun)
                .where(_still_ours([run.id], self._worker_id, self._batch_id))
                .values(
                    status=RunStatus.FAILED,
                    error=reason[:MAX_RUN_ERROR],
                    lease_expires_at=None,
                    attempts=_with_retries(calls),
                    **kept,
                )
            )
            if rows_affected(failed):
                release_run_share(partner, batch)
            await session.commit()
        observe_run(run.engine_id, "failed")
        logger.warning(
            "run failed", extra={"run_id": run.id, "engine": run.engine_id, "error": reason}
        )

    async def _state(self) -> _MatrixState:
        """What is left of the batch, in one query: the engines with runs to claim, and whether
        no run is left to ask — or, for a batch being cancelled, none is in flight with another
        worker. One query, so a lease that ends meanwhile cannot make a run look both not
        claimable and not held."""
        async with self._context.statements() as session:
            connection = await session.connection()
            rows = (
                await connection.execute(
                    _STATE, {"m_batch_id": self._batch_id, "m_worker_id": self._worker_id}
                )
            ).all()
        cancel_requested = any(row[4] is not None for row in rows)
        left = sum(row[2] for row in rows)
        held = sum(row[3] for row in rows)
        return _MatrixState(
            claimable_engines=[row[0] for row in rows if row[1]],
            ended=left == 0 or (cancel_requested and held == 0),
            cancel_requested=cancel_requested,
        )

    async def _ask_again(self) -> int:
        """Adaptive sampling: one more ask of every cell whose answers disagree — some show
        the org, some do not — and that has fewer than `max_samples` asks. Returns the runs
        added. Decided once all of a cell's asks have ended; the unique key settles two workers
        adding the same ask."""
        if self._max_samples is None:
            return 0
        shown = and_(
            QuestionRun.status == RunStatus.COMPLETED,
            QuestionRun.surface_present.is_(True),
            RunMention.mentioned.is_(True),
            RunMention.negated.is_(False),
        )
        not_shown = and_(
            QuestionRun.status == RunStatus.COMPLETED,
            QuestionRun.surface_present.is_(True),
            not_(and_(RunMention.mentioned.is_(True), RunMention.negated.is_(False))),
        )
        unfinished = QuestionRun.status.in_([RunStatus.PENDING, RunStatus.RUNNING])
        async with self._context.sessions() as session:
            live = await session.scalar(
                select(EvaluationBatch.id)
                .where(
                    EvaluationBatch.id == self._batch_id,
                    EvaluationBatch.status == BatchStatus.RUNNING,
                    EvaluationBatch.cancel_requested_at.is_(None),
                )
                .with_for_update()
            )
            if live is None:
                await session.rollback()
                return 0
            disagreeing = (
                await session.execute(
                    select(
                        QuestionRun.question_id,
                        QuestionRun.question_text,
                        QuestionRun.engine_id,
                        QuestionRun.location,
                        func.max(QuestionRun.sample),
                    )
                    .outerjoin(RunMention, RunMention.run_id == QuestionRun.id)
                    .where(QuestionRun.batch_id == self._batch_id)
                    .group_by(
                        QuestionRun.question_id,
                        QuestionRun.question_text,
                        QuestionRun.engine_id,
                        QuestionRun.location,
                    )
                    .having(
                        func.count().filter(unfinished) == 0,
                        func.count().filter(shown) > 0,
                        func.count().filter(not_shown) > 0,
                        func.max(QuestionRun.sample) < self._max_samples,
                    )
                )
            ).all()
            if not disagreeing:
                await session.rollback()
                return 0
            now = self._clock.now()
            added = await session.execute(
                insert_ignoring_conflicts(session, QuestionRun, RUN_KEY)
                .values(
                    [
                        {
                            "id": uuid.uuid4(),
                            "batch_id": self._batch_id,
                            "question_id": question_id,
                            "question_text": text,
                            "engine_id": engine_id,
                            "location": location,
                            "sample": last + 1,
                            "status": RunStatus.PENDING,
                            "attempts": 0,
                            "simulated": False,
                            "created_at": now,
                        }
                        for question_id, text, engine_id, location, last in disagreeing
                    ]
                )
                .returning(QuestionRun.id)
            )
            count = len(added.all())
            await session.execute(
                update(EvaluationBatch)
                .where(EvaluationBatch.id == self._batch_id)
                .values(total_runs=EvaluationBatch.total_runs + count)
            )
            await session.commit()
        if count:
            logger.info("cells whose answers disagree asked again", extra={"runs": count})
        return count

    async def renew_leases(self) -> set[uuid.UUID]:
        """Extend the leases of this worker's runs of the batch; returns the runs renewed."""
        async with self._context.sessions() as session:
            # The batch's row before its runs': the order every writer locks them in.
            await session.execute(
                update(EvaluationBatch)
                .where(EvaluationBatch.id == self._batch_id)
                .values(heartbeat_at=db_now())
            )
            renewed = await session.scalars(
                update(QuestionRun)
                .where(
                    QuestionRun.batch_id == self._batch_id,
                    QuestionRun.claimed_by == self._worker_id,
                    QuestionRun.status == RunStatus.RUNNING,
                )
                .values(lease_expires_at=db_now(self._settings.run_lease_seconds))
                .returning(QuestionRun.id)
            )
            ids = set(renewed)
            await session.commit()
        return ids

    async def _release_claims(self) -> None:
        """Hand unfinished runs back at once instead of making others wait out the lease.

        Best effort: with the database gone the leases end by themselves.
        """
        try:
            async with self._context.statements() as session:
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
        except Exception as exc:
            logger.warning(
                "could not hand the claimed runs back; their leases will expire",
                extra={"error": describe_error(exc)},
            )


@dataclass(slots=True)
class _Result:
    run_id: uuid.UUID
    values: dict[str, object]
    rows: ResultRows | None  # None: a results page without the AI surface adds none
    stored: asyncio.Future[bool]


class ResultWriter:
    """Group commit of completed runs: the results of runs that complete while a write is under
    way (or in the same pass of the event loop) are written together, in one transaction, when
    it ends — on Postgres one statement for many runs instead of a transaction each. Each run's
    rows are still committed with its `completed` status, and only while the run is still this
    worker's: its row is locked, and checked, before anything of it is written."""

    def __init__(self, context: AppContext, batch_id: uuid.UUID, worker_id: str) -> None:
        self._sessions = context.sessions
        self._statements = context.statements
        # Postgres writes a group in one statement (`result_statement`); SQLite in a
        # transaction of a locking read and the writes.
        self._postgres = context.db.dialect.name == "postgresql"
        self._batch_id = batch_id
        self._worker_id = worker_id
        self._pending: list[_Result] = []
        self._lock = asyncio.Lock()

    async def store(
        self, run_id: uuid.UUID, values: dict[str, object], rows: ResultRows | None
    ) -> bool:
        """False when the run is no longer this worker's: nothing of it is written."""
        result = _Result(run_id, values, rows, asyncio.get_running_loop().create_future())
        self._pending.append(result)
        # One pass of the event loop first: runs whose answers arrived together (the
        # engines' first claims start together) are then all pending, and join this write.
        await asyncio.sleep(0)
        async with self._lock:
            if not result.stored.done():
                group, self._pending = self._pending, []
                await self._write(group)
        return result.stored.result()

    async def _write(self, group: list[_Result]) -> None:
        """Settles every result of the group: stored or not, or the error that stopped it."""
        try:
            ours = await self._store(group)
        except Exception as exc:
            for result in group:
                result.stored.set_exception(exc)
            return
        except BaseException:
            # Cancelled mid-write (the matrix stops): the group's runs are as the database has
            # them, stored or still claimed (handed back when the matrix ends).
            for result in group:
                result.stored.cancel()
            raise
        for result in group:
            result.stored.set_result(result.run_id in ours)

    async def _store(self, group: list[_Result]) -> set[uuid.UUID]:
        """Writes the group's runs still this worker's; returns them."""
        parameters = {"m_worker_id": self._worker_id, "m_batch_id": self._batch_id}
        if self._postgres:
            rows = [r.rows for r in group if r.rows]
            async with self._statements() as session:
                connection = await session.connection()
                stored = await connection.scalars(
                    _store_results(tuple(group[0].values)),
                    parameters
                    | store_parameters(
                        connection.dialect,
                        [{"id": r.run_id, **r.values} for r in group],
                        mentions=[r.mention for r in rows],
                        competitors=[row for r in rows for row in r.competitors],
                        citations=[row for r in rows for row in r.citations],
                    ),
                )
                return set(stored)
        async with self._sessions() as session:
            connection = await session.connection()
            ours = set(
                await connection.scalars(
                    _STILL_OURS, parameters | {"m_run_ids": [r.run_id for r in group]}
                )
            )
            stored_here = [r for r in group if r.run_id in ours]
            if stored_here:
                # Core's executemany: the ORM's bulk update by primary key costs more per row
                # than the answer's extraction.
                await connection.execute(
                    _STORE_RUN, [{"run_id": r.run_id, **r.values} for r in stored_here]
                )
                await insert_result_rows(session, [r.rows for r in stored_here if r.rows])
            await session.commit()
        return ours


class LeaseKeeper(LoopService):
    """Renews the runner's leases every third of RUN_LEASE_SECONDS, supervised.

    A lease counts as held only until RUN_LEASE_SECONDS after the start of its last successful
    renewal, measured on this worker's monotonic clock (durations, not instants, so a skewed
    wall clock does not matter). If renewals keep failing, the keeper gives up before that:
    every run in flight is abandoned and handed back, so no other worker can take a run over
    while this one still asks its engine.
    """

    name = "run_lease_heartbeat"

    def __init__(self, runner: MatrixRunner, context: AppContext, batch_id: uuid.UUID) -> None:
        settings = context.settings
        lease = settings.run_lease_seconds
        super().__init__(
            context.clock,
            LoopPolicy(
                interval=lease / 3,
                iteration_timeout=lease / 3,
                max_failures=settings.loop_max_failures,
                backoff_base=min(1.0, lease / 30),
            ),
        )
        self._runner = runner
        self._batch_id = batch_id
        self._lease = lease
        self._held_until = self.clock.monotonic() + lease

    def deadline(self) -> float:
        # A third of the lease to spare: the abandoned calls still have to stop.
        return self._held_until - self._lease / 3

    def log_fields(self) -> dict[str, object]:
        return {"batch_id": self._batch_id}

    async def run_once(self) -> None:
        started = self.clock.monotonic()
        in_flight = self._runner.executing()
        renewed = await self._runner.renew_leases()
        self._held_until = started + self._lease
        # Taken over meanwhile (this worker was stalled past its lease): stop asking for it.
        self._runner.abandon(in_flight - renewed)

    async def on_give_up(self, error: LoopGaveUpError) -> None:
        self._runner.abandon(self._runner.executing())


def _claimable() -> ColumnElement[bool]:
    """Never claimed, or claimed by a worker whose lease has ended."""
    return or_(
        QuestionRun.status == RunStatus.PENDING,
        and_(QuestionRun.status == RunStatus.RUNNING, not_(in_flight())),
    )


def _batch_is_live(batch_id: object, *, claiming: bool) -> Exists:
    """Runs are claimed only while their batch runs and nobody asked to cancel it; a run
    in flight is stored while the batch runs (a cancel waits for it)."""
    conditions = [EvaluationBatch.id == batch_id, EvaluationBatch.status == BatchStatus.RUNNING]
    if claiming:
        conditions.append(EvaluationBatch.cancel_requested_at.is_(None))
    return select(EvaluationBatch.id).where(*conditions).exists()


def _held(worker_id: object, batch_id: object) -> ColumnElement[bool]:
    """A run this worker still holds, while its batch runs (values or bound parameters)."""
    return and_(
        QuestionRun.status == RunStatus.RUNNING,
        QuestionRun.claimed_by == worker_id,
        _batch_is_live(batch_id, claiming=False),
    )


def _still_ours(
    run_ids: list[uuid.UUID] | BindParameter[Any], worker_id: object, batch_id: object
) -> ColumnElement[bool]:
    """Those of `run_ids` this worker still holds (`_held`)."""
    return and_(QuestionRun.id.in_(run_ids), _held(worker_id, batch_id))


# The statements the matrix runs over and over, built once with bound parameters (`m_…`):
# built at each call they cost more CPU than a zero-latency engine's answer.
_BATCH = bindparam("m_batch_id", type_=Uuid)
_WORKER = bindparam("m_worker_id", type_=String)


def _claim_statement() -> Any:
    """Up to `m_count` claimable runs of an engine, claimed in one UPDATE … RETURNING."""
    claimable = _claimable()
    candidates = (
        select(QuestionRun.id)
        .where(
            QuestionRun.batch_id == _BATCH,
            QuestionRun.engine_id == bindparam("m_engine_id", type_=String),
            claimable,
        )
        .order_by(QuestionRun.created_at, QuestionRun.id)
        .limit(bindparam("m_count", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        update(QuestionRun)
        .where(QuestionRun.id.in_(candidates), claimable, _batch_is_live(_BATCH, claiming=True))
        .values(
            status=RunStatus.RUNNING,
            claimed_by=_WORKER,
            lease_expires_at=db_now(bindparam("m_lease_seconds", type_=Float)),
            attempts=QuestionRun.attempts + 1,
            started_at=func.coalesce(QuestionRun.started_at, bindparam("m_now", type_=UTCDateTime)),
        )
        .returning(
            QuestionRun.id,
            QuestionRun.question_text,
            QuestionRun.engine_id,
            QuestionRun.location,
            QuestionRun.cost,
            QuestionRun.sample,
            QuestionRun.attempts,
        )
    )


def _state_statement() -> Select[str, int, int, int, datetime | None]:
    """`MatrixRunner._state`'s query: per engine, the runs claimable, unfinished and held by
    another worker, and the batch's cancel request."""
    unfinished = QuestionRun.status.in_([RunStatus.PENDING, RunStatus.RUNNING])
    held_elsewhere = and_(in_flight(), QuestionRun.claimed_by != _WORKER)
    cancelling = (
        select(EvaluationBatch.cancel_requested_at)
        .where(EvaluationBatch.id == _BATCH)
        .scalar_subquery()
    )
    return (
        select(
            QuestionRun.engine_id,
            func.count().filter(_claimable(), _batch_is_live(_BATCH, claiming=True)),
            func.count().filter(unfinished),
            func.count().filter(held_elsewhere),
            cancelling,
        )
        .where(QuestionRun.batch_id == _BATCH)
        .group_by(QuestionRun.engine_id)
        .order_by(QuestionRun.engine_id)
    )


_CLAIM = _claim_statement()
_STATE = _state_statement()
# A group's runs still this worker's, locked before anything of them is written.
_STILL_OURS = (
    select(QuestionRun.id)
    .where(_still_ours(bindparam("m_run_ids", expanding=True), _WORKER, _BATCH))
    .with_for_update(of=QuestionRun)
)
_STORE_RUN = update(table_of(QuestionRun)).where(table_of(QuestionRun).c.id == bindparam("run_id"))


@functools.cache
def _store_results(run_columns: tuple[str, ...]) -> Select[uuid.UUID]:
    """Postgres's write of a group of results, for runs whose values have `run_columns`."""
    return store_results_statement(run_columns, _held(_WORKER, _BATCH))


def _with_retries(calls: int) -> ColumnElement[int]:
    """`attempts` counts engine calls: the claim counted the first of this claim's `calls`."""
    return QuestionRun.attempts + (calls - 1)


@dataclass(frozen=True, slots=True)
class ResultRows:
    """What one answer adds beside its run: its mention row, competitor and citation rows, as
    column values (inserted many at a time, not as ORM objects, which cost more to build and
    flush than the answer's extraction)."""

    mention: dict[str, object]
    competitors: list[dict[str, object]]
    citations: list[dict[str, object]]


async def insert_result_rows(session: AsyncSession, results: Iterable[ResultRows]) -> None:
    """One INSERT of many rows for each table, in the caller's transaction."""
    results = list(results)
    connection = await session.connection()
    for statement, rows in (
        (_INSERT_MENTIONS, [r.mention for r in results]),
        (_INSERT_COMPETITORS, [row for r in results for row in r.competitors]),
        (_INSERT_CITATIONS, [row for r in results for row in r.citations]),
    ):
        if rows:
            await connection.execute(statement, rows)


_INSERT_MENTIONS = insert(table_of(RunMention))
_INSERT_COMPETITORS = insert(table_of(RunCompetitor))
_INSERT_CITATIONS = insert(table_of(RunCitation))


def result_rows(
    run_id: uuid.UUID,
    extraction: Extraction,
    outcome: AnalysisOutcome | None,
    subject: Subject,
) -> ResultRows:
    analysis = outcome.analysis if outcome is not None else None
    sentiment, negated = judged_mention(extraction.mentioned, analysis)
    return ResultRows(
        mention={
            "run_id": run_id,
            "mentioned": extraction.mentioned,
            "mention_count": extraction.mention_count,
            "first_position": extraction.first_offset,
            "list_position": extraction.list_position,
            "snippet": extraction.snippet,
            "org_cited": extraction.org_cited,
            "sentiment": sentiment,
            "negated": negated,
        },
        competitors=[
            {
                "run_id": run_id,
                "name": competitor.name,
                "mention_count": competitor.mention_count,
                "list_position": competitor.list_position,
                "first_position": competitor.first_offset,
                "source": competitor.source,
            }
            for competitor in named_competitors(
                extraction.document, extraction.competitors, analysis
            )
        ],
        citations=[
            {
                "run_id": run_id,
                "url": citation.url,
                "domain": citation.domain,
                "title": citation.title,
                "rank": citation.rank,
                "source": citation.source,
                "is_org_domain": citation.domain in subject.own_domains,
            }
            for citation in extraction.citations
        ],
    )
