"""FastAPI dependencies. Services commit explicitly: code after `yield` runs after the response."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import MISSING_CREDENTIALS, Principal
from app.context import AppContext
from app.errors import UnauthorizedError


# Dependencies that do no I/O are still `async def`: FastAPI runs a plain `def` one in its
# thread pool, a hop to another thread and back on every request for an attribute read.
async def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


Context = Annotated[AppContext, Depends(get_context)]


async def get_session(context: Context) -> AsyncIterator[AsyncSession]:
    async with context.sessions() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


async def get_statement_session(context: Context) -> AsyncIterator[AsyncSession]:
    async with context.statements() as session:
        yield session


# For a read whose statements each stand alone: no BEGIN and ROLLBACK around them on Postgres,
# where Read Committed gives every statement its own snapshot inside a transaction too.
StatementSession = Annotated[AsyncSession, Depends(get_statement_session)]


BEARER = HTTPBearer(
    auto_error=False, description="The operator's API_TOKEN or a partner API key (sk_…)"
)


async def get_principal(
    request: Request,
    # Declares the scheme in OpenAPI (the Authorize button in /docs). The edge
    # (app.api.edge.GuardMiddleware) has authenticated the request and checked its key's
    # scope for the route before anything read the body.
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise UnauthorizedError(MISSING_CREDENTIALS)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
