"""The test databases' pool (the one the other tests' databases come from): a reused database
is empty, renamed, and the template's schema."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from tests.conftest import POSTGRES_ADMIN_URL
from tests.databases import DatabasePool


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    yield connection
    await connection.close()


Take = Callable[[], Awaitable[str]]


@pytest.fixture
async def take(databases: DatabasePool, admin: asyncpg.Connection) -> AsyncIterator[Take]:
    """The pool's `take`; a database a failing test did not give back is dropped after it."""
    names: list[str] = []

    async def take_one() -> str:
        names.append(await databases.take())
        return names[-1]

    yield take_one
    for name in names:
        # A database given back lives on under another name: these are gone unless left over.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _names(admin: asyncpg.Connection) -> set[str]:
    rows = await admin.fetch("SELECT datname FROM pg_database")
    return {row[0] for row in rows}


async def _alive(connection: asyncpg.Connection) -> bool:
    try:
        await connection.fetchval("SELECT 1")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        return False
    return True


async def test_a_database_given_back_comes_again_empty_under_a_new_name(
    databases: DatabasePool, admin: asyncpg.Connection, take: Take
) -> None:
    first = await take()
    connection = await asyncpg.connect(databases.url(first))
    partner = await connection.fetchval(
        "INSERT INTO partners (id, name, balance, reserved, price_per_run, created_at,"
        " updated_at) VALUES (gen_random_uuid(), 'p', 1, 0, 0.05, now(), now()) RETURNING id"
    )
    await connection.execute(
        "INSERT INTO orgs (id, partner_id, name, aliases, domains, competitors, active,"
        " created_at, updated_at)"
        " VALUES (gen_random_uuid(), $1, 'o', '[]', '[]', '[]', true, now(), now())",
        partner,
    )
    # Left open: giving the database back ends the test's connections.
    await databases.give_back(first)
    assert connection.is_closed() or not await _alive(connection)
    connection.terminate()

    second = await take()
    assert second != first
    assert first not in await _names(admin)
    reused = await asyncpg.connect(databases.url(second))
    try:
        assert await reused.fetchval("SELECT count(*) FROM partners") == 0
        assert await reused.fetchval("SELECT count(*) FROM orgs") == 0
    finally:
        await reused.close()
    await databases.give_back(second)


async def test_a_database_whose_schema_changed_is_dropped_not_reused(
    databases: DatabasePool, admin: asyncpg.Connection, take: Take
) -> None:
    changed = await take()
    connection = await asyncpg.connect(databases.url(changed))
    await connection.execute("ALTER TABLE partners ADD COLUMN note text")
    await connection.close()
    await databases.give_back(changed)
    # The changed database is gone, and the next one is a new copy of the template.
    assert changed not in await _names(admin)
    fresh = await take()
    connection = await asyncpg.connect(databases.url(fresh))
    try:
        columns = await connection.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'partners' AND column_name = 'note'"
        )
        assert columns == []
    finally:
        await connection.close()
    await databases.give_back(fresh)
