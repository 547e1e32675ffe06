"""FastAPI dependencies. Services commit explicitly: code after `yield` runs after the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
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


BEARER = HTTPBearer(
    auto_error=False, description="The operator's API_TOKEN or a partner API key (sk_…)"
)


async def get_principal(
    context: Context,
    session: Session,
    # Declares the scheme in OpenAPI (the Authorize button in /docs); the raw header below is
    # what is checked, so a wrong scheme gets the same precise 401 as a wrong token.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    principal = await authenticate(session, authorization, context.settings.api_token)
    # Authentication only read; release the connection's transaction before the real work.
    await session.rollback()
    return principal


async def authenticate_request(request: Request) -> Principal:
    """Authenticate outside the dependency system (error handlers)."""
    context = get_context(request)
    async with context.sessions() as session:
        return await authenticate(
            session, request.headers.get("authorization"), context.settings.api_token
        )


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
