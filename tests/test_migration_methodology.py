"""Migration 0006 copies the methodology of every summary already stored beside it, on
Postgres and on SQLite, so trends keep their methodology across the upgrade."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from app.db.migrate import upgrade
from app.db.session import create_engine
from app.db.types import UTCDateTime
from app.settings import Settings
from tests.conftest import POSTGRES_ADMIN_URL, _database_url

METHODOLOGY = {"questions": 3, "countries": ["US"], "extraction_versions": [1]}


@pytest.fixture
async def empty_postgres() -> AsyncIterator[str]:
    name = f"senso_migrate_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield _database_url(name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


NOW = datetime(2026, 12, 1, tzinfo=UTC)
# The tables as revision 0005 left them, as far as these rows need.
PARTNERS = sa.table(
    "partners",
    *(sa.column(c, t) for c, t in (("id", sa.Uuid()), ("name", sa.String()))),
    *(sa.column(c, sa.Numeric()) for c in ("balance", "reserved", "price_per_run")),
    *(sa.column(c, UTCDateTime()) for c in ("created_at", "updated_at")),
)
ORGS = sa.table(
    "orgs",
    *(sa.column(c, sa.Uuid()) for c in ("id", "partner_id")),
    sa.column("name", sa.String()),
    *(sa.column(c, sa.JSON()) for c in ("aliases", "domains", "competitors")),
    sa.column("active", sa.Boolean()),
    sa.column("samples", sa.Integer()),
    *(sa.column(c, UTCDateTime()) for c in ("created_at", "updated_at")),
)
BATCHES = sa.table(
    "evaluation_batches",
    *(sa.column(c, sa.Uuid()) for c in ("id", "org_id")),
    sa.column("batch_date", sa.Date()),
    *(sa.column(c, sa.String()) for c in ("status", "triggered_by")),
    *(
        sa.column(c, sa.Integer())
        for c in (
            "total_runs",
            "cells",
            "samples",
            "max_runs",
            "job_attempts",
            "job_failures",
            "job_redrives",
        )
    ),
    sa.column("summary", sa.JSON()),
    *(sa.column(c, sa.Numeric()) for c in ("price_per_run", "reserved_amount")),
    *(sa.column(c, UTCDateTime()) for c in ("created_at", "updated_at")),
)


async def _upgrade_with_a_summary(url: str) -> list[object]:
    engine = create_engine(Settings(database_url=SecretStr(url)))
    try:
        await upgrade(engine, "0005")
        partner, org = uuid.uuid4(), uuid.uuid4()
        times = {"created_at": NOW, "updated_at": NOW}
        async with engine.begin() as connection:
            await connection.execute(
                PARTNERS.insert().values(
                    id=partner, name="p", balance=1, reserved=0, price_per_run=0.05, **times
                )
            )
            await connection.execute(
                ORGS.insert().values(
                    id=org,
                    partner_id=partner,
                    name="o",
                    aliases=[],
                    domains=[],
                    competitors=[],
                    active=True,
                    samples=1,
                    **times,
                )
            )
            for day, summary in (
                (date(2026, 12, 1), {"simulated": False, "methodology": METHODOLOGY}),
                (date(2026, 12, 2), None),
            ):
                await connection.execute(
                    BATCHES.insert().values(
                        id=uuid.uuid4(),
                        org_id=org,
                        batch_date=day,
                        status="completed",
                        triggered_by="api",
                        total_runs=0,
                        cells=0,
                        samples=1,
                        max_runs=0,
                        job_attempts=0,
                        job_failures=0,
                        job_redrives=0,
                        summary=summary if summary is not None else sa.null(),
                        price_per_run=0.05,
                        reserved_amount=0,
                        **times,
                    )
                )
        await upgrade(engine)
        batches = sa.table(
            "evaluation_batches",
            sa.column("methodology", sa.JSON()),
            sa.column("batch_date", sa.Date()),
        )
        async with engine.connect() as connection:
            rows = await connection.execute(
                sa.select(batches.c.methodology).order_by(batches.c.batch_date)
            )
            return [row[0] for row in rows]
    finally:
        await engine.dispose()


async def test_postgres_keeps_each_stored_methodology(empty_postgres: str) -> None:
    assert await _upgrade_with_a_summary(empty_postgres) == [METHODOLOGY, None]


async def test_sqlite_keeps_each_stored_methodology(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path}/senso.db"
    assert await _upgrade_with_a_summary(url) == [METHODOLOGY, None]
