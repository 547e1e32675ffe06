"""Writes whose outcome the database decides: INSERT … ON CONFLICT DO NOTHING on both dialects,
how many rows a conditional UPDATE changed, and rows claimed one conditional UPDATE each."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import ColumnElement, CursorResult, Result, inspect, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import Base


def insert_ignoring_conflicts(
    session: AsyncSession, model: type[Base], conflict_columns: Sequence[str]
) -> Any:
    """An insert statement that skips rows which would violate the given unique key."""
    return ignoring_conflicts(session.get_bind().dialect.name, model, tuple(conflict_columns))


@functools.cache
def ignoring_conflicts(dialect: str, model: type[Base], conflict_columns: tuple[str, ...]) -> Any:
    """`insert_ignoring_conflicts` for a dialect named. Statements are immutable, so each is
    built once: the hot paths (a trigger's batch and runs, a run's results) spent more CPU
    building it than sending it."""
    columns = list(conflict_columns)
    if dialect == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing(index_elements=columns)
    return sqlite.insert(model).on_conflict_do_nothing(index_elements=columns)


def dialect_insert(dialect: str, model: type[Base]) -> Any:
    """An INSERT of the dialect named, for an ON CONFLICT DO UPDATE."""
    if dialect == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def rows_affected(result: Result[Any]) -> int:
    """How many rows an UPDATE/INSERT changed (session.execute types it as a plain Result)."""
    return cast(CursorResult[Any], result).rowcount


E = TypeVar("E", bound=Base)


async def claim_each(
    session: AsyncSession,
    entity: type[E],
    conditions: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
    *,
    limit: int,
    order_by: Sequence[Any] = (),
) -> list[E]:
    """Up to `limit` rows matching `conditions`, each claimed by an UPDATE to `values` under
    the same conditions: of concurrent claimers (reconcilers in every worker) exactly one gets
    a row. Leaves the transaction for the caller to commit."""
    mapper = inspect(entity)
    key = mapper.primary_key[0]
    attribute = mapper.get_property_by_column(key).key
    candidates = list(
        await session.scalars(select(entity).where(*conditions).order_by(*order_by).limit(limit))
    )
    claimed = []
    for row in candidates:
        moved = await session.execute(
            update(entity).where(key == getattr(row, attribute), *conditions).values(**values)
        )
        if rows_affected(moved):
            claimed.append(row)
    return claimed
