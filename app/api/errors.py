"""Errors as HTTP answers, built here for the routes' handlers (app.api.app) and for the edge
(app.api.edge), which answers before a route runs: one status and `{"error", "detail"}` body
for each, so the two can never disagree."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from app.errors import DomainError

# What a client is told to wait before trying again while the database is unavailable.
DATABASE_RETRY_AFTER_SECONDS = 5


def error_response(
    status: int, error: str, detail: Any, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def domain_error_response(exc: DomainError, headers: dict[str, str] | None = None) -> JSONResponse:
    challenge = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else {}
    return error_response(exc.status_code, exc.code, exc.detail, {**challenge, **(headers or {})})


def database_unavailable_response() -> JSONResponse:
    return error_response(
        503,
        "database_unavailable",
        "the database is not answering; try again shortly",
        {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )
