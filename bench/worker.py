"""Worker CPU and Postgres round trips per run, with a zero-latency engine.

Batches are triggered through the real API, then each is run by the worker's pipeline
(`evaluate_org`, what the worker does with a job) on Postgres, with the simulated engines
answering at once. The baseline is the pure per-answer work of the same runs, measured in the
same run: the engine's answer, extraction and analysis, with no database, taken after each of
ROUNDS rounds of measuring. One batch of each shape is run again under cProfile, whose top
entries are printed, and a few more 4-run batches for where such a batch's CPU goes, step by
step. Beside the CPU the ×2 goal leaves a 4-run batch for what it does around its answers, a
note gives what part of that work costs measured apart: its summary and cells stored again
(rolled back, as completion stores them) and one statement through a session.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import math
import os
import pstats
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from app.analysis.merge import analyse
from app.analysis.reading import read_answer
from app.context import AppContext
from app.db.models import CellMetric, EvaluationBatch, Org, QuestionRun
from app.engines.base import EngineRequest
from app.evaluations.matrix import Subject
from app.evaluations.pipeline import evaluate_org, load_subject
from app.evaluations.summaries import store_summary
from app.extraction import OrgProfile, extract
from app.jobs import JobControl
from app.queue.messages import EvaluateOrg
from app.queue.provision import create_queue_with_dlq
from bench.common import (
    Figure,
    Matrix,
    RoundTrips,
    api_client,
    bench_settings,
    counting_round_trips,
    create_orgs,
    report,
    scratch_database,
)
from devtools.embedded import moto_sqs_server

SMALL = Matrix(questions=2, engines=("openai", "anthropic"), locations=("US",))
LARGE = Matrix(
    questions=5,
    engines=("openai", "anthropic", "gemini", "perplexity", "linkup"),
    locations=("US", "GB", "DE", "FR"),
)
PROFILE_ENTRIES = 12
STEP_ENTRIES = 16  # down to the claims and the subject
# Batches of 4 runs profiled for where their CPU goes, by the default run and by --quick: one
# batch's cumulative times vary with the machine's hiccups.
PROFILED_SMALL = {False: 10, True: 3}
ROUNDS = 4  # of measuring, each followed by its own baseline
# A stretch of answer with what the rules look for (the org, a competitor, a negation, a list,
# a link), repeated into a short answer and a long one (a scraped page): per KB, the long one
# must cost what the short one does.
_STRETCH = (
    "Acme Analytics is a solid choice for product teams; Mixpanel is close. I'm not aware of "
    "Acme's pricing. See https://acme.io/pricing for details.\n\n- Acme Analytics\n- Mixpanel\n"
    "- Heap\n\n"
)
_SHORT = 20  # stretches: about 3.6 KB
_LONG = {False: 4000, True: 1000}  # about 730 KB (180 KB with --quick)


@dataclass(frozen=True, slots=True)
class Triggered:
    org_id: uuid.UUID
    batch_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class Measured:
    runs: int
    cpu_seconds: float
    trips: RoundTrips
    batches: int

    def __add__(self, other: Measured) -> Measured:
        return Measured(
            self.runs + other.runs,
            self.cpu_seconds + other.cpu_seconds,
            self.trips + other.trips,
            self.batches + other.batches,
        )


@dataclass(frozen=True, slots=True)
class Pure:
    """CPU seconds of answering, extracting and analysing `answers` answers, nothing stored."""

    cpu_seconds: float = 0.0
    answers: int = 0

    def __add__(self, other: Pure) -> Pure:
        return Pure(self.cpu_seconds + other.cpu_seconds, self.answers + other.answers)

    @property
    def ms_per_answer(self) -> float:
        return self.cpu_seconds / max(self.answers, 1) * 1000


@contextlib.asynccontextmanager
async def triggered_batches(
    shapes: list[tuple[Matrix, int]], **overrides: Any
) -> AsyncIterator[tuple[AppContext, dict[Matrix, list[Triggered]]]]:
    """Batches of each (matrix, count) triggered through the API; a worker's context.
    `overrides` are settings of both."""
    async with scratch_database() as url:
        with moto_sqs_server() as endpoint:
            base = bench_settings(url, aws_endpoint_url=endpoint, **overrides)
            queue_url = create_queue_with_dlq(
                base, f"bench-{uuid.uuid4().hex[:8]}", max_receive_count=5
            )
            settings = base.model_copy(update={"sqs_queue_url": queue_url})
            triggered: dict[Matrix, list[Triggered]] = {}
            async with api_client(settings) as api:
                for matrix, count in shapes:
                    orgs = await create_orgs(api, count, matrix)
                    triggered[matrix] = []
                    for org_id in orgs:
                        response = await api.post(f"/orgs/{org_id}/evaluations", json={})
                        response.raise_for_status()
                        batch_id = uuid.UUID(response.json()["batch_id"])
                        triggered[matrix].append(Triggered(uuid.UUID(org_id), batch_id))
            # The jobs the API sent are not received: the pipeline is run directly below.
            worker_settings = settings.model_copy(update={"sqs_queue_url": None})
            async with AppContext.create(worker_settings) as context:
                yield context, triggered


async def run_batches(context: AppContext, batches: list[Triggered]) -> Measured:
    control = JobControl(worker_id=f"bench-{uuid.uuid4().hex[:6]}", stopping=asyncio.Event())
    started = time.process_time()
    with counting_round_trips(context.db) as trips:
        for batch in batches:
            job = EvaluateOrg(org_id=batch.org_id, batch_id=batch.batch_id, reason="bench")
            await evaluate_org(context, job, control)
    cpu = time.process_time() - started
    runs = await _completed_runs(context, batches)
    return Measured(runs, cpu, trips, len(batches))


async def _completed_runs(context: AppContext, batches: list[Triggered]) -> int:
    async with context.sessions() as session:
        statuses = await session.scalars(
            select(QuestionRun.status).where(
                QuestionRun.batch_id.in_([b.batch_id for b in batches])
            )
        )
        return sum(1 for status in statuses if status == "completed")


async def measure_in_rounds(
    context: AppContext, batches: list[Triggered], repeat: int
) -> tuple[Measured, Pure]:
    """The worker's CPU over `batches`, and its baseline: the same runs' answers answered,
    extracted and analysed again `repeat` times with nothing stored (one batch's own took 1.72
    to 2.01 ms an answer from one batch to the next). In ROUNDS rounds, each followed by its
    baseline: the machine's speed drifts from one minute to the next (ten million additions
    took 0.99 to 1.76 s on one idle machine)."""
    size = math.ceil(len(batches) / ROUNDS)
    measured, pure = Measured(0, 0.0, RoundTrips(), 0), Pure()
    for at in range(0, len(batches), size):
        part = batches[at : at + size]
        measured += await run_batches(context, part)
        pure += await _pure(context, part, repeat)
    return measured, pure


async def _pure(context: AppContext, batches: list[Triggered], repeat: int) -> Pure:
    asks: list[tuple[Subject, str, str, str, int]] = []
    for batch in batches:
        async with context.sessions() as session:
            org = await session.get_one(Org, batch.org_id)
            runs = (
                await session.execute(
                    select(
                        QuestionRun.question_text,
                        QuestionRun.engine_id,
                        QuestionRun.location,
                        QuestionRun.sample,
                    ).where(QuestionRun.batch_id == batch.batch_id)
                )
            ).all()
        subject = await load_subject(context, org)
        asks.extend((subject, q, engine, where, n) for q, engine, where, n in runs)
    started = time.process_time()
    for _ in range(repeat):
        for subject, question, engine_id, location, sample in asks:
            engine = context.engines.get(engine_id)
            request = EngineRequest(question, location, subject.brand, 1, sample=sample)
            answer = await engine.ask(request)
            extract(
                subject.profile,
                answer.text,
                [(c.url, c.title) for c in answer.citations],
                subject.variations,
                subject.brand.competitors,
            )
            await analyse(
                context.analyst, question, answer.text, subject.brand, subject.other_names
            )
    return Pure(time.process_time() - started, repeat * len(asks))


@dataclass(frozen=True, slots=True)
class FixedWork:
    """CPU milliseconds of part of what a batch does around its answers, measured apart: its
    summary and cells stored (as completion stores them), and one statement through a
    session."""

    summary_ms: float
    statement_ms: float


async def fixed_work(context: AppContext, batches: list[Triggered]) -> FixedWork:
    """The summaries of `batches` (completed) stored again, each rolled back, and as many
    primary-key SELECTs of the batch through a session, by the process's CPU."""
    summary = statement = 0.0
    for triggered in batches:
        async with context.sessions() as session:
            batch = await session.get_one(EvaluationBatch, triggered.batch_id)
            org = await session.get_one(Org, triggered.org_id)
            assert batch.completed_at is not None
            # In the transaction the reads above began, as a batch's statements run.
            started = time.process_time()
            await session.execute(
                select(EvaluationBatch.status).where(EvaluationBatch.id == batch.id)
            )
            statement += time.process_time() - started
            # As completion finds it: no cells yet, never summarised.
            await session.execute(delete(CellMetric).where(CellMetric.batch_id == batch.id))
            batch.summarised_at = None
            started = time.process_time()
            await store_summary(session, batch, batch.completed_at, org)
            summary += time.process_time() - started
            await session.rollback()
    count = max(len(batches), 1)
    return FixedWork(summary / count * 1000, statement / count * 1000)


def _ms_per_kb(stretches: int, repeat: int) -> float:
    """CPU milliseconds per KB of answer of the deterministic rules (extraction, then the
    reading the simulated analyst does) on an answer of `stretches` stretches."""
    text = _STRETCH * stretches
    org = OrgProfile(name="Acme Analytics", aliases=("Acme",), domains=("acme.io",))
    started = time.process_time()
    for _ in range(repeat):
        extract(org, text, (), (), ("Mixpanel",))
        read_answer(text, ("Acme Analytics", "Acme"), ("Mixpanel",))
    return (time.process_time() - started) / repeat / (len(text) / 1000) * 1000


# cProfile's clock is the wall's (the process's CPU clock costs so much a call that it skews
# the profile toward the functions called most): the event loop's waits, on Postgres among
# others, are the time this built-in spends.
_WAITING = ("~", 0, "<method 'poll' of 'select.epoll' objects>")


def _profile_top(profile: cProfile.Profile) -> list[str]:
    """The functions that spent the most time themselves (tottime): where the time goes."""
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(PROFILE_ENTRIES)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return [
        "profile of one batch of each shape (top functions by own time; the event loop's "
        "waits are epoll's poll):",
        *[_shorten(line) for line in lines[header : header + PROFILE_ENTRIES + 1]],
    ]


def _steps_of_small(profile: cProfile.Profile, batches: int) -> list[str]:
    """Where a 4-run batch's CPU goes: the pipeline's steps (`app/evaluations/`) by the CPU
    spent in them and in what they called (cumtime), per batch and as a share of the batch's
    time under the profiler, its waits left out. The answers' own work (engine, extraction,
    analysis) is inside `_execute`; what the batch does around it shows beside
    (`complete_batch`, `store_summary`, the claims, the subject)."""
    stats = pstats.Stats(profile)
    every = stats.stats  # type: ignore[attr-defined]  # typeshed leaves it out
    waiting = every[_WAITING][2] if _WAITING in every else 0.0
    whole = stats.total_tt - waiting  # type: ignore[attr-defined]
    pipeline = f"{os.getcwd()}/app/evaluations/"
    steps = sorted(
        (
            (cumulative, _shorten(f"{path}:{line}({name})"))
            for (path, line, name), (_, _, _, cumulative, _) in every.items()
            if path.startswith(pipeline)
        ),
        reverse=True,
    )[:STEP_ENTRIES]
    return [
        f"where a batch of {SMALL.runs} runs spends its CPU ({batches} batches under cProfile, "
        f"{whole / batches * 1000:.1f} ms a batch there, waits left out; the pipeline's steps "
        "by CPU spent in them and in what they call):",
        *[
            f"  {cumulative / batches * 1000:7.2f} ms  {cumulative / whole:6.1%}  {where}"
            for cumulative, where in steps
        ],
    ]


def _shorten(line: str) -> str:
    """Paths inside site-packages or the checkout, not the machine's."""
    line = re.sub(r"\S*/site-packages/", "", line)
    return line.replace(f"{os.getcwd()}/", "")


async def scenario(quick: bool) -> None:
    small_count = 8 if quick else 40
    large_count = 2 if quick else 4
    profiled = PROFILED_SMALL[quick]
    shapes = [(SMALL, small_count + 2 + profiled), (LARGE, large_count + 1)]
    async with triggered_batches(shapes) as (context, triggered):
        small, large = triggered[SMALL], triggered[LARGE]
        # The first batch of each shape warms caches (prepared statements, imports) up.
        await run_batches(context, small[:1])
        measured_small, pure_small = await measure_in_rounds(
            context, small[1 : small_count + 1], repeat=3
        )
        measured_large, pure_large = await measure_in_rounds(context, large[:-1], repeat=1)
        pure_ms = {SMALL: pure_small.ms_per_answer, LARGE: pure_large.ms_per_answer}
        profile = cProfile.Profile()
        profile.enable()
        await run_batches(context, small[small_count + 1 : small_count + 2])
        await run_batches(context, large[-1:])
        profile.disable()
        small_profile = cProfile.Profile()
        small_profile.enable()
        await run_batches(context, small[-profiled:])
        small_profile.disable()
        fixed = await fixed_work(context, small[1 : small_count + 1])
    figures: list[Figure] = []
    notes: list[str] = []
    for matrix, measured in ((SMALL, measured_small), (LARGE, measured_large)):
        label = f"batches of {matrix.runs} runs"
        runs = max(measured.runs, 1)
        trips = measured.trips
        figures.append(
            Figure(
                f"worker CPU per run, {label}",
                measured.cpu_seconds / runs * 1000,
                "ms",
                pure_ms[matrix],
                "pure per-answer work",
                "≤ ×2",
            )
        )
        figures.append(
            Figure(
                f"Postgres round trips per run, {label}",
                trips.total / runs,
                "trips",
                6,
                "two transactions of one statement",
                "≤ 6",
            )
        )
        notes.append(
            f"{label}: {measured.runs} runs completed in {measured.batches} batches; per run "
            f"{trips.begins / runs:.2f} BEGIN, {trips.statements / runs:.2f} statements, "
            f"{trips.commits / runs:.2f} COMMIT, {trips.rollbacks / runs:.2f} ROLLBACK, "
            f"{trips.pings / runs:.2f} pings, {trips.checkouts / runs:.2f} checkouts; "
            f"{trips.begins / measured.batches:.1f} transactions per batch"
        )
    short_ms = _ms_per_kb(_SHORT, repeat=5 if quick else 25)
    long_ms = _ms_per_kb(_LONG[quick], repeat=1)
    figures.append(
        Figure(
            f"rules' CPU per KB, a {len(_STRETCH) * _LONG[quick] // 1000} KB answer",
            long_ms,
            "ms",
            short_ms,
            f"a {len(_STRETCH) * _SHORT // 1000} KB answer",
            # Growing with the square of the length would show as the lengths' ratio.
            "≤ ×2",
        )
    )
    statements = measured_small.trips.statements / max(measured_small.batches, 1)
    budget = pure_ms[SMALL] * SMALL.runs
    notes.append(
        f"a batch of {SMALL.runs} runs may spend {budget:.2f} ms beside its answers' pure work "
        f"at ×2; its summary and cells, stored again and rolled back, took {fixed.summary_ms:.2f} "
        f"ms of CPU, and one SELECT through a session {fixed.statement_ms:.2f} ms, of which such "
        f"a batch makes {statements:.0f}"
    )
    report("worker: CPU and round trips per run (zero-latency engine)", figures, notes)
    for line in [*_profile_top(profile), *_steps_of_small(small_profile, profiled)]:
        print(f"  {line}", flush=True)
