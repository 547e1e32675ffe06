"""The database, not only the code, enforces the contract's unique keys — on both dialects."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import SecretStr
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.migrate import alembic_config
from app.db.models import (
    Base,
    EvaluationBatch,
    Org,
    OrgQuestion,
    Partner,
    QuestionRun,
    UsageLedgerEntry,
)
from app.db.session import create_engine, create_session_factory
from app.settings import Settings


@pytest.fixture(params=["postgres", "sqlite"])
async def session(
    request: pytest.FixtureRequest, postgres_url: str, sqlite_url: str
) -> AsyncIterator[AsyncSession]:
    url = postgres_url if request.param == "postgres" else sqlite_url
    engine = create_engine(Settings(database_url=SecretStr(url)))
    async with create_session_factory(engine)() as session:
        yield session
    await engine.dispose()


async def _batch_with_run(session: AsyncSession) -> tuple[Partner, QuestionRun]:
    partner = Partner(name="p", balance=Decimal("1.1"), price_per_run=Decimal("0.2"))
    session.add(partner)
    await session.flush()
    org = Org(partner_id=partner.id, name="Acme", aliases=[], domains=[], competitors=[])
    session.add(org)
    await session.flush()
    question = OrgQuestion(org_id=org.id, text="Best CRM?")
    batch = EvaluationBatch(
        org_id=org.id, batch_date=date(2026, 11, 23), total_runs=1, price_per_run=Decimal("0.2")
    )
    session.add_all([question, batch])
    await session.flush()
    run = QuestionRun(
        batch_id=batch.id,
        question_id=question.id,
        question_text=question.text,
        engine_id="openai",
        location="US",
    )
    session.add(run)
    await session.commit()
    return partner, run


async def test_one_batch_per_org_and_day(session: AsyncSession) -> None:
    _, run = await _batch_with_run(session)
    batch = await session.get_one(EvaluationBatch, run.batch_id)
    session.add(
        EvaluationBatch(
            org_id=batch.org_id,
            batch_date=batch.batch_date,
            total_runs=1,
            price_per_run=Decimal("0.2"),
        )
    )
    with pytest.raises(IntegrityError):
        await session.commit()


async def test_one_run_per_question_engine_location(session: AsyncSession) -> None:
    _, run = await _batch_with_run(session)
    session.add(
        QuestionRun(
            batch_id=run.batch_id,
            question_id=run.question_id,
            question_text=run.question_text,
            engine_id=run.engine_id,
            location=run.location,
        )
    )
    with pytest.raises(IntegrityError):
        await session.commit()


async def test_one_ledger_row_per_run(session: AsyncSession) -> None:
    partner, run = await _batch_with_run(session)
    entry = {"batch_id": run.batch_id, "partner_id": partner.id, "amount": Decimal("0.2")}
    session.add(UsageLedgerEntry(question_run_id=run.id, **entry))
    await session.commit()
    session.add(UsageLedgerEntry(question_run_id=run.id, **entry))
    with pytest.raises(IntegrityError):
        await session.commit()


async def test_money_is_exact_and_times_are_utc(session: AsyncSession) -> None:
    partner, _ = await _batch_with_run(session)
    for _ in range(3):
        partner.balance = partner.balance - partner.price_per_run
    await session.commit()
    fresh = await session.get_one(Partner, partner.id, populate_existing=True)
    assert fresh.balance == Decimal("0.5")
    assert str(fresh.balance) == "0.500000"
    assert fresh.created_at.tzinfo is not None
    assert fresh.created_at.utcoffset() == datetime.now(UTC).utcoffset()


async def test_naive_timestamps_are_refused(session: AsyncSession) -> None:
    partner, _ = await _batch_with_run(session)
    partner.updated_at = datetime(2026, 1, 1)
    with pytest.raises(Exception, match="naive datetime"):
        await session.commit()


async def test_migrations_reach_the_head_revision(session: AsyncSession) -> None:
    version = await session.scalar(text("SELECT version_num FROM alembic_version"))
    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


# SQLAlchemy's own reflection of a check constraint passes its `dialect_options` back as a
# keyword no dialect claims, and warns about it; nothing of ours is involved.
@pytest.mark.filterwarnings(
    "ignore:Can't validate argument 'dialect_options':sqlalchemy.exc.SAWarning"
)
async def test_migrations_build_the_schema_the_models_declare(session: AsyncSession) -> None:
    """Every table, column, index and unique key a model declares is what the migrations made."""

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": False, "compare_server_default": False}
        )
        return [
            diff
            for diff in compare_metadata(context, Base.metadata)
            # SQLite reflects no names for some foreign keys; the columns they cover still match.
            if not (isinstance(diff, tuple) and diff[0] in {"add_fk", "remove_fk"})
        ]

    connection = await session.connection()
    assert await connection.run_sync(differences) == []
