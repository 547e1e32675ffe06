"""The database's clock: what every process compares leases, heartbeats and stalls against.

Workers' own clocks may be minutes apart; the database has one. `db_now(seconds)` is evaluated
by the database itself (`clock_timestamp()` on Postgres, `'now'` on SQLite), so a lease written
by one worker and checked by another means the same instant to both.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, String, cast, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from app.db.types import UTCDateTime


class db_now(FunctionElement[Any]):  # noqa: N801 - reads as the SQL function it stands for
    """The database's current UTC time plus `seconds` (may be negative)."""

    type = UTCDateTime()
    inherit_cache = True

    def __init__(self, seconds: float | ColumnElement[float] = 0.0) -> None:
        # A bound parameter, not inlined text: statements differing only in the offset share
        # one compiled form. A statement built once names its own parameter for it.
        if not isinstance(seconds, ColumnElement):
            seconds = literal(float(seconds), Float())
        super().__init__(seconds)


@compiles(db_now, "postgresql")
def _postgres(element: db_now, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    offset = compiler.process(cast(seconds, Float()), **kw)
    # clock_timestamp(), not now(): now() is frozen at the start of the transaction.
    return f"(clock_timestamp() + make_interval(secs => {offset}))"


@compiles(db_now, "sqlite")
def _sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    modifier = compiler.process(cast(seconds, String()).concat(" seconds"), **kw)
    # The text form SQLAlchemy stores SQLite datetimes in, so they compare as strings.
    return f"strftime('%Y-%m-%d %H:%M:%f000', 'now', {modifier})"
