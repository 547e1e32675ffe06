"""Evaluation history written straight to the database for reports, tests and benchmarks:
completed batches of answers, summarised by the code that ends a real batch (`store_summary`),
a day at a time."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy import select

from app.context import AppContext
from app.db.models import (
    BatchStatus,
    EvaluationBatch,
    Org,
    OrgEngine,
    OrgLocation,
    OrgQuestion,
    QuestionRun,
    RunCitation,
    RunCompetitor,
    RunMention,
    RunStatus,
)
from app.evaluations.summaries import store_summary

AnswerText = Callable[[str, str, bool], str]  # org name, competitor, mentioned → answer


def plain_answer(org: str, competitor: str, mentioned: bool) -> str:
    named = f"1. {org} — a solid choice\n2. {competitor}\n" if mentioned else f"1. {competitor}\n"
    return f"Here are some options:\n{named}See https://reviews.example.com/top for more."


async def seed_history(
    context: AppContext,
    org_id: str,
    days: list[date],
    *,
    rate: Callable[[date], float] = lambda _day: 0.5,
    simulated: bool = False,
    answer: AnswerText = plain_answer,
    seed: int = 1,
) -> None:
    """One completed batch a day over the org's questions × engines × countries, each cell
    asked once: the org mentioned at the day's rate (each question with its own lean), one
    tracked competitor named in every answer, a citation of the org's domain in some."""
    rng = random.Random(seed)
    async with context.sessions() as session:
        org = await session.get_one(Org, uuid.UUID(org_id))
        questions = list(
            await session.scalars(select(OrgQuestion).where(OrgQuestion.org_id == org.id))
        )
        engines = list(
            await session.scalars(select(OrgEngine.engine_id).where(OrgEngine.org_id == org.id))
        )
        locations = list(
            await session.scalars(select(OrgLocation.country).where(OrgLocation.org_id == org.id))
        )
        lean = {q.id: rng.uniform(-0.2, 0.2) for q in questions}
        own_domain = org.domains[0] if org.domains else "example.org"
        for day in days:
            at = datetime.combine(day, time(9), UTC)
            batch = EvaluationBatch(
                org_id=org.id,
                batch_date=day,
                status=BatchStatus.COMPLETED,
                price_per_run=Decimal("0.05"),
                created_at=at,
                started_at=at,
                completed_at=at + timedelta(minutes=5),
            )
            session.add(batch)
            await session.flush()
            for question in questions:
                for engine in engines:
                    for location in locations:
                        competitor = org.competitors[rng.randrange(len(org.competitors))]
                        shown = rng.random() < min(1.0, max(0.0, rate(day) + lean[question.id]))
                        cited = shown and rng.random() < 0.5
                        run = QuestionRun(
                            id=uuid.uuid4(),
                            batch_id=batch.id,
                            question_id=question.id,
                            question_text=question.text,
                            engine_id=engine,
                            location=location,
                            sample=1,
                            status=RunStatus.COMPLETED,
                            attempts=1,
                            answer_text=answer(org.name, competitor, shown),
                            model="simulated-1" if simulated else f"{engine}-model",
                            simulated=simulated,
                            surface="api",
                            searched=True,
                            surface_present=True,
                            extraction_version=1,
                            completed_at=at,
                            charged_at=at,
                        )
                        session.add(run)
                        session.add(
                            RunMention(
                                run_id=run.id,
                                mentioned=shown,
                                mention_count=int(shown),
                                first_position=0 if shown else None,
                                list_position=1 if shown else None,
                                sentiment="positive" if shown else None,
                                snippet=None,
                                org_cited=cited,
                            )
                        )
                        session.add(
                            RunCompetitor(
                                run_id=run.id,
                                name=competitor,
                                mention_count=1,
                                list_position=2 if shown else 1,
                                first_position=10,
                            )
                        )
                        urls = [("https://reviews.example.com/top", "reviews.example.com")]
                        if cited:
                            urls.append((f"https://{own_domain}/", own_domain))
                        for rank, (url, domain) in enumerate(urls, start=1):
                            session.add(
                                RunCitation(
                                    run_id=run.id,
                                    url=url,
                                    domain=domain,
                                    title=None,
                                    rank=rank,
                                    source="text",
                                    is_org_domain=domain == own_domain,
                                )
                            )
            await session.flush()
            await store_summary(session, batch, at + timedelta(minutes=5))
        await session.commit()
