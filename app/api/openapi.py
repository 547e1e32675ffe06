"""The OpenAPI document declares every error a route can answer, with the one error body.

Added to the generated document for every operation at once, from what the edge and the error
handlers do, so that routers only add what is particular to them (a 402, a 409) with a
description; every error response of the document has the `ErrorBody` schema."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: str = Field(description="A stable code, e.g. not_found, validation_error")
    detail: Any = Field(
        description="What went wrong: a message, an object of facts, or for validation_error "
        "a list of {loc, msg, type}"
    )


COMMON = {
    "400": "The request could not be read (Host, Content-Length, body encoding)",
    "429": "Too many requests: see Retry-After and the X-RateLimit-* headers",
    "431": "The request's headers are over the limit",
    "503": "A dependency (the database) is not answering; see Retry-After",
}
PROTECTED = {
    "401": "No valid credentials: missing, unknown, revoked or expired",
    "403": "The credentials may not do this (the operator's token, or a key's scope, is needed)",
}
WITH_INPUT = {"422": "The path, query or body is invalid: detail lists each problem"}
WITH_BODY = {"413": "The request body is over the limit"}
WITH_PATH = {"404": "Not found, or not visible to these credentials"}
_REF = {"$ref": "#/components/schemas/ErrorBody"}


def declare_error_responses(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        if "ErrorBody" not in document.get("components", {}).get("schemas", {}):
            _declare(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _declare(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            _declare_operation(operation)
    # FastAPI's own validation error shape is never what the API answers.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def _declare_operation(operation: dict[str, Any]) -> None:
    parameters = operation.get("parameters", [])
    errors = dict(COMMON)
    if operation.get("security"):
        errors |= PROTECTED
    if any(p.get("in") == "path" for p in parameters):
        errors |= WITH_PATH
    if parameters or "requestBody" in operation:
        errors |= WITH_INPUT
    if "requestBody" in operation:
        errors |= WITH_BODY
    responses = operation.setdefault("responses", {})
    for status, description in errors.items():
        responses.setdefault(status, {"description": description})
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:
            if status == "422":
                response["description"] = WITH_INPUT["422"]
            response["content"] = {"application/json": {"schema": _REF}}
