"""The one domain error type; `app.api` maps it to HTTP in one place."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.exc import DBAPIError, StatementError

from app.scrub import scrub_secrets

# An error recorded on a batch, a step or a run says what went wrong in a line; the traceback,
# and never a statement or its parameters, goes to the log.
MAX_ERROR_LENGTH = 300


class DomainError(Exception):
    """An expected failure with the HTTP status and stable error code clients see."""

    status_code: int = 400
    code: str = "bad_request"

    def __init__(self, detail: Any, *, code: str | None = None, status_code: int | None = None):
        super().__init__(str(detail))
        self.detail = detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code

    @property
    def message(self) -> str:
        """The error in a line, for where only a line fits (an item of a bulk answer)."""
        if isinstance(self.detail, dict) and "message" in self.detail:
            return str(self.detail["message"])
        return str(self.detail)


class NotFoundError(DomainError):
    status_code = 404
    code = "not_found"


class ConflictError(DomainError):
    status_code = 409
    code = "conflict"


class InsufficientBalanceError(DomainError):
    status_code = 402
    code = "insufficient_balance"

    def __init__(self, *, runs: int, required: Decimal, available: Decimal) -> None:
        super().__init__(
            {
                "message": f"the partner's balance cannot cover {runs} run(s)",
                "required": str(required),
                "available": str(available),
            }
        )
        self.required = required
        self.available = available

    @property
    def message(self) -> str:
        return f"{super().message}: required {self.required}, available {self.available}"


class UnauthorizedError(DomainError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(DomainError):
    status_code = 403
    code = "forbidden"


class InvalidInputError(DomainError):
    status_code = 422
    code = "invalid_input"


def describe_error(exc: BaseException, *, limit: int = MAX_ERROR_LENGTH) -> str:
    """`Type: message` of the root cause, first line only, at most `limit` characters.

    SQLAlchemy's own message carries the SQL statement and its parameters (answer text among
    them): only the driver's error underneath is described.
    """
    cause: BaseException = exc
    if isinstance(exc, StatementError) and exc.orig is not None:
        cause = exc.orig
        # The asyncpg adapter wraps the driver's exception; its own text repeats the class.
        if isinstance(exc, DBAPIError) and cause.__cause__ is not None:
            cause = cause.__cause__
    lines = str(cause).strip().splitlines()
    text = f"{type(cause).__name__}: {scrub_secrets(lines[0])}" if lines else type(cause).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
