"""The FastAPI application: routers, the one error mapping, health and readiness."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.deps import authenticate_request
from app.context import AppContext
from app.db.errors import database_unavailable
from app.errors import DomainError, describe_error
from app.evaluations.router import router as evaluations_router
from app.health import check_dependencies
from app.orgs.router import router as orgs_router
from app.partners.router import router as partners_router
from app.settings import Settings
from app.webhooks.router import router as webhooks_router

logger = logging.getLogger(__name__)

# What a client is told to wait before trying again while the database is unavailable.
DATABASE_RETRY_AFTER_SECONDS = 5


def create_app(settings: Settings, context: AppContext | None = None) -> FastAPI:
    """`context` lets an embedding process share its clients; otherwise the app owns them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = context is None
        app.state.context = context or AppContext.create(settings)
        try:
            yield
        finally:
            if owned:
                await app.state.context.aclose()

    app = FastAPI(
        title="senso org-evaluation control plane",
        version="0.1.0",
        description="Evaluate how organisations show up in AI assistants' answers.",
        lifespan=lifespan,
    )
    app.include_router(partners_router)
    app.include_router(orgs_router)
    app.include_router(evaluations_router)
    app.include_router(webhooks_router)
    _add_error_handlers(app)
    _add_health(app)
    return app


def _error(status_code: int, error: str, detail: Any) -> JSONResponse:
    return JSONResponse(status_code=status_code, content={"error": error, "detail": detail})


def _add_error_handlers(app: FastAPI) -> None:
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        response = _error(exc.status_code, exc.code, exc.detail)
        if headers:
            response.headers.update(headers)
        return response

    app.add_exception_handler(DomainError, domain_error)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            # FastAPI decodes the body before any dependency runs: authenticate here so an
            # anonymous caller learns nothing about the endpoint from a parse error.
            try:
                await authenticate_request(request)
            except DomainError as auth_error:
                return await domain_error(request, auth_error)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return _error(422, "validation_error", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        response = _error(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):
            logger.warning("database unavailable", extra={"error": describe_error(exc)})
            response = _error(
                503,
                "database_unavailable",
                "the database is not answering; try again shortly",
            )
            response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
            return response
        logger.exception("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "an unexpected error occurred")

    # Registered by class, so they are answered here rather than by the server's last resort.
    app.add_exception_handler(SQLAlchemyError, unexpected)
    app.add_exception_handler(OSError, unexpected)


def _add_health(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz(request: Request) -> JSONResponse:
        """Every dependency answers; 503 names the ones that did not."""
        checks = await check_dependencies(request.app.state.context)
        failed = sorted(name for name, outcome in checks.items() if outcome != "ok")
        if failed:
            return _error(503, "not_ready", {"failed": failed, "checks": checks})
        return JSONResponse({"status": "ready", "checks": checks})
