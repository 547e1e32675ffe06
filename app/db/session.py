"""One async engine per process; sessions never expire objects on commit."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection
from sqlalchemy.util import await_only

from app.metrics import DATABASE_PINGS
from app.settings import Settings

SessionFactory = async_sessionmaker[AsyncSession]

# A pooled connection idle longer than this is pinged before use; one in steady use is not.
PING_AFTER_IDLE_SECONDS = 10.0


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.database_url.get_secret_value()
    if settings.is_sqlite:
        # A generous busy timeout makes concurrent writers wait for SQLite's single write lock.
        engine = create_async_engine(url, echo=settings.database_echo, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    statement_timeout = settings.database_statement_timeout_seconds
    connect_timeout = settings.database_connect_timeout_seconds
    engine = create_async_engine(
        url,
        echo=settings.database_echo,
        # Errors and logs never carry the parameters of a statement (answers, names, keys).
        hide_parameters=True,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_timeout=settings.database_pool_timeout_seconds,
        pool_recycle=1800,
        connect_args={
            # A server that accepts the connection but never answers (frozen) must not hang us.
            "timeout": connect_timeout,
            # Client side: a statement the server never answers; server side: one it runs long.
            "command_timeout": statement_timeout,
            "server_settings": {"statement_timeout": str(round(statement_timeout * 1000))},
        },
    )
    pool = engine.sync_engine.pool
    event.listen(pool, "connect", _note_idle_since)
    event.listen(pool, "checkin", _note_idle_since)
    event.listen(pool, "checkout", _pinger(connect_timeout, PING_AFTER_IDLE_SECONDS))
    event.listen(engine.sync_engine, "handle_error", _timeouts_disconnect)
    return engine


# When a pooled connection was last handed back (or made), on the monotonic clock: the pool is
# infrastructure below the injected clock, as SQLAlchemy's own pool_recycle is.
_IDLE_SINCE = "idle_since"


def _note_idle_since(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_IDLE_SINCE] = time.monotonic()


def _pinger(timeout: float, after_idle: float) -> Any:
    """A pooled connection is checked before use, so one left dead by a database restart is
    replaced instead of failing a request. One the server closed is known to the driver
    already; only one that sat idle is pinged (a connection dropped silently, by a NAT or a
    failover): a ping per checkout was a third of a busy worker's round trips. A connection
    in steady use whose server froze fails its statement at the statement timeout, which
    `_timeouts_disconnect` turns into a fresh pool. Unlike `pool_pre_ping`, whose ping waits
    as long as any statement may, this one gives up after the connect timeout: a frozen
    server is known in seconds."""

    def ping(
        dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
    ) -> None:
        connection = dbapi_connection.driver_connection
        if connection.is_closed():
            # The server closed it (a restart, a failover): known without asking, so the pool
            # replaces it at no cost.
            raise DisconnectionError("the server closed the connection")
        idle_since = record.info.get(_IDLE_SINCE)
        if idle_since is not None and time.monotonic() - idle_since < after_idle:
            return
        DATABASE_PINGS.inc()
        try:
            await_only(connection.fetchval("SELECT 1", timeout=timeout))
        except TimeoutError:
            # The server is there but does not answer: a fresh connection would not fare
            # better, so the request fails now. Cut at once (a polite close would wait too).
            connection.terminate()
            raise
        except Exception as exc:
            # Dead (the server restarted): the pool drops it and checks out a fresh one.
            connection.terminate()
            raise DisconnectionError(f"{type(exc).__name__} while pinging") from exc

    return ping


def _timeouts_disconnect(context: ExceptionContext) -> None:
    """A statement the server never answered leaves its connection in an unknown state (the
    server may be frozen, or gone): it is discarded, with every connection pooled before it,
    instead of being handed to the next request unpinged."""
    if isinstance(context.original_exception, OSError):  # TimeoutError is an OSError
        context.is_disconnect = True


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # Take over transaction control from the driver so "begin" below decides how it starts.
    dbapi_connection.isolation_level = None
    cursor: Any = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    # A deferred transaction that reads and then writes fails outright (SQLITE_BUSY) when
    # another writer got in between; taking the write lock up front makes writers queue instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def create_statement_session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions whose every statement is its own transaction on Postgres: a claim, a read or a
    step's bookkeeping that is one statement then costs one round trip, not a BEGIN and a
    COMMIT around it. SQLite's writers queue on the BEGIN IMMEDIATE of a transaction, so there
    these are the ordinary sessions."""
    if engine.dialect.name != "postgresql":
        return create_session_factory(engine)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    return async_sessionmaker(autocommit, expire_on_commit=False, autoflush=False)
