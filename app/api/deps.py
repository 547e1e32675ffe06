"""FastAPI dependencies. Services commit explicitly: code after `yield` runs after the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal, authenticate
from app.context import AppContext


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


async def get_session(context: Context) -> AsyncIterator[AsyncSession]:
    async with context.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


async def get_principal(
    context: Context,
    session: Session,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    principal = await authenticate(session, authorization, context.settings.api_token)
    # Authentication only read; release the connection's transaction before the real work.
    await session.rollback()
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
