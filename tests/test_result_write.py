"""A group of completed runs is written only where each run is still the writer's, with every
value as the run's columns keep it — on Postgres (one statement) and on SQLite alike."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import select, update

from app.context import AppContext
from app.db.models import (
    BatchStatus,
    EvaluationBatch,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
    RunStatus,
)
from app.evaluations.matrix import ResultRows, ResultWriter
from tests.conftest import make_settings, operator_client
from tests.factories import create_org, create_partner, trigger

COMPLETED_AT = datetime(2026, 12, 7, 8, 30, 15, 123456, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Triggered:
    context: AppContext
    batch_id: uuid.UUID


@pytest.fixture(params=["postgres", "sqlite"])
async def triggered(
    request: pytest.FixtureRequest,
    postgres_url: str,
    sqlite_url: str,
    queue_url: str,
    sqs_endpoint: str,
) -> AsyncIterator[Triggered]:
    """A batch triggered through the API, on Postgres and on SQLite."""
    url = postgres_url if request.param == "postgres" else sqlite_url
    settings = make_settings(url, queue_url, sqs_endpoint, redis_url=None)
    async with (
        AppContext.create(settings) as context,
        operator_client(settings, context) as api,
    ):
        partner_id = await create_partner(api, balance="10.00")
        setup = await create_org(api, partner_id)
        yield Triggered(context, uuid.UUID(await trigger(api, setup.org_id)))


async def _claimed_runs(
    context: AppContext, batch_id: uuid.UUID, holders: list[str]
) -> list[uuid.UUID]:
    """The batch running, and one of its runs claimed by each of `holders`."""
    async with context.sessions() as session:
        run_ids = list(
            await session.scalars(
                select(QuestionRun.id)
                .where(QuestionRun.batch_id == batch_id)
                .order_by(QuestionRun.id)
                .limit(len(holders))
            )
        )
        await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == batch_id)
            .values(status=BatchStatus.RUNNING)
        )
        for run_id, holder in zip(run_ids, holders, strict=True):
            await session.execute(
                update(QuestionRun)
                .where(QuestionRun.id == run_id)
                .values(status=RunStatus.RUNNING, claimed_by=holder, attempts=1)
            )
        await session.commit()
    return run_ids


def _values(n: int) -> dict[str, object]:
    return {
        "status": RunStatus.COMPLETED,
        "answer_text": f'Answer {n}: Acme — «naïve» "quoted" \\ text\nsecond line',
        "model": "gpt-test",
        "raw_response": {"id": f"resp-{n}", "nested": {"list": [1, 2.5, None, "x"]}},
        "input_tokens": 10 + n,
        "output_tokens": None,
        # Seven places: kept to six as the column's type rounds it.
        "cost": Decimal("0.0012345"),
        "attempts": 2,
        "latency_ms": 42,
        "simulated": False,
        "analysed": True,
        "extraction_version": 3,
        "surface": "api",
        "searched": None,
        "search_queries": ["best crm", "crm tools"] if n else None,
        "surface_present": True,
        "error": None,
        "completed_at": COMPLETED_AT,
        "lease_expires_at": None,
    }


def _rows(run_id: uuid.UUID) -> ResultRows:
    return ResultRows(
        mention={
            "run_id": run_id,
            "mentioned": True,
            "mention_count": 2,
            "first_position": 7,
            "list_position": None,
            "snippet": "Acme leads — «quoted»",
            "org_cited": False,
            "sentiment": "positive",
            "negated": False,
        },
        competitors=[
            {
                "run_id": run_id,
                "name": name,
                "mention_count": 1,
                "list_position": position,
                "first_position": 30 + position,
                "source": "tracked",
            }
            for position, name in enumerate(["Globex", "Initech"], start=1)
        ],
        citations=[
            {
                "run_id": run_id,
                "url": "https://example.com/a?b=c&d=é",
                "domain": "example.com",
                "title": None,
                "rank": 1,
                "source": "api",
                "is_org_domain": True,
            }
        ],
    )


async def test_a_group_stores_only_the_runs_still_the_writers_with_their_exact_values(
    triggered: Triggered,
) -> None:
    context, batch_id = triggered.context, triggered.batch_id
    mine, also_mine, taken = await _claimed_runs(
        context, batch_id, ["worker-a", "worker-a", "worker-b"]
    )
    writer = ResultWriter(context, batch_id, "worker-a")

    stored = await asyncio.gather(
        writer.store(mine, _values(0), _rows(mine)),
        writer.store(also_mine, _values(1), None),
        writer.store(taken, _values(2), _rows(taken)),
    )

    assert list(stored) == [True, True, False]
    async with context.sessions() as session:
        runs = {
            run.id: run
            for run in await session.scalars(
                select(QuestionRun).where(QuestionRun.id.in_([mine, also_mine, taken]))
            )
        }
        mentions = list(await session.scalars(select(RunMention)))
        competitors = list(
            await session.scalars(select(RunCompetitor).order_by(RunCompetitor.name))
        )
        citations = list(await session.scalars(select(RunCitation)))
    for run_id, n in ((mine, 0), (also_mine, 1)):
        run, values = runs[run_id], _values(n)
        assert run.status == RunStatus.COMPLETED
        assert run.answer_text == values["answer_text"]
        assert run.raw_response == values["raw_response"]
        assert run.cost == Decimal("0.001234")
        assert run.completed_at == COMPLETED_AT
        assert run.search_queries == values["search_queries"]
        assert (run.input_tokens, run.output_tokens, run.attempts) == (10 + n, None, 2)
        assert (run.analysed, run.searched, run.extraction_version) == (True, None, 3)
        assert run.lease_expires_at is None
        assert run.error is None
    assert runs[taken].status == RunStatus.RUNNING
    assert runs[taken].answer_text is None

    # Rows only for the run still the writer's that had any.
    assert [m.run_id for m in mentions] == [mine]
    mention = mentions[0]
    assert (mention.mention_count, mention.first_position, mention.list_position) == (
        2,
        7,
        None,
    )
    assert (mention.snippet, mention.sentiment) == ("Acme leads — «quoted»", "positive")
    assert [(c.run_id, c.name, c.list_position) for c in competitors] == [
        (mine, "Globex", 1),
        (mine, "Initech", 2),
    ]
    assert [(c.run_id, c.url, c.title, c.is_org_domain) for c in citations] == [
        (mine, "https://example.com/a?b=c&d=é", None, True)
    ]
    assert len({m.id for m in mentions} | {c.id for c in competitors}) == 3


async def test_nothing_is_stored_once_the_batch_no_longer_runs(triggered: Triggered) -> None:
    context, batch_id = triggered.context, triggered.batch_id
    (run_id,) = await _claimed_runs(context, batch_id, ["worker-a"])
    async with context.sessions() as session:
        await session.execute(
            update(EvaluationBatch)
            .where(EvaluationBatch.id == batch_id)
            .values(status=BatchStatus.FAILED)
        )
        await session.commit()

    stored = await ResultWriter(context, batch_id, "worker-a").store(
        run_id, _values(0), _rows(run_id)
    )

    assert stored is False
    async with context.sessions() as session:
        assert await session.scalar(select(QuestionRun.status).where(QuestionRun.id == run_id)) == (
            RunStatus.RUNNING
        )
        assert list(await session.scalars(select(RunMention.id))) == []
