"""Offset pagination shared by every list endpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

if TYPE_CHECKING:
    # What `order_by` takes: columns, attributes, `.desc()`s.
    from sqlalchemy.sql._typing import _ColumnExpressionOrStrLabelArgument

T = TypeVar("T")

MAX_LIMIT = 500
# Deeper than this, a client should filter: an OFFSET costs the rows it skips.
MAX_OFFSET = 100_000


class PageParams(BaseModel):
    limit: int
    offset: int


async def page_params(  # async: no thread-pool hop (see app.api.deps)
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


async def paginate(
    session: AsyncSession,
    query: Select[Any],
    order: Sequence[_ColumnExpressionOrStrLabelArgument[Any]],
    page: PageParams,
    read: Callable[[Any], T],
) -> Page[T]:
    """One page of the entities `query` selects, in `order`, with the total they come to."""
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = await session.scalars(query.order_by(*order).limit(page.limit).offset(page.offset))
    return Page(
        items=[read(row) for row in rows], total=total, limit=page.limit, offset=page.offset
    )
