"""The Postgres databases of one test process: emptied and reused rather than made for each test.

`CREATE DATABASE … TEMPLATE` copies the template's 8 MB through the WAL: about a quarter of a
second of Postgres's CPU for every test, more than any other part of a test's setup. A database
a test has finished with is emptied instead (the rows of the tables that hold any deleted, the
sequences restarted) and checked against the template's schema; one that differs, or that
cannot be emptied, is dropped and never handed out again. Each test gets its database under a
name of its own, so nothing an earlier test left behind (a process still running, a URL kept)
can reach it.
"""

from __future__ import annotations

import uuid

import asyncpg

# The schema as the catalogue describes it: columns, indexes, constraints and the migration.
_SCHEMA = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
    SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' '
        || coalesce(column_default, '') AS item
    FROM information_schema.columns WHERE table_schema = 'public'
    UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'
    UNION ALL SELECT conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE connamespace = 'public'::regnamespace
    UNION ALL SELECT 'alembic ' || version_num FROM alembic_version
) AS schema
"""
_TABLES = """
SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'
"""
_RESTART_SEQUENCES = """
SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, start_value, false)
FROM pg_sequences WHERE schemaname = 'public'
"""


def database_url(admin_url: str, name: str) -> str:
    """The URL of database `name` on the server at `admin_url`, as asyncpg takes it."""
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class DatabasePool:
    """Databases copied from `template` on the server at `admin_url`, handed out one per test."""

    def __init__(self, admin_url: str, template: str) -> None:
        self._admin_url = admin_url
        self._template = template
        self._free: list[str] = []
        self._schema = ""
        self._tables: list[str] = []
        self._holding = ""
        self._admin: asyncpg.Connection | None = None

    async def open(self) -> None:
        template = await asyncpg.connect(self.url(self._template))
        try:
            self._schema = await template.fetchval(_SCHEMA)
            self._tables = [row[0] for row in await template.fetch(_TABLES)]
        finally:
            # A template anyone is connected to cannot be copied.
            await template.close()
        # Which tables hold rows: the index of each, in one statement.
        self._holding = " UNION ALL ".join(
            f"SELECT {i} WHERE EXISTS (SELECT FROM {_quoted(table)})"  # noqa: S608 - catalogue names
            for i, table in enumerate(self._tables)
        )
        self._admin = await asyncpg.connect(self._admin_url)

    async def close(self) -> None:
        admin = self._connected()
        for name in self._free:
            await admin.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")
        self._free.clear()
        await admin.close()

    async def take(self) -> str:
        """An empty, migrated database under a new name."""
        admin = self._connected()
        name = f"senso_test_{uuid.uuid4().hex[:12]}"
        while self._free:
            free = self._free.pop()
            try:
                await admin.execute(f"ALTER DATABASE {_quoted(free)} RENAME TO {_quoted(name)}")
            except asyncpg.PostgresError:
                await admin.execute(f"DROP DATABASE IF EXISTS {_quoted(free)} WITH (FORCE)")
                continue
            return name
        await admin.execute(f"CREATE DATABASE {_quoted(name)} TEMPLATE {_quoted(self._template)}")
        return name

    async def give_back(self, name: str) -> None:
        """Empty the database a test has finished with for the next one, or drop it."""
        admin = self._connected()
        # Waits (up to 5 s each) until the test's connections are gone.
        await admin.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        spare = f"senso_spare_{uuid.uuid4().hex[:12]}"
        try:
            await admin.execute(f"ALTER DATABASE {_quoted(name)} RENAME TO {_quoted(spare)}")
            if await self._emptied(spare):
                self._free.append(spare)
                return
        except (asyncpg.PostgresError, OSError):
            pass
        for stale in (name, spare):
            await admin.execute(f"DROP DATABASE IF EXISTS {_quoted(stale)} WITH (FORCE)")

    async def _emptied(self, name: str) -> bool:
        connection = await asyncpg.connect(self.url(name), timeout=10)
        try:
            await connection.execute("SET lock_timeout = '5s'")
            holding = [self._tables[row[0]] for row in await connection.fetch(self._holding)]
            if holding:
                # Rows deleted with the foreign keys' triggers off, in any order: a TRUNCATE …
                # CASCADE gives every table it reaches new files, which cost what a copy does.
                deletes = "; ".join(f"DELETE FROM {_quoted(t)}" for t in holding)  # noqa: S608
                await connection.execute(f"SET session_replication_role = replica; {deletes}")
            await connection.execute(_RESTART_SEQUENCES)
            return bool(await connection.fetchval(_SCHEMA) == self._schema)
        finally:
            await connection.close()

    def url(self, name: str) -> str:
        """The database's URL, as asyncpg takes it."""
        return database_url(self._admin_url, name)

    def _connected(self) -> asyncpg.Connection:
        assert self._admin is not None, "open() first"
        return self._admin
