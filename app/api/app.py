"""The FastAPI application: routers, the one error mapping (built by app.api.errors), health
and readiness."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.edge_wiring import edge_running, install_edge
from app.api.errors import database_unavailable_response, domain_error_response, error_response
from app.apikeys.router import router as api_keys_router
from app.auditlog.router import router as audit_router
from app.context import AppContext
from app.db.errors import database_unavailable
from app.engines.router import router as engines_router
from app.errors import DomainError, describe_error
from app.evaluations.router import router as evaluations_router
from app.health import check_dependencies
from app.heap import freeze_startup_heap
from app.orgs.router import router as orgs_router
from app.partners.router import router as partners_router
from app.reports.router import router as reports_router
from app.reports.service import signing_key
from app.settings import Settings
from app.webhooks.router import router as webhooks_router

logger = logging.getLogger(__name__)


def create_app(settings: Settings, context: AppContext | None = None) -> FastAPI:
    """`context` lets an embedding process share its clients; otherwise the app owns them."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = context is None
        app.state.context = context or AppContext.create(settings)
        try:
            async with edge_running(app, app.state.context):
                freeze_startup_heap()
                yield
        finally:
            if owned:
                await app.state.context.aclose()

    app = FastAPI(
        title="senso org-evaluation control plane",
        version="0.1.0",
        description="Evaluate how organisations show up in AI assistants' answers.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.include_router(partners_router)
    app.include_router(api_keys_router)
    app.include_router(audit_router)
    app.include_router(orgs_router)
    app.include_router(evaluations_router)
    app.include_router(engines_router)
    app.include_router(webhooks_router)
    app.include_router(reports_router)
    # Made once, so every link this process signs it also opens.
    app.state.report_key = signing_key(settings)
    _add_error_handlers(app)
    _add_health(app)
    install_edge(app, settings)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def domain_error(_request: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(exc)

    app.add_exception_handler(DomainError, domain_error)  # type: ignore[arg-type]

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # An anonymous caller never gets here: the edge answered 401 before the body was read.
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        return error_response(422, "validation_error", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, exc.detail, dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        if database_unavailable(exc):
            logger.warning("database unavailable", extra={"error": describe_error(exc)})
            return database_unavailable_response()
        logger.exception("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "an unexpected error occurred")

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
            return error_response(503, "not_ready", {"failed": failed, "checks": checks})
        return JSONResponse({"status": "ready", "checks": checks})
