"""Writes whose outcome the database decides: INSERT … ON CONFLICT DO NOTHING on both dialects,
and how many rows a conditional UPDATE changed."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Result
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Base


def insert_ignoring_conflicts(
    session: AsyncSession, model: type[Base], conflict_columns: list[str]
) -> Any:
    """An insert statement that skips rows which would violate the given unique key."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=conflict_columns)
    return sqlite.insert(model).on_conflict_do_nothing(index_elements=conflict_columns)


def rows_affected(result: Result[Any]) -> int:
    """How many rows an UPDATE/INSERT changed (session.execute types it as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount
